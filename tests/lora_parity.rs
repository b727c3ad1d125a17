//! LoRA against PEFT (tests/fixtures/lora, made by gen/make_lora.py): the same adapter
//! on the dequantized SmolLM2-135M gives the same loss, the same gradient for every LoRA
//! tensor, and the same 3-step AdamW trajectory.
mod common;

use candle_core::Tensor;
use instill::data::pack::Rows;
use instill::model::Batch;
use instill::peft::{lora::Lora, Adapter};
use instill::train::optim::{AdamW, AdamWConfig};
use instill::train::step::loss_and_grads;

fn fixture_rows() -> (Rows, serde_json::Value) {
    let b = common::read_json("lora/batch.json");
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

/// Gradients (in `trainable()` order: A, B per layer) with B's rows in HF order.
fn hf_order(lora: &Lora, model: &instill::CausalLm, grads: &[Tensor]) -> Vec<Tensor> {
    let mut out = vec![];
    for (i, (_, l)) in lora.layers.iter().enumerate() {
        out.push(grads[2 * i].clone());
        out.push(model.rows_to_hf(&l.gguf, grads[2 * i + 1].clone(), true).unwrap());
    }
    out
}

/// ||a - b|| / ||b||
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    let n = b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    (d / n).sqrt()
}

#[test]
fn lora_loss_gradients_and_adamw_trajectory_match_peft() {
    let (mut model, _) = common::load("smollm2-135m-instruct", true);
    let lora = Lora::load(&mut model, &common::fixture("lora")).unwrap();
    assert_eq!(lora.layers.len(), 30 * 3, "q_proj, v_proj, down_proj in 30 blocks");
    lora.set_training(true);
    let (rows, b) = fixture_rows();
    let named = lora.trainable();
    let params: Vec<_> = named.iter().map(|(_, v)| v.clone()).collect();

    let out = loss_and_grads(&model, std::slice::from_ref(&rows), &params).unwrap();
    let want = b["loss"].as_f64().unwrap();
    // Gradient checkpointing (blocks recomputed in the backward pass) changes nothing.
    model.checkpointing = true;
    let ck = loss_and_grads(&model, std::slice::from_ref(&rows), &params).unwrap();
    model.checkpointing = false;
    assert!((ck.loss - out.loss).abs() < 1e-6, "checkpointed loss {} vs {}", ck.loss, out.loss);
    for ((name, _), (a, b)) in named.iter().zip(ck.grads.iter().zip(&out.grads)) {
        let e = rel_err(a, b);
        assert!(e < 1e-5, "{name}: checkpointed gradient differs by {e:.2e}");
    }
    assert!((out.loss - want).abs() < 2e-4, "loss {} vs PEFT {want}", out.loss);

    let reference = candle_core::safetensors::load(common::fixture("lora/grads.safetensors"), &candle_core::Device::Cpu).unwrap();
    let mut worst = (0f64, String::new());
    let ours = hf_order(&lora, &model, &out.grads);
    for ((name, _), g) in named.iter().zip(&ours) {
        let r = reference.get(name).unwrap_or_else(|| panic!("{name} not in the fixture"));
        let norm = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(norm > 0.0, "{name} received no gradient");
        let e = rel_err(g, r);
        if e > worst.0 {
            worst = (e, name.clone());
        }
    }
    assert!(worst.0 < 1e-3, "gradient of {} differs from PEFT's by {:.2e} (relative L2)", worst.1, worst.0);

    // Three AdamW steps on the same batch.
    let a = &b["adamw"];
    let cfg = AdamWConfig { beta1: a["beta1"].as_f64().unwrap(), beta2: a["beta2"].as_f64().unwrap(), eps: a["eps"].as_f64().unwrap(), weight_decay: a["weight_decay"].as_f64().unwrap() };
    let start = lora.peft_tensors(&model, |v| Ok(v.as_tensor().copy()?)).unwrap();
    let mut opt = AdamW::new(params.clone(), cfg);
    let traj: Vec<f64> = serde_json::from_value(b["trajectory_losses"].clone()).unwrap();
    for (step, want) in traj.iter().enumerate() {
        let out = loss_and_grads(&model, std::slice::from_ref(&rows), &params).unwrap();
        assert!((out.loss - want).abs() < 5e-4, "step {step}: loss {} vs PEFT {want}", out.loss);
        if step < 3 {
            opt.step(&out.grads, a["lr"].as_f64().unwrap()).unwrap();
        }
    }
    let after = candle_core::safetensors::load(common::fixture("lora/adapter_step3.safetensors"), &candle_core::Device::Cpu).unwrap();
    // Adam's first steps are nearly sign(g) * lr, so elements whose gradient is close to
    // zero carry the float noise of the gradient into the update: a per-tensor bound, and
    // a tighter one on the whole update.
    let end = lora.peft_tensors(&model, |v| Ok(v.as_tensor().copy()?)).unwrap();
    let (mut diff, mut norm) = (0f64, 0f64);
    for ((name, s), (_, p)) in start.iter().zip(&end) {
        let want_update = (after.get(name).unwrap() - s).unwrap();
        let our_update = (p - s).unwrap();
        let e = rel_err(&our_update, &want_update);
        assert!(e < 3e-2, "{name}: 3-step AdamW update differs from PyTorch's by {e:.2e} (relative L2)");
        let n = want_update.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        diff += e * e * n;
        norm += n;
    }
    let all = (diff / norm).sqrt();
    eprintln!("whole 3-step update: relative L2 difference {all:.2e}; worst gradient {:.2e} ({})", worst.0, worst.1);
    assert!(all < 5e-3, "the whole 3-step update differs from PyTorch's by {all:.2e} (relative L2)");
}

