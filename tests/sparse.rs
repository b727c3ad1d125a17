//! Sparse fine-tuning with skill localization: the masked optimiser is AdamW on the mask
//! and nothing elsewhere; the mask is exactly the top-k of a full-tuning run's changes
//! (in Hugging Face element order, through llama's q/k permutation); retraining moves
//! only masked elements, resumes exactly on both sides of localization, and the delta
//! loads with --adapter, merges with export --merge and composes with graft.
mod common;

use candle_core::{Device, Tensor, Var};
use instill::train::optim::{AdamW, AdamWConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_instill");

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN).current_dir(dir).env("INSTILL_PROGRESS_SECS", "0.01").args(["--threads", "2"]).args(args).output().unwrap()
}

fn ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn masked_adamw_is_adamw_on_the_mask_and_nothing_elsewhere() {
    let n = 50;
    let w0: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    let cfg = AdamWConfig { weight_decay: 0.1, ..Default::default() };
    let dense = Var::from_tensor(&Tensor::from_slice(&w0, (5, 10), &Device::Cpu).unwrap()).unwrap();
    let masked = Var::from_tensor(&Tensor::from_slice(&w0, (5, 10), &Device::Cpu).unwrap()).unwrap();
    let (mut a, mut b) = (AdamW::new(vec![dense.clone()], cfg), AdamW::new(vec![masked.clone()], cfg));
    let mask = vec![0u32, 7, 8, 23, 49];
    b.set_masks(vec![mask.clone()]);
    for step in 0..4 {
        let g: Vec<f32> = (0..n).map(|i| ((i * 7 + step * 3) as f32 * 0.11).cos()).collect();
        let g = Tensor::from_slice(&g, (5, 10), &Device::Cpu).unwrap();
        a.step(std::slice::from_ref(&g), 1e-2).unwrap();
        b.step(std::slice::from_ref(&g), 1e-2).unwrap();
    }
    let (wa, wb) = (dense.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(), masked.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap());
    for i in 0..n {
        if mask.contains(&(i as u32)) {
            assert_eq!(wa[i], wb[i], "element {i}: masked AdamW must do dense AdamW's arithmetic");
            assert_ne!(wb[i], w0[i]);
        } else {
            assert_eq!(wb[i], w0[i], "element {i} is outside the mask: no update, no decay");
        }
    }
    assert_eq!(b.state[0].m.len(), mask.len(), "moments are held for the mask only");
}

