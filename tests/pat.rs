//! PAT (pruning-aware tuning): the gate's schedule is the official code's; a fresh PAT
//! leaves the model unchanged; gradients of every part (the modules, the mask through the
//! soft gate, the LoRA) match finite differences, with and without gradient
//! checkpointing; the model with its hard gate and the pruned model compute the same
//! logits (untied embeddings on the tiny model, tied on SmolLM2 through `train`, `export
//! --merge` and reloading the smaller directory); a resumed run reproduces the adapter;
//! bad settings and gemma3 are refused.
mod common;

use candle_core::{Device, Tensor, Var};
use instill::data::pack::{rows_from, Rows};
use instill::model::{Batch, LogitsFor};
use instill::peft::lora::LoraConfig;
use instill::peft::pat::{schedule, Pat, PatConfig};
use instill::peft::Adapter;
use instill::train::step::loss_and_grads;
use rand::{Rng, SeedableRng};

fn lora() -> LoraConfig {
    LoraConfig { r: 2, alpha: 4.0, dropout: 0.0, target_modules: vec!["q_proj".into(), "down_proj".into()], rslora: false }
}

fn config() -> PatConfig {
    PatConfig { rank: 4, ..Default::default() }
}

/// Every module's `up`, the LoRA's `B` and the scales random; the mask logits random
/// around 0, a few channels negative (fresh, `up` = 0 and nothing else gets a gradient).
fn randomize(p: &Pat, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for (name, v) in p.trainable() {
        let n = v.elem_count();
        let vals: Vec<f32> = if name.ends_with(".up") || name.ends_with("lora_B.weight") {
            (0..n).map(|_| rng.gen_range(-0.3..0.3)).collect()
        } else if name.ends_with(".scale") {
            (0..n).map(|_| rng.gen_range(0.7..1.3)).collect()
        } else if name == "pat.mask_logits" {
            (0..n).map(|i| if i % 4 == 1 { -rng.gen_range(0.002..0.02) } else { rng.gen_range(0.002..0.02) }).collect()
        } else {
            continue;
        };
        v.set(&Tensor::from_vec(vals, v.shape(), v.device()).unwrap()).unwrap();
    }
}

fn logits(m: &instill::CausalLm) -> Tensor {
    let ids: Vec<u32> = (10..40).collect();
    m.forward(&Batch::single(&ids, 0), None, LogitsFor::All).unwrap()
}

fn batch(vocab: u32) -> Rows {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let seqs: Vec<(Vec<u32>, Vec<bool>)> = (0..2).map(|_| ((0..18).map(|_| rng.gen_range(0..vocab)).collect(), (0..18).map(|i| i > 3).collect())).collect();
    rows_from(vec![vec![0], vec![1]], 0, |i| (&seqs[i].0, &seqs[i].1))
}

fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    common::max_abs_diff(a, b) / b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn the_schedule_is_the_official_one() {
    let g = 100;
    // step 0 and 1: T = 1 / (1 - ln 1 / ln G) = 1; the bias starts at 0.5 and reaches 0 at G/2.
    assert_eq!(schedule(0, g), (1.0 / (1.0 + 1e-6), 0.5, true));
    let (t, b, live) = schedule(50, g);
    assert!((t - 1.0 / (1.0 - 50f64.ln() / 100f64.ln() + 1e-6)).abs() < 1e-12 && b == 0.0 && live);
    // From 0.8 G the mask stops taking the LM gradient and T stays at its 0.8 G value.
    let frozen = schedule(80, g);
    assert!(!frozen.2 && frozen.0 == schedule(95, g).0 && frozen.0 == 1.0 / (1.0 - 80f64.ln() / 100f64.ln() + 1e-6));
    assert!(schedule(79, g).2);
    assert_eq!(config().target(576, 9), 432);
    assert_eq!(PatConfig { sparsity: 0.5, ..config() }.target(576, 9), 288);
    assert_eq!(PatConfig { multiple_of: 32, ..config() }.target(576, 9), 288, "432 down to a multiple of 32 and of 9 heads");
    assert_eq!(PatConfig { multiple_of: 32, ..config() }.target(576, 1), 416);
}

