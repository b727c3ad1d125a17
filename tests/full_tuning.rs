//! Full, partial and Half Fine-Tuning on the model's own weights: every trainable
//! tensor gets a gradient, gradients match finite differences, gradient checkpointing
//! changes nothing, freeze patterns and HFT stages leave frozen weights untouched.
mod common;

use candle_core::{Tensor, Var};
use instill::data::pack::{rows_from, Rows};
use instill::peft::full::{Full, FullConfig};
use instill::peft::Adapter;
use instill::train::optim::{AdamW, AdamWConfig};
use instill::train::step::loss_and_grads;
use rand::{Rng, SeedableRng};

fn batch(vocab: u32, t: usize) -> Rows {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let seqs: Vec<(Vec<u32>, Vec<bool>)> = (0..2).map(|_| ((0..t).map(|_| rng.gen_range(0..vocab)).collect(), (0..t).map(|i| i > 3).collect())).collect();
    rows_from(vec![vec![0], vec![1]], 0, |i| (&seqs[i].0, &seqs[i].1))
}

fn model_and_full(cfg: &FullConfig) -> (instill::CausalLm, Full, Rows) {
    let (mut model, tok) = common::load("tiny-random-llama", false);
    let full = Full::attach(&mut model, &tok, cfg).unwrap();
    let rows = batch(model.config.vocab_size as u32, 24);
    (model, full, rows)
}

fn params(full: &Full) -> (Vec<String>, Vec<Var>) {
    full.trainable().into_iter().unzip()
}

#[test]
fn every_weight_gets_the_right_gradient() {
    let (mut model, full, rows) = model_and_full(&FullConfig::default());
    let (names, vars) = params(&full);
    assert!(names.iter().any(|n| n == "model.embed_tokens.weight") && names.iter().any(|n| n == "lm_head.weight"), "{names:?}");
    let out = loss_and_grads(&model, std::slice::from_ref(&rows), &vars).unwrap();
    for (n, g) in names.iter().zip(&out.grads) {
        let s = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(s > 0.0, "{n} received no gradient");
    }
    // Gradient checkpointing gives the same gradients.
    model.checkpointing = true;
    let ck = loss_and_grads(&model, std::slice::from_ref(&rows), &vars).unwrap();
    model.checkpointing = false;
    for ((n, a), b) in names.iter().zip(&ck.grads).zip(&out.grads) {
        assert!(common::max_abs_diff(a, b) < 1e-5, "{n}: checkpointed gradient differs");
    }
    // Central differences on a few elements of a few weights.
    for (k, v) in vars.iter().enumerate().step_by(5) {
        let w = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let g = out.grads[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // The element with the largest gradient: a clear signal above f32 noise.
        let i = (0..g.len()).max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs())).unwrap();
        let eps = 1e-2f32;
        let loss_at = |x: f32| {
            let mut w2 = w.clone();
            w2[i] = x;
            v.set(&Tensor::from_vec(w2, v.shape(), v.device()).unwrap()).unwrap();
            let (s, n) = instill::train::loss::loss_sum(&model, &rows).unwrap();
            s.to_scalar::<f32>().unwrap() as f64 / n as f64
        };
        let num = (loss_at(w[i] + eps) - loss_at(w[i] - eps)) / (2.0 * eps as f64);
        loss_at(w[i]);
        assert!((num - g[i] as f64).abs() < 2e-2 * g[i].abs() as f64 + 1e-4, "{}[{i}]: numeric {num}, backward {}", names[k], g[i]);
    }
}

#[test]
fn freeze_patterns_and_hft_stages_leave_frozen_weights_alone() {
    let cfg = FullConfig { train: vec![], freeze: vec!["embed_tokens".into(), r"layers\.0\.".into()], hft_stage_steps: 0 };
    let (_, full, _) = model_and_full(&cfg);
    let (names, _) = params(&full);
    assert!(!names.iter().any(|n| n.contains("embed_tokens") || n.contains("layers.0.")), "{names:?}");
    assert!(names.iter().any(|n| n.contains("layers.1.")));

    let cfg = FullConfig { hft_stage_steps: 2, ..Default::default() };
    let (mut model, full, rows) = model_and_full(&cfg);
    let (names, vars) = params(&full);
    full.hft_stage(&mut model, 0, 0).unwrap();
    let active = full.active().unwrap();
    let in_blocks: Vec<usize> = (0..names.len()).filter(|&i| names[i].starts_with("model.layers.")).collect();
    let on = in_blocks.iter().filter(|&&i| active[i]).count();
    assert!(on * 2 >= in_blocks.len() - 2 && on * 2 <= in_blocks.len() + 2, "HFT trains about half the block weights: {on} of {}", in_blocks.len());
    assert!((0..names.len()).filter(|i| !in_blocks.contains(i)).all(|i| active[i]), "weights outside blocks train throughout");
    let before: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
    let out = loss_and_grads(&model, std::slice::from_ref(&rows), &vars).unwrap();
    for (i, g) in out.grads.iter().enumerate() {
        let s = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(s > 0.0, active[i], "{}: gradient only for this stage's half", names[i]);
    }
    let mut opt = AdamW::new(vars.clone(), AdamWConfig { weight_decay: 0.1, ..Default::default() });
    opt.step_some(&out.grads, 1e-2, Some(&active)).unwrap();
    for (i, v) in vars.iter().enumerate() {
        let moved = common::max_abs_diff(v.as_tensor(), &before[i]) > 0.0;
        assert_eq!(moved, active[i], "{}", names[i]);
    }
    // The next stage draws another half (deterministically).
    full.hft_stage(&mut model, 0, 2).unwrap();
    assert_ne!(full.active().unwrap(), active);
}