/// Every tensor of a Hugging Face directory's safetensors, by name.
fn hf_tensors(dir: &Path) -> HashMap<String, Vec<f32>> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "safetensors")) {
        for (k, t) in candle_core::safetensors::load(e.path(), &Device::Cpu).unwrap() {
            out.insert(k, t.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
    }
    out
}

/// A sparse delta's tensors: name -> (indices, delta, values).
fn delta_of(dir: &Path) -> HashMap<String, (Vec<u32>, Vec<f32>, Vec<f32>)> {
    let t = candle_core::safetensors::load(dir.join("sparse_delta.safetensors"), &Device::Cpu).unwrap();
    let mut out = HashMap::new();
    for k in t.keys().filter_map(|k| k.strip_suffix(".indices")) {
        let get = |s: &str| t[&format!("{k}.{s}")].to_vec1::<f32>().unwrap();
        out.insert(k.to_string(), (t[&format!("{k}.indices")].to_vec1::<u32>().unwrap(), get("delta"), get("values")));
    }
    out
}

fn setup(name: &str) -> PathBuf {
    common::source("tiny-random-llama");
    let dir = common::tmpdir(name);
    let mut data = String::new();
    for i in 0..24 {
        let m = serde_json::json!({"messages": [{"role": "user", "content": format!("Count to {i}, please.")}, {"role": "assistant", "content": format!("{} and done with {i}", (0..i % 7).map(|k| k.to_string()).collect::<Vec<_>>().join(" "))}]});
        data.push_str(&format!("{m}\n"));
    }
    std::fs::write(dir.join("train.jsonl"), data).unwrap();
    std::fs::write(
        dir.join("recipe.yaml"),
        "name: sparse\nmodel: tiny-random-llama\ndata: [{path: train.jsonl}]\nval_fraction: 0\nmax_len: 64\ntemplate: chatml\nmethod: sparse\n\
         sparse: {density: 0.01, localize_steps: 3}\nlr: 1.0e-2\nweight_decay: 0.0\nmax_steps: 3\nbatch_size: 2\nsave_every: 1\nkeep_checkpoints: 10\nseed: 3\n",
    )
    .unwrap();
    ok(run(&dir, &["export", "-m", "tiny-random-llama", "--out", "base"]));
    dir
}

fn train(dir: &Path, out: &str, sets: &[&str]) -> String {
    let o = format!("output_dir={out}");
    let mut args = vec!["train", "recipe.yaml", "--set", &o];
    sets.iter().for_each(|s| args.extend(["--set", s]));
    ok(run(dir, &args))
}

#[test]
fn the_mask_is_the_top_k_of_full_tunings_changes_in_hf_order() {
    let dir = setup("sparse-topk");
    train(&dir, "full", &["method=full"]);
    let log = train(&dir, "graft", &[]);
    assert!(log.contains("grafting these onto the base"), "{log}");
    let (base, tuned) = (hf_tensors(&dir.join("base")), hf_tensors(&dir.join("full/model")));
    // The global top-k of |tuned - base| over every trained weight, by name and HF index.
    let mut changes: Vec<(f32, String, u32)> = vec![];
    for (name, b) in &base {
        let t = &tuned[name];
        changes.extend(b.iter().zip(t).enumerate().map(|(i, (b, t))| ((t - b).abs(), name.clone(), i as u32)));
    }
    changes.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total = changes.len();
    let k = (0.01 * total as f64).ceil() as usize;
    assert!(changes[k].0 < changes[k - 1].0, "no tie at the cut, so the top-k is unique");
    let delta = delta_of(&dir.join("graft/adapter"));
    let mut got: Vec<(String, u32)> = delta.iter().flat_map(|(n, (idx, _, _))| idx.iter().map(move |&i| (n.clone(), i))).collect();
    let mut want: Vec<(String, u32)> = changes[..k].iter().map(|c| (c.1.clone(), c.2)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "the mask is the top {k} of {total} changes");
    assert!(delta.keys().any(|n| n.contains("q_proj")), "q_proj is in the mask, so its row permutation is exercised: {:?}", delta.keys());
    for (name, (idx, d, v)) in &delta {
        for ((&i, d), v) in idx.iter().zip(d).zip(v) {
            let (b, t) = (base[name][i as usize], tuned[name][i as usize]);
            assert_eq!(*v, t, "{name}[{i}]: the grafted value is the fine-tuned one");
            assert!((d - (t - b)).abs() <= 1e-6 * t.abs().max(1.0), "{name}[{i}]: delta {d} vs {}", t - b);
        }
    }
    let loc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("graft/localization.json")).unwrap()).unwrap();
    assert_eq!((loc["nnz"].as_u64(), loc["total"].as_u64(), loc["retrain"].as_bool()), (Some(k as u64), Some(total as u64), Some(false)));
    // export --merge of the delta is the base with exactly those elements replaced.
    ok(run(&dir, &["export", "-m", "tiny-random-llama", "--adapter", "graft/adapter", "--merge", "--out", "merged"]));
    let merged = hf_tensors(&dir.join("merged"));
    for (name, b) in &base {
        let (m, touched): (&Vec<f32>, Vec<u32>) = (&merged[name], delta.get(name).map_or(vec![], |d| d.0.clone()));
        for i in 0..b.len() {
            let want = if touched.binary_search(&(i as u32)).is_ok() { tuned[name][i] } else { b[i] };
            assert!((m[i] - want).abs() <= 1e-6 * want.abs().max(1.0), "{name}[{i}]: merged {} want {want}", m[i]);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap()).collect()
}

