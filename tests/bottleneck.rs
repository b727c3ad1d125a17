//! Bottleneck adapters: a fresh adapter leaves the model unchanged; each placement
//! computes LLM-Adapters' formula from the saved (Hugging Face order) tensors, through
//! llama's q/k row permutation; gradients match finite differences, with and without
//! gradient checkpointing; save and reload give the same logits; the recipe trains on
//! SmolLM2 and serves with --adapter; merging and bad configs are refused.
mod common;

use candle_core::{Device, Tensor, Var};
use instill::data::pack::{rows_from, Rows};
use instill::model::{Batch, LogitsFor};
use instill::peft::bottleneck::{Bottleneck, BottleneckConfig, NonLinearity, Placement};
use instill::peft::Adapter;
use instill::train::step::loss_and_grads;
use rand::{Rng, SeedableRng};

fn config(placement: Placement, targets: &[&str]) -> BottleneckConfig {
    BottleneckConfig { bottleneck: 3, placement, target_modules: targets.iter().map(|s| s.to_string()).collect(), scale: 2.0, non_linearity: NonLinearity::Tanh, dropout: 0.0 }
}

/// `up` filled with random values (fresh, it is 0 and `down` gets no gradient).
fn randomize(b: &Bottleneck, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for (_, l) in &b.layers {
        let v: Vec<f32> = (0..l.up.elem_count()).map(|_| rng.gen_range(-0.5..0.5)).collect();
        l.up.set(&Tensor::from_vec(v, l.up.shape(), l.up.device()).unwrap()).unwrap();
    }
}

fn batch(vocab: u32) -> Rows {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let seqs: Vec<(Vec<u32>, Vec<bool>)> = (0..2).map(|_| ((0..18).map(|_| rng.gen_range(0..vocab)).collect(), (0..18).map(|i| i > 3).collect())).collect();
    rows_from(vec![vec![0], vec![1]], 0, |i| (&seqs[i].0, &seqs[i].1))
}

fn logits(m: &instill::CausalLm) -> Tensor {
    let ids: Vec<u32> = (10..40).collect();
    m.forward(&Batch::single(&ids, 0), None, LogitsFor::All).unwrap()
}