#[test]
fn a_fresh_pat_changes_nothing_and_gradients_match_finite_differences() {
    let (mut model, _) = common::load("tiny-random-llama", false);
    let base = logits(&model);
    let pat = Pat::attach(&mut model, &config(), &lora(), 1e-3, 1).unwrap();
    pat.set_total_steps(100);
    pat.begin_step(0, 0);
    assert_eq!(common::max_abs_diff(&base, &logits(&model)), 0.0, "a fresh PAT starts as the base (gate sigmoid(0) + 0.5 = 1)");
    randomize(&pat, 2);
    pat.set_training(true);
    let step = 30; // soft gate with the mask's graph
    pat.begin_step(0, step);
    let rows = batch(model.config.vocab_size as u32);
    let (names, vars): (Vec<String>, Vec<Var>) = pat.trainable().into_iter().unzip();
    let out = loss_and_grads(&model, std::slice::from_ref(&rows), &vars).unwrap();
    model.checkpointing = true;
    let ck = loss_and_grads(&model, std::slice::from_ref(&rows), &vars).unwrap();
    model.checkpointing = false;
    for ((n, a), c) in names.iter().zip(&out.grads).zip(&ck.grads) {
        assert!(common::max_abs_diff(a, c) < 1e-5, "{n}: checkpointed gradient differs by {}", common::max_abs_diff(a, c));
    }
    let mut checked = std::collections::BTreeSet::new();
    for (k, v) in vars.iter().enumerate() {
        let kind = names[k].rsplit('.').next().unwrap().to_string();
        let kind = if names[k].starts_with("lora/") { format!("lora-{}", names[k].contains("lora_A")) } else { kind };
        if !checked.insert(format!("{kind}-{}", names[k].contains("embed"))) && k % 7 != 0 {
            continue;
        }
        let w = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let g = out.grads[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let i = (0..g.len()).max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs())).unwrap();
        let eps = if names[k] == "pat.mask_logits" { 2e-4f32 } else { 3e-2 };
        let loss_at = |x: f32| {
            let mut w2 = w.clone();
            w2[i] = x;
            v.set(&Tensor::from_vec(w2, v.shape(), v.device()).unwrap()).unwrap();
            pat.begin_step(0, step); // the gate follows the mask
            let (s, n) = instill::train::loss::loss_sum(&model, &rows).unwrap();
            s.to_scalar::<f32>().unwrap() as f64 / n as f64
        };
        let num = (loss_at(w[i] + eps) - loss_at(w[i] - eps)) / (2.0 * eps as f64);
        // The mask's gradient is taken in the mask's own units, k m (see `Pat::scaled`).
        let num = if names[k] == "pat.mask_logits" { num / pat.gain() } else { num };
        loss_at(w[i]);
        assert!(g[i].abs() > 1e-5, "{}: no gradient", names[k]);
        assert!((num - g[i] as f64).abs() < 3e-2 * g[i].abs() as f64 + 1e-4, "{}[{i}]: numeric {num}, backward {}", names[k], g[i]);
    }
    assert!(checked.len() >= 8, "checked {checked:?}");
    // From 0.8 G on, the language-model loss no longer reaches the mask.
    pat.begin_step(0, 90);
    let late = loss_and_grads(&model, std::slice::from_ref(&rows), &vars).unwrap();
    let m = names.iter().position(|n| n == "pat.mask_logits").unwrap();
    assert_eq!(late.grads[m].abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn the_pruned_model_computes_what_the_hard_gated_one_does() {
    let dir = common::tmpdir("pat-prune");
    let (mut model, _) = common::load("tiny-random-llama", false);
    assert!(!model.config.tie_embeddings, "the tiny model covers untied embeddings (SmolLM2 tied ones)");
    let pat = Pat::attach(&mut model, &config(), &lora(), 1e-3, 4).unwrap();
    randomize(&pat, 5);
    pat.save(&model, &dir).unwrap();
    let (mut gated, _) = common::load("tiny-random-llama", false);
    let loaded = Pat::load(&mut gated, &dir).unwrap();
    let want = logits(&gated);
    let kept = loaded.kept().unwrap();
    let h = gated.config.hidden_size;
    assert!(kept.len() < h && kept.len() > h / 2, "kept {} of {h}", kept.len());
    loaded.prune(&mut gated).unwrap();
    assert_eq!(gated.config.hidden_size, kept.len());
    let got = logits(&gated);
    assert!(rel_diff(&got, &want) < 1e-4, "pruned vs gated: {}", rel_diff(&got, &want));
    // Saved as a Hugging Face directory and loaded back: the narrower model.
    let out = dir.join("pruned");
    instill::model::weights::save_hf_dir(&out, gated.arch, &gated.config, gated.named_tensors().unwrap(), candle_core::DType::F32, 1 << 30, &[]).unwrap();
    let re = instill::CausalLm::load(&instill::hub::ModelSource::HfDir(out.clone()), &Default::default()).unwrap();
    assert_eq!(re.config.hidden_size, kept.len());
    assert!(rel_diff(&logits(&re), &want) < 1e-4);
    // The gate is not a no-op: the same modules with every channel kept differ.
    let (mut all, _) = common::load("tiny-random-llama", false);
    let p = Pat::load(&mut all, &dir).unwrap();
    p.mask.set(&p.mask.as_tensor().abs().unwrap()).unwrap();
    p.harden().unwrap();
    assert!(rel_diff(&logits(&all), &want) > 1e-2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_recipe_trains_smollm2_exports_a_smaller_model_and_resumes_exactly() {
    common::source("smollm2-135m-instruct");
    let dir = common::tmpdir("pat-train");
    let out = dir.join("run");
    let o = format!("output_dir={}", out.display());
    common::train_recipe(&dir, "pat-smollm2.yaml", &[o.as_str(), "max_steps=4", "batch_size=2", "max_len=96", "val_fraction=0", "save_every=2", "pat.mask_lr=0.5"]);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"pat/kept\"") && metrics.contains("\"pat/identity_loss\""), "{metrics}");
    let adapter = out.join("adapter");
    let t = candle_core::safetensors::load(adapter.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(t["model.layers.3.pat_mlp.down"].dims(), [64, 576]);
    assert!(!t.contains_key("model.embed_tokens.pat.down"), "tied embeddings: the embeddings' module is the gate alone");
    // The mask moved at its own rate: some channels are off, most on.
    let mask = t["pat.mask_logits"].to_vec1::<f32>().unwrap();
    let positive = mask.iter().filter(|&&m| m > 0.0).count();
    assert!(positive >= 9 && positive < 576, "positive {positive}");
    // Kept: the positive ones, less the smallest down to a multiple of the 9 heads.
    let kept = positive / 9 * 9;
    let (mut gated, _) = common::load("smollm2-135m-instruct", false);
    Pat::load(&mut gated, &adapter).unwrap();
    let want = logits(&gated);
    let o = common::cli(&dir, &["export", out.to_str().unwrap(), "--merge", "--out", "pruned"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stderr).contains(&format!("kept {kept} of 576")), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("pruned/config.json")).unwrap()).unwrap();
    assert_eq!((cfg["hidden_size"].as_u64(), cfg["head_dim"].as_u64(), cfg["tie_word_embeddings"].as_bool()), (Some(kept as u64), Some(64), Some(true)));
    let re = instill::CausalLm::load(&instill::hub::ModelSource::HfDir(dir.join("pruned")), &Default::default()).unwrap();
    assert!(rel_diff(&logits(&re), &want) < 1e-4, "{}", rel_diff(&logits(&re), &want));
    let o = common::cli(&dir, &["generate", "-m", dir.join("pruned").to_str().unwrap(), "--max-new-tokens", "4", "--chat", "Name a colour."]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Resuming the finished run's last checkpoint reproduces its final adapter.
    common::assert_resume_reproduces(&dir, &out, &t);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_settings_and_gemma3_are_refused() {
    let (mut model, _) = common::load("tiny-random-llama", false);
    for (c, want) in [(PatConfig { sparsity: 1.0, ..config() }, "pat.sparsity"), (PatConfig { rank: 0, ..config() }, "pat.rank"), (PatConfig { mask_lr: Some(0.0), ..config() }, "pat.mask_lr")] {
        let e = Pat::attach(&mut model, &c, &lora(), 1e-3, 0).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(want), "{e}");
    }
    let (mut gemma, _) = common::load("gemma3-270m", false);
    let e = Pat::attach(&mut gemma, &config(), &lora(), 1e-3, 0).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("gemma3") && e.contains("llama and qwen2"), "{e}");
}
