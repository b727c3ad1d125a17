//! Decoding-time tuning (proxy-tuning, EFT, contrastive decoding) on real models: the
//! steered greedy tokens are, step by step, the argmax of the formula computed from
//! three plain forward passes over the whole text; an expert equal to its anti-expert
//! changes nothing; models of different tokenizers are refused.
mod common;

use common::{fixture, load};
use instill::decode::steer::{self, Settings, Steer, Unit};
use instill::decode::{generate, GenerateOptions};
use instill::model::{Batch, LogitsFor};
use instill::{CausalLm, Tokenizer};
use std::sync::Arc;

const MODEL: &str = "smollm2-135m-instruct";

/// SmolLM2 with the fixture LoRA scaled up, so the expert differs visibly from the base.
fn tuned(alpha: u32) -> (CausalLm, Tokenizer) {
    let dir = lora_dir(alpha);
    let (mut m, tok) = load(MODEL, true);
    instill::peft::load_adapter(&mut m, &dir).unwrap();
    (m, tok)
}

/// The fixture LoRA with `lora_alpha` set, in a directory of its own (tests run at once).
fn lora_dir(alpha: u32) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = common::tmpdir(&format!("steer-lora-{alpha}-{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let src = fixture("lora");
    std::fs::copy(src.join("adapter_model.safetensors"), dir.join("adapter_model.safetensors")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap()).unwrap();
    cfg["lora_alpha"] = alpha.into();
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    dir
}

fn prompts(tok: &Tokenizer) -> Vec<Vec<u32>> {
    ["What is the capital of France?", "Write one sentence about the ocean and the stars at night."]
        .iter()
        .map(|q| tok.encode_chat(None, &[serde_json::json!({"role": "user", "content": q})]).unwrap())
        .collect()
}

fn steer(name: &str, s: Settings, main: &CausalLm, tok: &Tokenizer, companions: Vec<(Arc<CausalLm>, Arc<Tokenizer>)>) -> Arc<Steer> {
    let m = steer::method(name, &s).unwrap();
    let labels = vec!["test".to_string(); companions.len()];
    Arc::new(Steer::new(m, main, tok, companions.into_iter().map(|(m, t)| (Unit::own(m), t)).collect(), labels).unwrap())
}

/// Written out here, independently of the library's.
fn log_softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    x.iter().map(|&v| (v as f64 - lse) as f32).collect()
}

fn last_logits(m: &CausalLm, ids: &[u32]) -> Vec<f32> {
    m.forward(&Batch::single(ids, 0), None, LogitsFor::Last).unwrap().squeeze(0).unwrap().to_vec1().unwrap()
}

/// Check every generated token against the formula on full (uncached) forward passes;
/// returns how many tokens differ from the main model's own greedy choice.
fn check_against_reference(main: &CausalLm, tok: &Tokenizer, s: &Arc<Steer>, refs: &[&CausalLm], n: usize, formula: impl Fn(&[f32], &[Vec<f32>]) -> Vec<f32>) -> usize {
    let ps = prompts(tok);
    let opts = GenerateOptions { max_new_tokens: n, steer: Some(s.clone()), ..Default::default() };
    let gens = generate(main, tok, &ps, &opts, &mut |_, _| {}).unwrap();
    let mut differ = 0;
    for (p, g) in ps.iter().zip(&gens) {
        let mut text = p.clone();
        for &t in &g.tokens {
            let others: Vec<Vec<f32>> = refs.iter().map(|m| last_logits(m, &text)).collect();
            let own = last_logits(main, &text);
            let want = formula(&log_softmax(&own), &others.iter().map(|o| log_softmax(o)).collect::<Vec<_>>());
            let mut order: Vec<usize> = (0..want.len()).collect();
            order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
            // A near-tie may fall either way between cached and uncached numerics.
            if want[order[0]] - want[order[1]] > 1e-3 {
                assert_eq!(t as usize, order[0], "step {}: steered token {t} is not the formula's argmax {} ({})", text.len() - p.len(), order[0], s.describe());
            }
            let best_own = (0..own.len()).max_by(|&a, &b| own[a].total_cmp(&own[b])).unwrap();
            differ += usize::from(best_own != t as usize);
            text.push(t);
        }
    }
    differ
}

#[test]
fn proxy_tuning_follows_the_formula() {
    let (main, tok) = load(MODEL, true);
    let (expert, t1) = tuned(256);
    let (anti, t2) = load(MODEL, true);
    let (expert, anti) = (Arc::new(expert), Arc::new(anti));
    let s = steer("proxy", Settings { alpha: Some(1.0), beta: None }, &main, &tok, vec![(expert.clone(), Arc::new(t1)), (anti.clone(), Arc::new(t2))]);
    let differ = check_against_reference(&main, &tok, &s, &[&expert, &anti], 10, |m, c| (0..m.len()).map(|i| m[i] + (c[0][i] - c[1][i])).collect());
    assert!(differ > 0, "the expert changed no token: the test would not see a broken combination");
}