#[test]
fn a_fresh_adapter_changes_nothing_and_each_placement_is_llm_adapters_formula() {
    for placement in [Placement::Parallel, Placement::Sequential, Placement::Input] {
        let dir = common::tmpdir(&format!("bottleneck-formula-{placement:?}"));
        let (mut model, _) = common::load("tiny-random-llama", false);
        let base = logits(&model);
        let b = Bottleneck::attach(&mut model, &config(placement, &["q_proj", "down_proj"]), 1).unwrap();
        assert_eq!(common::max_abs_diff(&base, &logits(&model)), 0.0, "{placement:?}: up = 0 starts as the base");
        randomize(&b, 2);
        b.save(&model, &dir).unwrap();
        let saved = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
        let f = |x: &Tensor, module: &str| -> Tensor {
            let d = &saved[&format!("base_model.model.{module}.adapter_down.weight")];
            let u = &saved[&format!("base_model.model.{module}.adapter_up.weight")];
            (x.matmul(&d.t().unwrap()).unwrap().tanh().unwrap().matmul(&u.t().unwrap()).unwrap() * 2.0).unwrap()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let (arch, mc) = (model.arch, model.config.clone());
        for p in model.projections_mut().into_iter().filter(|p| p.module.ends_with("q_proj") || p.module.ends_with("down_proj")) {
            let (out_f, in_f) = p.linear.shape().unwrap();
            let x = Tensor::from_vec((0..4 * in_f).map(|_| rng.gen_range(-1.0f32..1.0)).collect::<Vec<_>>(), (4, in_f), &Device::Cpu).unwrap();
            // Everything in Hugging Face feature order: W's rows, the output's columns.
            let to_hf = |t: Tensor| arch.convert(&p.gguf, t, &mc, true).unwrap();
            let w = to_hf(p.linear.dense_weight().unwrap());
            let got = to_hf(p.linear.forward(&x).unwrap().t().unwrap().contiguous().unwrap()).t().unwrap();
            let lin = |x: &Tensor| x.matmul(&w.t().unwrap()).unwrap();
            let want = match placement {
                Placement::Parallel => (lin(&x) + f(&x, &p.module)).unwrap(),
                Placement::Sequential => {
                    let h = lin(&x);
                    (&h + f(&h, &p.module)).unwrap()
                }
                Placement::Input => lin(&(&x + f(&x, &p.module)).unwrap()),
            };
            assert_eq!(want.dims(), [4, out_f]);
            assert!(common::max_abs_diff(&got, &want) < 1e-4, "{placement:?} {}: {}", p.module, common::max_abs_diff(&got, &want));
        }
        // Reloaded from disk: the same logits.
        let before = logits(&model);
        let (mut fresh, _) = common::load("tiny-random-llama", false);
        instill::peft::load_adapter(&mut fresh, &dir).unwrap();
        assert!(common::max_abs_diff(&before, &base) > 1e-3, "{placement:?}: the randomized adapter changed nothing");
        assert!(common::max_abs_diff(&before, &logits(&fresh)) < 1e-5, "{placement:?}: reloaded logits differ");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn gradients_match_finite_differences_with_and_without_checkpointing() {
    for placement in [Placement::Parallel, Placement::Sequential, Placement::Input] {
        let (mut model, _) = common::load("tiny-random-llama", false);
        let b = Bottleneck::attach(&mut model, &config(placement, &["v_proj", "o_proj", "up_proj"]), 4).unwrap();
        randomize(&b, 5);
        b.set_training(true);
        let rows = batch(model.config.vocab_size as u32);
        let (names, vars): (Vec<String>, Vec<Var>) = b.trainable().into_iter().unzip();
        let out = loss_and_grads(&model, std::slice::from_ref(&rows), &vars).unwrap();
        model.checkpointing = true;
        let ck = loss_and_grads(&model, std::slice::from_ref(&rows), &vars).unwrap();
        model.checkpointing = false;
        for ((n, a), c) in names.iter().zip(&out.grads).zip(&ck.grads) {
            assert!(common::max_abs_diff(a, c) < 1e-5, "{placement:?} {n}: checkpointed gradient differs");
        }
        for (k, v) in vars.iter().enumerate().step_by(3) {
            let w = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let g = out.grads[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let i = (0..g.len()).max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs())).unwrap();
            let loss_at = |x: f32| {
                let mut w2 = w.clone();
                w2[i] = x;
                v.set(&Tensor::from_vec(w2, v.shape(), v.device()).unwrap()).unwrap();
                let (s, n) = instill::train::loss::loss_sum(&model, &rows).unwrap();
                s.to_scalar::<f32>().unwrap() as f64 / n as f64
            };
            let eps = 1e-2f32;
            let num = (loss_at(w[i] + eps) - loss_at(w[i] - eps)) / (2.0 * eps as f64);
            loss_at(w[i]);
            assert!(g[i].abs() > 1e-5, "{placement:?} {}: no gradient", names[k]);
            assert!((num - g[i] as f64).abs() < 3e-2 * g[i].abs() as f64 + 1e-4, "{placement:?} {}[{i}]: numeric {num}, backward {}", names[k], g[i]);
        }
    }
}

#[test]
fn the_recipe_trains_smollm2_and_the_adapter_serves_but_does_not_merge() {
    common::source("smollm2-135m-instruct");
    let dir = common::tmpdir("bottleneck-train");
    let out = dir.join("run");
    let o = format!("output_dir={}", out.display());
    common::train_recipe(&dir, "adapter-parallel.yaml", &[o.as_str(), "max_steps=3", "batch_size=2", "max_len=96", "val_fraction=0", "save_every=2"]);
    let adapter = out.join("adapter");
    let t = candle_core::safetensors::load(adapter.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    let k = "base_model.model.model.layers.7.mlp.down_proj";
    assert_eq!(t[&format!("{k}.adapter_down.weight")].dims(), [64, 1536]);
    assert_eq!(t[&format!("{k}.adapter_up.weight")].dims(), [576, 64]);
    assert!(t[&format!("{k}.adapter_up.weight")].abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "up trained");
    let a = adapter.to_str().unwrap();
    let o = common::cli(&dir, &["generate", "-m", "smollm2-135m-instruct", "--adapter", a, "--max-new-tokens", "4", "--chat", "Name a colour."]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = common::cli(&dir, &["export", "-m", "smollm2-135m-instruct", "--adapter", a, "--merge", "--out", "merged"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("bottleneck adapter cannot be merged"), "{err}");
    // Resuming the finished run's last checkpoint reproduces its final adapter.
    common::assert_resume_reproduces(&dir, &out, &t);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_configs_are_refused() {
    let dir = common::tmpdir("bottleneck-bad");
    let (mut model, _) = common::load("tiny-random-llama", false);
    let b = Bottleneck::attach(&mut model, &config(Placement::Parallel, &["v_proj"]), 1).unwrap();
    b.save(&model, &dir).unwrap();
    let cfg_path = dir.join("adapter_config.json");
    let good: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let edits: Vec<(&str, serde_json::Value, &str)> = vec![
        ("placement", serde_json::Value::Null, "series adapter with a type per module"),
        ("non_linearity", "swish".into(), "non_linearity"),
        ("scaling", "learned".into(), "a learned scale is not supported"),
        ("bottleneck_size", 5.into(), "adapter_down [3, 16] / adapter_up"),
    ];
    for (key, value, want) in edits {
        let mut v = good.clone();
        v[key] = value;
        if key == "placement" {
            v["use_parallel_adapter"] = false.into();
        }
        std::fs::write(&cfg_path, v.to_string()).unwrap();
        let (mut m, _) = common::load("tiny-random-llama", false);
        let err = instill::peft::load_adapter(&mut m, &dir).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(want) && err.contains(dir.to_str().unwrap()), "{key}: {err}");
    }
    let e = Bottleneck::attach(&mut model, &BottleneckConfig { bottleneck: 0, ..Default::default() }, 0).err().unwrap().to_string();
    assert!(e.contains("adapter.bottleneck"), "{e}");
    let e = Bottleneck::attach(&mut model, &config(Placement::Parallel, &["nope_proj"]), 0).err().unwrap().to_string();
    assert!(e.contains("match no projection"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
