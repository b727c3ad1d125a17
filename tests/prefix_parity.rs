//! Prefix tuning against PEFT (tests/fixtures/prefix, made by gen/make_prefix.py): the
//! same PREFIX_TUNING adapter on the dequantized SmolLM2-135M (grouped-query attention,
//! llama's permuted key rows) gives the same logits, loss and prompt-embedding gradient,
//! and the same greedy continuations through the KV cache; it saves back in PEFT's layout;
//! MAM (prefix + parallel adapter) trains, saves and reloads.
mod common;

use candle_core::{Device, Tensor};
use instill::data::pack::Rows;
use instill::decode::generate::{generate, GenerateOptions};
use instill::model::{Batch, LogitsFor};
use instill::peft::prefix::PrefixTuning;
use instill::peft::Adapter;
use instill::train::step::loss_and_grads;

fn fixture_rows() -> (Rows, serde_json::Value) {
    let b = common::read_json("prefix/batch.json");
    let ids: Vec<Vec<u32>> = serde_json::from_value(b["input_ids"].clone()).unwrap();
    let labels: Vec<Vec<i64>> = serde_json::from_value(b["labels"].clone()).unwrap();
    let t = ids[0].len();
    let rows = Rows {
        batch: Batch { positions: vec![(0..t as u32).collect(); ids.len()], segments: vec![vec![0; t]; ids.len()], valid: vec![vec![true; t]; ids.len()], tokens: ids.clone() },
        targets: labels.iter().map(|r| r.iter().map(|&l| l != -100).collect()).collect(),
        examples: (0..ids.len()).map(|i| vec![i]).collect(),
    };
    (rows, b)
}

