//! LoRAMoE: gradients of the objective plus the localized balancing constraint match
//! finite differences (experts, B, router; dense and top-k); the router gets its gradient
//! from the constraint alone while B is 0; an adapter saves in the reference's layout and
//! reloads to the same logits; the recipe trains on SmolLM2 with router statistics in the
//! metrics; bad input and impossible exports are refused with clear errors.
mod common;

use candle_core::{Tensor, Var};
use instill::data::pack::{rows_from, Rows};
use instill::model::{Batch, LogitsFor};
use instill::peft::loramoe::{Loramoe, LoramoeConfig};
use instill::peft::Adapter;
use instill::train::data::Set;
use instill::train::objective::{sft::Sft, Ctx, Layout};
use instill::train::step::objective_step;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Two rows: a world-knowledge sample alone, then a task sample packed with a world one
/// and right padding, so per-sample sums, packing and padding all enter the constraint.
fn batch(vocab: u32) -> (Rows, Set) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let lens = [20usize, 9, 7];
    let seqs: Vec<(Vec<u32>, Vec<bool>)> = lens.iter().map(|&t| ((0..t).map(|_| rng.gen_range(0..vocab)).collect(), (0..t).map(|i| i > 2).collect())).collect();
    let rows = rows_from(vec![vec![0], vec![1, 2]], 0, |i| (&seqs[i].0, &seqs[i].1));
    let set = Set { unit_of: vec![0, 1, 2], world: vec![Some(true), Some(false), Some(true)], ..Default::default() };
    (rows, set)
}

fn config(top_k: Option<usize>) -> LoramoeConfig {
    LoramoeConfig { experts: 4, r: 2, alpha: 4.0, dropout: 0.0, top_k, balance_weight: 2.0, balance_alpha: 0.2, ..Default::default() }
}

/// B filled with random values (a fresh adapter's B is 0, where the experts' gradients vanish).
fn randomize_b(moe: &Loramoe, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for (_, l) in &moe.layers {
        let n = l.b.elem_count();
        let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-0.3..0.3)).collect();
        l.b.set(&Tensor::from_vec(v, l.b.shape(), l.b.device()).unwrap()).unwrap();
    }
}

/// The step's loss (objective + constraint) and gradients.
fn loss_grads(model: &instill::CausalLm, moe: &Loramoe, rows: &Rows, set: &Set, vars: &[Var]) -> (f64, Vec<Tensor>) {
    let ctx = Ctx { model, set, reference: None, head: None, layout: Layout { pad: 0, max_len: 64, packing: true }, adapter: Some(moe) };
    moe.set_training(true);
    let g = objective_step(&Sft, &ctx, std::slice::from_ref(rows), vars).unwrap();
    let balance = g.stats.means().get("loramoe/balance_loss").copied().unwrap_or(0.0);
    (g.loss + balance, g.grads)
}