#[test]
fn retraining_moves_only_the_mask_and_resumes_exactly_on_both_sides_of_localization() {
    let dir = setup("sparse-retrain");
    let sets = ["max_steps=6", "sparse.localize_steps=3"];
    let log = train(&dir, "a", &sets);
    assert!(log.contains("retraining only these from the base"), "{log}");
    let reference = losses(&dir.join("a"));
    assert_eq!(reference.len(), 6);
    let delta = delta_of(&dir.join("a/adapter"));
    let base = hf_tensors(&dir.join("base"));
    // Retrained from the base: every value is base + delta, and the phase-2 changes are
    // on the mask only (the merged model equals the base elsewhere).
    ok(run(&dir, &["export", "-m", "tiny-random-llama", "--adapter", "a/adapter", "--merge", "--out", "merged"]));
    let merged = hf_tensors(&dir.join("merged"));
    let mut moved = 0;
    for (name, b) in &base {
        let d = delta.get(name);
        for i in 0..b.len() {
            let at = d.and_then(|(idx, _, v)| idx.binary_search(&(i as u32)).ok().map(|j| v[j]));
            let want = at.unwrap_or(b[i]);
            moved += usize::from(at.is_some_and(|v| v != b[i]));
            assert!((merged[name][i] - want).abs() <= 1e-6 * want.abs().max(1.0), "{name}[{i}]");
        }
    }
    assert!(moved > 0, "retraining changed masked elements");
    // Resume from a full-tuning checkpoint (step 2) and from a masked one (step 5).
    for from in [2usize, 5] {
        let copy = dir.join(format!("resume-{from}"));
        std::fs::create_dir_all(copy.join("checkpoints")).unwrap();
        for step in 1..=from {
            let name = format!("step-{step:06}");
            copy_dir(&dir.join("a/checkpoints").join(&name), &copy.join("checkpoints").join(&name));
        }
        std::fs::copy(dir.join("a/recipe.yaml"), copy.join("recipe.yaml")).unwrap();
        let text = std::fs::read_to_string(dir.join("a/metrics.jsonl")).unwrap();
        std::fs::write(copy.join("metrics.jsonl"), text.lines().take(from).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        ok(run(&dir, &["train", "--resume", copy.to_str().unwrap()]));
        assert_eq!(losses(&copy), reference, "resumed from step {from}");
        assert_eq!(delta_of(&copy.join("adapter")), delta, "resumed from step {from}: the same delta, bit for bit");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn skills_compose_with_their_conflicts_reported() {
    let dir = setup("sparse-graft");
    train(&dir, "a", &[]);
    train(&dir, "b", &["seed=11", "lr=2.0e-2"]);
    let (da, db) = (delta_of(&dir.join("a/adapter")), delta_of(&dir.join("b/adapter")));
    let (mut overlap, mut opposite) = (0, 0);
    for (name, (ia, xa, _)) in &da {
        let Some((ib, xb, _)) = db.get(name) else { continue };
        for (i, x) in ia.iter().zip(xa) {
            if let Ok(j) = ib.binary_search(i) {
                overlap += 1;
                opposite += usize::from((*x > 0.0) != (xb[j] > 0.0) && *x != 0.0 && xb[j] != 0.0);
            }
        }
    }
    assert!(overlap > 0, "the two skills share elements, so there is something to report");
    ok(run(&dir, &["graft", "-m", "tiny-random-llama", "--skill", "a", "--skill", "b/adapter", "--out", "g"]));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("g/graft.json")).unwrap()).unwrap();
    assert_eq!((report["overlap"].as_u64(), report["opposite"].as_u64()), (Some(overlap as u64), Some(opposite as u64)), "{report}");
    let (base, g) = (hf_tensors(&dir.join("base")), hf_tensors(&dir.join("g")));
    for (name, b) in &base {
        let mut want = b.clone();
        for d in [&da, &db] {
            if let Some((idx, x, _)) = d.get(name) {
                idx.iter().zip(x).for_each(|(&i, x)| want[i as usize] += x);
            }
        }
        for i in 0..b.len() {
            assert!((g[name][i] - want[i]).abs() <= 1e-5 * want[i].abs().max(1.0), "{name}[{i}]: grafted {} want {}", g[name][i], want[i]);
        }
    }
    let o = run(&dir, &["graft", "-m", "tiny-random-llama", "--skill", "a", "--skill", "b", "--overlap", "error", "--out", "g2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(&format!("{overlap} elements")), "{err}");
    // The composed delta is itself an adapter.
    ok(run(&dir, &["graft", "-m", "tiny-random-llama", "--skill", "a", "--skill", "b", "--delta", "--out", "ab"]));
    ok(run(&dir, &["generate", "-m", "tiny-random-llama", "--adapter", "ab", "--max-new-tokens", "3", "--prompt", "hello"]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_deltas_and_recipes_are_refused() {
    let dir = setup("sparse-bad");
    train(&dir, "a", &[]);
    let path = dir.join("a/adapter/sparse_delta.safetensors");
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let write = |name: &str, edit: &dyn Fn(&mut HashMap<String, Tensor>)| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(dir.join("a/adapter/adapter_config.json"), d.join("adapter_config.json")).unwrap();
        let mut t = tensors.clone();
        edit(&mut t);
        candle_core::safetensors::save(&t, d.join("sparse_delta.safetensors")).unwrap();
    };
    let first = tensors.iter().find(|(k, t)| k.ends_with(".indices") && t.elem_count() > 1).map(|(k, _)| k.trim_end_matches(".indices").to_string()).unwrap();
    let key = format!("{first}.indices");
    write("past-end", &|t| {
        let mut i = t[&key].to_vec1::<u32>().unwrap();
        *i.last_mut().unwrap() = u32::MAX - 1;
        t.insert(key.clone(), Tensor::from_vec(i.clone(), i.len(), &Device::Cpu).unwrap());
    });
    write("unsorted", &|t| {
        let mut i = t[&key].to_vec1::<u32>().unwrap();
        i.swap(0, 1);
        t.insert(key.clone(), Tensor::from_vec(i.clone(), i.len(), &Device::Cpu).unwrap());
    });
    write("unknown", &|t| {
        for s in ["indices", "delta", "values"] {
            let v = t.remove(&format!("{first}.{s}")).unwrap();
            t.insert(format!("model.layers.99.mlp.up_proj.weight.{s}"), v);
        }
    });
    for (name, want) in [("past-end", "past the end"), ("unsorted", "not strictly increasing"), ("unknown", "no such weight")] {
        let o = run(&dir, &["generate", "-m", "tiny-random-llama", "--adapter", name, "--max-new-tokens", "2", "--prompt", "hi"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want) && err.contains("sparse_delta.safetensors"), "{name}: {err}");
    }
    for (set, want) in [("sparse.density=0", "sparse.density"), ("sparse.localize_steps=9", "past the run's max_steps"), ("sparse.nope=1", "nope")] {
        let o = run(&dir, &["train", "recipe.yaml", "--set", "output_dir=bad", "--set", set]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{set}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sparse_recipe_trains_smollm2_and_the_skill_serves_as_an_adapter() {
    common::source("smollm2-135m-instruct");
    let dir = common::tmpdir("sparse-smollm2");
    let recipe = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("recipes/sparse-smollm2.yaml");
    let out = dir.join("run");
    let o = format!("output_dir={}", out.display());
    let sets = [o.as_str(), "max_steps=3", "sparse.localize_steps=2", "batch_size=2", "max_len=96", "val_fraction=0", "save_every=0"];
    let mut args = vec!["train", recipe.to_str().unwrap()];
    sets.iter().for_each(|s| args.extend(["--set", s]));
    let log = ok(run(&dir, &args));
    assert!(log.contains("sparse: mask of"), "{log}");
    let loss = losses(&out);
    assert!(loss.iter().all(|l| l.is_finite()) && loss.len() == 3, "{loss:?}");
    let adapter = out.join("adapter");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap()).unwrap();
    let size = std::fs::metadata(adapter.join("sparse_delta.safetensors")).unwrap().len();
    assert_eq!(cfg["peft_type"], "SPARSE");
    assert!(size < 20_000_000, "a sparse delta of {} elements is {size} bytes", cfg["nnz"]);
    ok(run(&dir, &["generate", "-m", "smollm2-135m-instruct", "--adapter", adapter.to_str().unwrap(), "--max-new-tokens", "4", "--chat", "Name a colour."]));
    let _ = std::fs::remove_dir_all(&dir);
}