#[test]
fn prefix_tuning_matches_peft_forward_gradient_and_cached_generation() {
    let (mut model, tok) = common::load("smollm2-135m-instruct", true);
    let base = model.forward(&Batch::single(&[1, 2, 3, 4], 0), None, LogitsFor::All).unwrap();
    let pt = PrefixTuning::load(&mut model, &common::fixture("prefix")).unwrap();
    assert_eq!(pt.config.num_virtual_tokens, 6);
    let (rows, b) = fixture_rows();
    // Logits at the fixture's positions.
    let logits = model.forward(&rows.batch, None, LogitsFor::All).unwrap();
    let want = candle_core::safetensors::load(common::fixture("prefix/logits.safetensors"), &Device::Cpu).unwrap()["logits"].clone();
    let pos: Vec<u32> = serde_json::from_value(b["logit_positions"].clone()).unwrap();
    let got = logits.index_select(&Tensor::new(pos.as_slice(), &Device::Cpu).unwrap(), 1).unwrap();
    // The first token (BOS, whose hidden state grows large in these models) carries the
    // largest f32 summation-order difference: 3.8e-3 of logits ~26 measured, 1e-4 elsewhere.
    for r in 0..2 {
        for (j, &p) in pos.iter().enumerate() {
            let (a, w) = (got.get(r).unwrap().get(j).unwrap(), want.get(r).unwrap().get(j).unwrap());
            let (d, tol) = (common::max_abs_diff(&a, &w), if p == 0 { 6e-3 } else { 5e-4 });
            assert!(d < tol, "row {r} position {p}: logits differ from PEFT's by {d} (tolerance {tol})");
        }
    }
    // Loss and the gradient of the prefix.
    pt.set_training(true);
    let vars: Vec<_> = pt.trainable().into_iter().map(|(_, v)| v).collect();
    let out = loss_and_grads(&model, std::slice::from_ref(&rows), &vars).unwrap();
    let want_loss = b["loss"].as_f64().unwrap();
    assert!((out.loss - want_loss).abs() < 2e-4, "loss {} vs PEFT {want_loss}", out.loss);
    let g = candle_core::safetensors::load(common::fixture("prefix/grads.safetensors"), &Device::Cpu).unwrap()["prompt_embeddings"].clone();
    let diff = (&out.grads[0] - &g).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    assert!(diff / norm < 1e-3, "prompt_embeddings gradient: relative L2 error {}", diff / norm);
    pt.set_training(false);
    // Greedy continuations through the KV cache (prefill puts the prefix in the cache).
    let prompts: Vec<Vec<u32>> = serde_json::from_value(b["prompts"].clone()).unwrap();
    let greedy: Vec<Vec<u32>> = serde_json::from_value(b["greedy"].clone()).unwrap();
    for (p, want) in prompts.iter().zip(&greedy) {
        let g = generate(&model, &tok, std::slice::from_ref(p), &GenerateOptions { max_new_tokens: 12, ..Default::default() }, &mut |_, _| {}).unwrap();
        // PEFT's includes the end-of-sequence token it stopped at; ours stops before it.
        let want: Vec<u32> = want.iter().copied().filter(|&t| Some(t) != tok.eos_id).collect();
        let got: Vec<u32> = g[0].tokens.iter().copied().take(want.len()).collect();
        assert_eq!(got, want, "greedy continuation differs from PEFT's");
    }
    // Batched, left-padded generation gives each row what it gives alone.
    let both = generate(&model, &tok, &prompts, &GenerateOptions { max_new_tokens: 12, ..Default::default() }, &mut |_, _| {}).unwrap();
    for (g, want) in both.iter().zip(&greedy) {
        let want: Vec<u32> = want.iter().copied().filter(|&t| Some(t) != tok.eos_id).collect();
        assert_eq!(g.tokens.iter().copied().take(want.len()).collect::<Vec<_>>(), want, "batched generation");
    }
    // Switched off, the model is the base; saved, it is PEFT's layout again.
    pt.set_enabled(false).unwrap();
    assert_eq!(common::max_abs_diff(&model.forward(&Batch::single(&[1, 2, 3, 4], 0), None, LogitsFor::All).unwrap(), &base), 0.0);
    pt.set_enabled(true).unwrap();
    let dir = common::tmpdir("prefix-save");
    pt.save(&model, &dir).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
    let peft = common::read_json("prefix/adapter_config.json");
    for k in ["peft_type", "num_virtual_tokens", "token_dim", "num_attention_heads", "num_layers", "num_transformer_submodules", "prefix_projection"] {
        assert_eq!(cfg[k], peft[k], "{k}");
    }
    let saved = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    let orig = candle_core::safetensors::load(common::fixture("prefix/adapter_model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(common::max_abs_diff(&saved["prompt_embeddings"], &orig["prompt_embeddings"]), 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

const BIN: &str = env!("CARGO_BIN_EXE_instill");

fn run(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN).current_dir(dir).env("INSTILL_PROGRESS_SECS", "0.01").args(["--threads", "2"]).args(args).output().unwrap()
}

#[test]
fn mam_trains_smollm2_saves_both_parts_and_resumes_exactly() {
    common::source("smollm2-135m-instruct");
    let dir = common::tmpdir("mam-train");
    let recipe = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("recipes/mam-smollm2.yaml");
    let out = dir.join("run");
    let o = format!("output_dir={}", out.display());
    let mut args = vec!["train", recipe.to_str().unwrap()];
    for s in [o.as_str(), "max_steps=3", "batch_size=2", "max_len=80", "val_fraction=0", "save_every=2", "prefix.num_virtual_tokens=4"] {
        args.extend(["--set", s]);
    }
    let r = run(&dir, &args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let a = out.join("adapter");
    assert_eq!(instill::peft::peft_type(&a).unwrap(), "MAM");
    assert_eq!(instill::peft::peft_type(&a.join("prefix")).unwrap(), "PREFIX_TUNING");
    assert_eq!(instill::peft::peft_type(&a.join("adapter")).unwrap(), "BOTTLENECK");
    let read = |p: &std::path::Path| candle_core::safetensors::load(p.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    let (prefix, adapter) = (read(&a.join("prefix")), read(&a.join("adapter")));
    assert_eq!(prefix["prompt_embeddings"].dims(), [4, 30 * 2 * 3 * 64]);
    // The adapter trained: its up projection left 0.
    let up = &adapter["base_model.model.model.layers.0.mlp.down_proj.adapter_up.weight"];
    assert!(up.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "adapter_up trained");
    let r = run(&dir, &["generate", "-m", "smollm2-135m-instruct", "--adapter", a.to_str().unwrap(), "--max-new-tokens", "4", "--chat", "Name a colour."]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // Resumed from the step-2 checkpoint: the same final adapter, bit for bit.
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(out.join("checkpoints/step-000003")).unwrap();
    let r = run(&dir, &["train", "--resume", out.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (p2, a2) = (read(&a.join("prefix")), read(&a.join("adapter")));
    assert_eq!(common::max_abs_diff(&p2["prompt_embeddings"], &prefix["prompt_embeddings"]), 0.0);
    for (k, t) in &adapter {
        assert_eq!(common::max_abs_diff(t, &a2[k]), 0.0, "{k}");
    }
    // Packing is refused (the prefix goes before each example), and so is merging.
    let r = run(&dir, &["train", recipe.to_str().unwrap(), "--set", "packing=true", "--set", "output_dir=bad"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("needs `packing: false`"), "{err}");
    let r = run(&dir, &["export", "-m", "smollm2-135m-instruct", "--adapter", a.to_str().unwrap(), "--merge", "--out", "m"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("MAM adapter"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