#[test]
fn expert_and_anti_expert_over_one_base_run_as_one_batch() {
    // The expert's LoRA is a per-row slot of the base the anti-expert uses bare: one
    // forward pass of 2n rows; the tokens still follow the formula on separate models.
    let (main, tok) = load(MODEL, true);
    let (expert, _) = tuned(256);
    let (anti, t) = load(MODEL, true);
    let (base, _) = load(MODEL, true);
    let dir = lora_dir(256);
    let unit = Unit::with_adapters(base, &[Some(dir.as_path()), None]).unwrap();
    let m = steer::method("proxy", &Settings::default()).unwrap();
    let s = Arc::new(Steer::new(m, &main, &tok, vec![(unit, Arc::new(t))], vec!["expert".into(), "anti".into()]).unwrap());
    let differ = check_against_reference(&main, &tok, &s, &[&expert, &anti], 10, |m, c| (0..m.len()).map(|i| m[i] + (c[0][i] - c[1][i])).collect());
    assert!(differ > 0);
}

#[test]
fn contrastive_decoding_follows_the_formula() {
    let (main, tok) = tuned(256);
    let (amateur, t1) = load(MODEL, true);
    let amateur = Arc::new(amateur);
    let s = steer("contrastive", Settings { alpha: Some(0.1), beta: Some(1.0) }, &main, &tok, vec![(amateur.clone(), Arc::new(t1))]);
    // Plausible: p >= 0.1 * max p; score 2 * main - amateur there.
    let differ = check_against_reference(&main, &tok, &s, &[&amateur], 8, |m, c| {
        let best = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (0..m.len()).map(|i| if m[i].exp() >= 0.1 * best.exp() { 2.0 * m[i] - c[0][i] } else { f32::NEG_INFINITY }).collect()
    });
    assert!(differ > 0, "the amateur changed no token");
}

#[test]
fn expert_equal_to_anti_expert_changes_nothing() {
    let (main, tok) = load(MODEL, true);
    let ps = prompts(&tok);
    let plain = generate(&main, &tok, &ps, &GenerateOptions { max_new_tokens: 16, ..Default::default() }, &mut |_, _| {}).unwrap();
    // Two separate copies of one tuned model: nothing is shared but the weights' values.
    let (e, t1) = tuned(256);
    let (a, t2) = tuned(256);
    let s = steer("proxy", Settings { alpha: Some(2.0), beta: None }, &main, &tok, vec![(Arc::new(e), Arc::new(t1)), (Arc::new(a), Arc::new(t2))]);
    let steered = generate(&main, &tok, &ps, &GenerateOptions { max_new_tokens: 16, steer: Some(s), ..Default::default() }, &mut |_, _| {}).unwrap();
    for (p, q) in plain.iter().zip(&steered) {
        assert_eq!(p.tokens, q.tokens);
    }
}

#[test]
fn eft_checks_scales_and_tokenizers_must_match() {
    let (main, tok) = load(MODEL, true);
    let (e, t1) = tuned(64);
    let (a, t2) = load(MODEL, true);
    let (e, a, t1, t2) = (Arc::new(e), Arc::new(a), Arc::new(t1), Arc::new(t2));
    let up = steer::method("eft-up", &Settings { alpha: None, beta: Some(1.0) }).unwrap();
    let labels = vec!["e".to_string(), "a".to_string()];
    let err = Steer::new(up, &main, &tok, vec![(Unit::own(e.clone()), t1.clone()), (Unit::own(a.clone()), t2.clone())], labels).unwrap_err().to_string();
    assert!(err.contains("up-scaling needs a base model larger"), "{err}");
    let (g, gt) = load("gemma3-270m", false);
    let proxy = steer::method("proxy", &Settings::default()).unwrap();
    let labels = vec!["e".to_string(), "gemma3-270m".to_string()];
    let err = Steer::new(proxy, &main, &tok, vec![(Unit::own(e), t1), (Unit::own(Arc::new(g)), Arc::new(gt))], labels).unwrap_err().to_string();
    assert!(err.contains("anti-expert model (gemma3-270m)") && err.contains("vocabularies differ"), "{err}");
    let err = steer::method("proxy", &Settings { alpha: None, beta: Some(1.0) }).err().unwrap().to_string();
    assert!(err.contains("takes no beta"), "{err}");
    assert!(steer::method("nope", &Settings::default()).err().unwrap().to_string().contains("unknown decoding method \"nope\""));
}