#[test]
fn adapters_round_trip_in_peft_layout_and_merge_to_equal_logits() {
    let (mut model, _) = common::load("smollm2-135m-instruct", true);
    let lora = Lora::load(&mut model, &common::fixture("lora")).unwrap();
    // Saved again, the adapter has PEFT's keys and the same values.
    let dir = common::tmpdir("lora-save");
    lora.save(&model, &dir).unwrap();
    let dev = candle_core::Device::Cpu;
    let ours = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &dev).unwrap();
    let theirs = candle_core::safetensors::load(common::fixture("lora/adapter_model.safetensors"), &dev).unwrap();
    let mut keys: Vec<_> = ours.keys().collect();
    keys.sort();
    let mut want: Vec<_> = theirs.keys().collect();
    want.sort();
    assert_eq!(keys, want);
    for (k, t) in &theirs {
        assert_eq!(common::max_abs_diff(&ours[k], t), 0.0, "{k}");
    }
    // `export --merge` writes a plain HF model whose logits equal base + adapter.
    let (rows, _) = fixture_rows();
    let with_adapter = model.forward(&rows.batch, None, instill::model::LogitsFor::All).unwrap();
    let out = common::tmpdir("lora-merged");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_instill"))
        .args(["export", "-m", "smollm2-135m-instruct", "--adapter"])
        .arg(common::fixture("lora"))
        .args(["--merge", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let merged = instill::CausalLm::load(&instill::hub::ModelSource::HfDir(out.clone()), &Default::default()).unwrap();
    let logits = merged.forward(&rows.batch, None, instill::model::LogitsFor::All).unwrap();
    let d = common::max_abs_diff(&logits, &with_adapter);
    assert!(d < 1e-3, "merged model's logits differ from base + adapter by {d}");
}

/// `precision: bf16` holds the frozen base in bf16: half the projection memory, and the
/// loss and gradients stay within bf16 rounding of PEFT's f32 reference (but are not
/// identical to the f32 run, so the setting does something).
#[test]
fn bf16_base_halves_weight_memory_and_stays_close_to_peft() {
    let s = common::source("smollm2-135m-instruct");
    let load = |dtype| instill::CausalLm::load(&s, &instill::LoadOptions { dequantize: true, weight_dtype: dtype, ..Default::default() }).unwrap();
    let (mut f32_model, mut bf16_model) = (load(candle_core::DType::F32), load(candle_core::DType::BF16));
    let bytes = |m: &mut instill::CausalLm| m.projections_mut().iter().map(|p| p.linear.storage_bytes()).sum::<usize>();
    assert_eq!(bytes(&mut f32_model), 2 * bytes(&mut bf16_model));
    let (rows, b) = fixture_rows();
    let run = |model: &mut instill::CausalLm| {
        let lora = Lora::load(model, &common::fixture("lora")).unwrap();
        lora.set_training(true);
        let params: Vec<_> = lora.trainable().into_iter().map(|(_, v)| v).collect();
        loss_and_grads(model, std::slice::from_ref(&rows), &params).unwrap()
    };
    let (full, half) = (run(&mut f32_model), run(&mut bf16_model));
    let want = b["loss"].as_f64().unwrap();
    assert!(half.loss != full.loss, "bf16 weights gave exactly the f32 loss");
    assert!((half.loss - want).abs() < 2e-2 * want, "bf16 loss {} vs PEFT f32 {want}", half.loss);
    for (i, (h, f)) in half.grads.iter().zip(&full.grads).enumerate() {
        let e = rel_err(h, f);
        assert!(e < 5e-2, "gradient {i}: bf16 base differs from f32 by {e:.2e}");
    }
}
