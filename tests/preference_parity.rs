//! Preference objectives and reward models against TRL 1.16.0 (tests/fixtures/preference,
//! made by gen/make_preference.py): on SmolLM2-135M (dequantized) with the fixture's LoRA
//! adapter and TRL's own tokenized batch of real pairs, every DPO loss type, CPO, SimPO,
//! ORPO, KTO and the Bradley-Terry reward model give TRL's loss, implicit rewards and
//! gradient of every trained tensor, within 1e-3. The reference log-probs come from our
//! pre-pass with the adapter switched off (TRL's reference when it has no "ref" copy).
mod common;

use candle_core::Tensor;
use instill::data::cache::{Side, Tokenized};
use instill::data::pack::rows_from;
use instill::peft::{lora::Lora, Adapter};
use instill::train::data::{Set, Unit};
use instill::train::objective::{cpo, dpo, kto, orpo, reward, Ctx, Layout, Objective};
use instill::train::reference::{Pass, Reference};
use instill::train::step::objective_step;
use std::collections::HashMap;

const TOL: f64 = 1e-3;

fn ints(v: &serde_json::Value) -> Vec<Vec<i64>> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Sequences of a TRL batch: ids cut to their attention mask, completion mask as targets.
fn seqs(ids: &serde_json::Value, att: &serde_json::Value, mask: Option<&serde_json::Value>, side: impl Fn(usize) -> Side) -> Vec<Tokenized> {
    let (ids, att) = (ints(ids), ints(att));
    let mask = mask.map(ints);
    (0..ids.len())
        .map(|r| {
            let n = att[r].iter().filter(|&&a| a == 1).count();
            assert!(att[r][..n].iter().all(|&a| a == 1), "right padding only");
            let m = match &mask {
                Some(m) => m[r][..n].iter().map(|&x| x == 1).collect(),
                None => vec![false; n],
            };
            Tokenized { side: side(r), record: r as u32 + 1, scores: vec![], ids: ids[r][..n].iter().map(|&x| x as u32).collect(), mask: m }
        })
        .collect()
}

fn set_of(seqs: Vec<Tokenized>, units: Vec<Unit>) -> Set {
    let mut unit_of = vec![usize::MAX; seqs.len()];
    for (u, unit) in units.iter().enumerate() {
        unit.seqs.iter().for_each(|&s| unit_of[s] = u);
    }
    let n = units.len();
    Set { seqs, units, unit_of, file_of: vec![0; n], files: vec!["fixture".into()], world: vec![None; n] }
}

/// ||a - b|| / ||b||, or the absolute difference where the reference is ~0.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    let n = b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    if n < 1e-18 {
        d.sqrt()
    } else {
        (d / n).sqrt()
    }
}

struct Fixture {
    model: instill::CausalLm,
    lora: Lora,
}

fn setup(adapter: &str) -> Fixture {
    let (mut model, _) = common::load("smollm2-135m-instruct", true);
    let lora = Lora::load(&mut model, &common::fixture(adapter)).unwrap();
    Fixture { model, lora }
}

const LAYOUT: Layout = Layout { pad: 2, max_len: 4096, packing: false };

fn reference(f: &Fixture, set: &Set, name: &str) -> Vec<f32> {
    let dir = common::tmpdir(&format!("pref-{name}"));
    let pass = Pass { model: &f.model, adapter: &f.lora, which: Reference::Base, layout: LAYOUT, batch: 4, allowed: true };
    pass.run(set, &dir.join("ref.bin"), "k", &mut |_, _| {}).unwrap()
}

/// Run `obj` on the whole set as one micro-batch and compare with TRL's numbers.
fn check(f: &Fixture, obj: &dyn Objective, set: &Set, refs: Option<&[f32]>, head: Option<(&candle_core::Var, &str)>, want: &serde_json::Value, grads: &str) {
    let ids: Vec<usize> = set.units.iter().flat_map(|u| u.seqs.clone()).collect();
    let rows = rows_from(ids.iter().map(|&i| vec![i]).collect(), LAYOUT.pad, |i| (&set.seqs[i].ids, &set.seqs[i].mask));
    let mut named = f.lora.trainable();
    if let Some((h, key)) = head {
        named.push((key.to_string(), h.clone()));
    }
    let params: Vec<_> = named.iter().map(|(_, v)| v.clone()).collect();
    f.lora.set_training(true);
    let head_t = head.map(|(h, _)| h.as_tensor().clone());
    let ctx = Ctx { model: &f.model, set, reference: refs, head: head_t.as_ref(), layout: LAYOUT, adapter: Some(&f.lora) };
    let out = objective_step(obj, &ctx, std::slice::from_ref(&rows), &params).unwrap();
    f.lora.set_training(false);
    let name = obj.name();
    let wl = want["loss"].as_f64().unwrap();
    assert!((out.loss - wl).abs() <= TOL * wl.abs().max(1.0), "{grads}: loss {} vs TRL {wl}", out.loss);
    let means = out.stats.means();
    for k in ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "kl"] {
        if let Some(w) = want.get(k).and_then(|v| v.as_f64()) {
            let got = means[k];
            assert!((got - w).abs() <= TOL * w.abs().max(1.0), "{grads} ({name}): {k} {got} vs TRL {w}");
        }
    }
    let g = candle_core::safetensors::load(common::fixture(&format!("preference/{grads}.safetensors")), &candle_core::Device::Cpu).unwrap();
    let mine: HashMap<String, Tensor> = hf_grads(f, &named, &out.grads);
    assert_eq!(g.len(), mine.len(), "{grads}: tensor count");
    let mut worst = (0f64, String::new());
    for (k, want) in &g {
        let got = mine.get(k).unwrap_or_else(|| panic!("{grads}: no gradient for {k}"));
        let e = rel_err(got, &want.reshape(got.dims()).unwrap());
        if e > worst.0 {
            worst = (e, k.clone());
        }
    }
    assert!(worst.0 < TOL, "{grads}: gradient of {} off by {:.2e} (relative L2)", worst.1, worst.0);
}