/// Central differences on a large-gradient element of each selected tensor. Top-k routing
/// is only piecewise smooth (a token's chosen experts change at ties), so an element whose
/// difference quotients at `eps` and `eps / 4` disagree (a switch inside the interval) is
/// passed over for the next largest.
fn check_fd(model: &instill::CausalLm, moe: &Loramoe, rows: &Rows, set: &Set, names: &[String], vars: &[Var], which: impl Fn(&str) -> bool) -> usize {
    let (_, grads) = loss_grads(model, moe, rows, set, vars);
    let mut checked = 0;
    for (k, v) in vars.iter().enumerate().filter(|(k, _)| which(&names[*k])) {
        let w = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let g = grads[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        let at = |i: usize, x: f32| {
            let mut w2 = w.clone();
            w2[i] = x;
            v.set(&Tensor::from_vec(w2, v.shape(), v.device()).unwrap()).unwrap();
            loss_grads(model, moe, rows, set, vars).0
        };
        let quotient = |i: usize, eps: f32| (at(i, w[i] + eps) - at(i, w[i] - eps)) / (2.0 * eps as f64);
        let smooth = order.iter().take(5).map(|&i| (i, quotient(i, 1e-2), quotient(i, 2.5e-3))).find(|(_, a, b)| (a - b).abs() <= 0.1 * a.abs().max(1e-3));
        v.set(&Tensor::from_vec(w.clone(), v.shape(), v.device()).unwrap()).unwrap();
        let (i, fd, _) = smooth.unwrap_or_else(|| panic!("{}: no smooth element among the 5 largest gradients", names[k]));
        let an = g[i] as f64;
        assert!(an.abs() > 1e-4, "{}: gradient {an} too small to check", names[k]);
        assert!((fd - an).abs() <= 0.03 * an.abs() + 2e-4, "{}[{i}]: analytic {an}, finite difference {fd}", names[k]);
        checked += 1;
    }
    checked
}

fn setup(top_k: Option<usize>) -> (instill::CausalLm, Loramoe, Rows, Set, Vec<String>, Vec<Var>) {
    let (mut model, _) = common::load("tiny-random-llama", false);
    let moe = Loramoe::attach(&mut model, &config(top_k), 7).unwrap();
    let (rows, set) = batch(model.config.vocab_size as u32);
    let (names, vars): (Vec<String>, Vec<Var>) = moe.trainable().into_iter().unzip();
    (model, moe, rows, set, names, vars)
}

#[test]
fn gradients_match_finite_differences() {
    for top_k in [None, Some(2)] {
        let (model, moe, rows, set, names, vars) = setup(top_k);
        randomize_b(&moe, 11);
        eprintln!("top_k {top_k:?}");
        let n = check_fd(&model, &moe, &rows, &set, &names, &vars, |_| true);
        assert_eq!(n, vars.len(), "top_k {top_k:?}");
    }
}

/// With B = 0 the experts add nothing, so the objective gives the router no gradient: all
/// of it comes from the balancing constraint (and vanishes with balance_weight 0).
#[test]
fn the_router_learns_from_the_constraint_alone_at_the_start() {
    let (model, moe, rows, set, names, vars) = setup(None);
    let n = check_fd(&model, &moe, &rows, &set, &names, &vars, |n| n.ends_with("lora_route.weight"));
    assert!(n > 0);
    let (mut model, _) = common::load("tiny-random-llama", false);
    let plain = Loramoe::attach(&mut model, &LoramoeConfig { balance_weight: 0.0, ..config(None) }, 7).unwrap();
    let (names, vars): (Vec<String>, Vec<Var>) = plain.trainable().into_iter().unzip();
    let (_, grads) = loss_grads(&model, &plain, &rows, &set, &vars);
    for (n, g) in names.iter().zip(&grads).filter(|(n, _)| n.ends_with("lora_route.weight")) {
        assert_eq!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0, "{n}");
    }
}

#[test]
fn saves_in_the_reference_layout_and_reloads() {
    let dir = common::tmpdir("loramoe-save");
    let (mut model, _) = common::load("smollm2-135m-instruct", false);
    let moe = Loramoe::attach(&mut model, &LoramoeConfig { top_k: Some(2), ..Default::default() }, 3).unwrap();
    randomize_b(&moe, 4);
    moe.save(&model, &dir).unwrap();
    let ids: Vec<u32> = (100..140).collect();
    let logits = |m: &instill::CausalLm| m.forward(&Batch::single(&ids, 0), None, LogitsFor::All).unwrap();
    let before = logits(&model);
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((cfg["peft_type"].as_str(), cfg["lora_nums"].as_u64(), cfg["top_k"].as_u64()), (Some("LORAMOE"), Some(6), Some(2)));
    let t = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let k = "base_model.model.model.layers.3.mlp.down_proj";
    assert_eq!(t[&format!("{k}.lora_A5.weight")].dims(), [4, 1536]);
    assert_eq!(t[&format!("{k}.lora_B0.weight")].dims(), [576, 4]);
    assert_eq!(t[&format!("{k}.lora_route.weight")].dims(), [6, 1536]);
    assert_eq!(t.len(), 30 * 3 * 13);
    let (mut fresh, _) = common::load("smollm2-135m-instruct", false);
    let base = logits(&fresh);
    instill::peft::load_adapter(&mut fresh, &dir).unwrap();
    let after = logits(&fresh);
    assert!(common::max_abs_diff(&before, &base) > 1e-2, "the adapter changed nothing");
    assert!(common::max_abs_diff(&before, &after) < 1e-5, "reloaded logits differ");
    let _ = std::fs::remove_dir_all(&dir);
}

const BIN: &str = env!("CARGO_BIN_EXE_instill");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN).current_dir(dir).env("INSTILL_PROGRESS_SECS", "0.01").args(["--threads", "2"]).args(args).output().unwrap()
}

fn write_jsonl(path: &Path, rows: &[serde_json::Value]) {
    std::fs::write(path, rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
}

/// Records with their own `task_type`, world knowledge and task mixed in one file.
fn typed_data(dir: &Path) -> PathBuf {
    let mut rows = vec![];
    for i in 0..12 {
        rows.push(serde_json::json!({"instruction": format!("Question: what is the capital of country number {i}?"), "output": format!("City {i}."), "task_type": 1}));
        rows.push(serde_json::json!({"instruction": format!("Rewrite politely: give me item {i}"), "output": format!("Could you please give me item {i}?"), "task_type": "task"}));
    }
    let p = dir.join("typed.jsonl");
    write_jsonl(&p, &rows);
    p
}

#[test]
fn recipe_trains_on_smollm2_with_router_statistics() {
    common::source("smollm2-135m-instruct");
    let dir = common::tmpdir("loramoe-train");
    let data = typed_data(&dir);
    let recipe = root().join("recipes/loramoe-smollm2.yaml");
    let out = dir.join("run");
    let sets = [
        format!("data=[{{path: {}}}]", data.display()),
        "val_fraction=0".into(),
        format!("output_dir={}", out.display()),
        "max_steps=3".into(),
        "batch_size=2".into(),
        "grad_accum=1".into(),
        "max_len=96".into(),
    ];
    let mut args = vec!["train", recipe.to_str().unwrap()];
    sets.iter().for_each(|s| args.extend(["--set", s.as_str()]));
    let o = run(&dir, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let share = |k: &str| last[k].as_f64().unwrap_or_else(|| panic!("no {k} in {last}"));
    let experts: f64 = (0..6).map(|n| share(&format!("loramoe/expert{n}"))).sum();
    assert!((experts - 1.0).abs() < 1e-3, "expert shares sum to {experts}: {last}");
    assert!(share("loramoe/balance_loss") > 0.0 && share("loramoe/world_share/world_data") > 0.0 && share("loramoe/world_share/task_data") > 0.0);
    // The result loads with --adapter and generates; it cannot be merged.
    let adapter = out.join("adapter");
    let o = run(&dir, &["generate", "-m", "smollm2-135m-instruct", "--adapter", adapter.to_str().unwrap(), "--max-new-tokens", "4", "--chat", "Question: what is the capital of country number 3?"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&dir, &["export", "-m", "smollm2-135m-instruct", "--adapter", adapter.to_str().unwrap(), "--merge", "--out", dir.join("merged").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("LoRAMoE adapter cannot be merged"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_refused() {
    let dir = common::tmpdir("loramoe-bad");
    let recipe = root().join("recipes/loramoe-smollm2.yaml");
    let mut rows: Vec<serde_json::Value> = (0..4).map(|i| serde_json::json!({"instruction": format!("q{i}"), "output": "a", "task_type": 0})).collect();
    rows[2].as_object_mut().unwrap().remove("task_type");
    let untyped = dir.join("untyped.jsonl");
    write_jsonl(&untyped, &rows);
    rows[2]["task_type"] = serde_json::json!("news");
    let badtype = dir.join("badtype.jsonl");
    write_jsonl(&badtype, &rows);
    let o = format!("output_dir={}", dir.join("run").display());
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec![format!("data=[{{path: {}}}]", untyped.display())], format!("{}: line/record 3: no `task_type`", untyped.display())),
        (vec![format!("data=[{{path: {}}}]", badtype.display())], "line/record 3: task_type: \"news\": expected 1".into()),
        (vec![format!("data=[{{path: {}}}]", untyped.display()), "gradient_checkpointing=true".into()], "gradient_checkpointing: LoRAMoE's balancing constraint".into()),
        (vec![format!("data=[{{path: {}}}]", untyped.display()), "loramoe.top_k=9".into()], "loramoe.top_k 9: expected 1 to experts (6)".into()),
    ];
    for (sets, needle) in cases {
        let mut args = vec!["train".to_string(), recipe.to_str().unwrap().into(), "--set".into(), o.clone(), "--set".into(), "max_steps=1".into(), "--set".into(), "val_fraction=0".into()];
        sets.iter().for_each(|s| args.extend(["--set".into(), s.clone()]));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&dir, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(&needle), "{sets:?}: {err:?} should contain {needle:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