/// Our gradients under PEFT's names, B's rows in Hugging Face's order.
fn hf_grads(f: &Fixture, named: &[(String, candle_core::Var)], grads: &[Tensor]) -> HashMap<String, Tensor> {
    let by_var: HashMap<_, _> = named.iter().zip(grads).map(|((_, v), g)| (v.as_tensor().id(), g.clone())).collect();
    let mut out: HashMap<String, Tensor> = f.lora.peft_tensors(&f.model, |v| Ok(by_var[&v.as_tensor().id()].clone())).unwrap().into_iter().collect();
    for ((k, v), g) in named.iter().zip(grads) {
        if k == "score.weight" {
            let _ = v;
            out.insert(k.clone(), g.clone());
        }
    }
    out
}

fn pairs_set(d: &serde_json::Value) -> Set {
    let b = &d["batch"];
    let n = ints(&b["input_ids"]).len() / 2;
    let s = seqs(&b["input_ids"], &b["attention_mask"], Some(&b["completion_mask"]), |r| if r < n { Side::Chosen } else { Side::Rejected });
    set_of(s, (0..n).map(|i| Unit { seqs: vec![i, i + n], kl: None }).collect())
}

#[test]
fn dpo_loss_types_match_trl() {
    let f = setup("preference/adapter");
    let d = common::read_json("preference/dpo.json");
    let set = pairs_set(&d);
    let refs = reference(&f, &set, "dpo");
    for (name, want) in d["losses"].as_object().unwrap() {
        let types: Vec<String> = serde_json::from_value(want["loss_type"].clone()).unwrap();
        let weights: Vec<f64> = want["loss_weights"].as_array().map_or(vec![1.0; types.len()], |w| w.iter().map(|x| x.as_f64().unwrap()).collect());
        let losses = types.iter().zip(weights).map(|(t, w)| (dpo::loss_type(t).unwrap(), w)).collect();
        let obj = dpo::Dpo { beta: 0.1, label_smoothing: want.get("label_smoothing").and_then(|v| v.as_f64()).unwrap_or(0.0), discopop_tau: 0.05, losses };
        check(&f, &obj, &set, Some(&refs), None, want, &format!("grads-dpo-{name}"));
    }
}

#[test]
fn cpo_simpo_and_orpo_match_trl() {
    let f = setup("preference/adapter");
    let set = pairs_set(&common::read_json("preference/dpo.json"));
    let w = common::read_json("preference/reference_free.json");
    let cpo = cpo::Cpo { beta: 0.1, label_smoothing: 0.0, cpo_alpha: 1.0, gamma: 0.5, loss: cpo::CpoLoss::Sigmoid, simpo_name: false };
    check(&f, &cpo, &set, None, None, &w["cpo"], "grads-cpo");
    let simpo = cpo::Cpo { beta: 0.1, label_smoothing: 0.0, cpo_alpha: 0.0, gamma: 0.5, loss: cpo::CpoLoss::Simpo, simpo_name: true };
    check(&f, &simpo, &set, None, None, &w["simpo"], "grads-simpo");
    check(&f, &orpo::Orpo { beta: 0.1 }, &set, None, None, &w["orpo"], "grads-orpo");
}

#[test]
fn kto_matches_trl() {
    let f = setup("preference/adapter");
    let k = common::read_json("preference/kto.json");
    let labels: Vec<bool> = serde_json::from_value(k["label"].clone()).unwrap();
    let n = labels.len();
    let mut s = seqs(&k["input_ids"], &k["attention_mask"], Some(&k["completion_mask"]), |r| if labels[r] { Side::Desirable } else { Side::Undesirable });
    s.extend(seqs(&k["KL_input_ids"], &k["KL_attention_mask"], Some(&k["KL_completion_mask"]), |_| Side::Conversation));
    let set = set_of(s, (0..n).map(|i| Unit { seqs: vec![i], kl: Some(n + i) }).collect());
    let refs = reference(&f, &set, "kto");
    let obj = kto::Kto { beta: 0.1, desirable_weight: 1.0, undesirable_weight: 1.0, apo: false };
    check(&f, &obj, &set, Some(&refs), None, &k, "grads-kto");
}

#[test]
fn bradley_terry_reward_model_matches_trl() {
    let f = setup("preference/reward");
    let r = common::read_json("preference/reward.json");
    let n = ints(&r["input_ids"]).len() / 2;
    let s = seqs(&r["input_ids"], &r["attention_mask"], None, |i| if i < n { Side::Chosen } else { Side::Rejected });
    let set = set_of(s, (0..n).map(|i| Unit { seqs: vec![i, i + n], kl: None }).collect());
    let head = instill::peft::head::load(&common::fixture("preference/reward"), &candle_core::Device::Cpu).unwrap();
    let head = candle_core::Var::from_tensor(&head).unwrap();
    let obj = reward::Reward { center_rewards_coefficient: Some(0.01) };
    let want = serde_json::json!({"loss": r["loss"], "rewards/accuracies": r["accuracy"], "rewards/margins": r["margin"]});
    check(&f, &obj, &set, None, Some((&head, "score.weight")), &want, "grads-reward");
}
