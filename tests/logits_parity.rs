//! Forward-pass parity with transformers (fp32 on the GGUF's dequantized weights):
//! logits within TOL at every recorded position, and greedy continuations token for token.
//! Fixtures: tests/fixtures/logits/*.json, made by tests/fixtures/gen/make_logits.py.
mod common;

use common::{load, read_json};
use instill::decode::{generate, GenerateOptions};
use instill::model::{Batch, LogitsFor};

/// Absolute tolerance on logits (magnitudes are ~10-40): f32 vs f32 with a different
/// summation order.
const TOL: f32 = 5e-4;

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn check(family: &str, id: &str) {
    let fx = read_json(&format!("logits/{family}.json"));
    let (m, tok) = load(id, true);
    let probe = ids_of(&fx["probe_ids"]);
    let mut worst = 0f32;
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let ids = ids_of(&case["ids"]);
        let logits = m.forward(&Batch::single(&ids, 0), None, LogitsFor::All).unwrap().squeeze(0).unwrap();
        for row in case["rows"].as_array().unwrap() {
            let p = row["position"].as_u64().unwrap() as usize;
            let ours = logits.get(p).unwrap().to_vec1::<f32>().unwrap();
            let mut check_one = |tid: usize, want: f32, what: &str| {
                let d = (ours[tid] - want).abs();
                worst = worst.max(d);
                assert!(d < TOL, "{family}/{name} position {p} {what} token {tid}: {} vs reference {want}", ours[tid]);
            };
            for pair in row["top"].as_array().unwrap() {
                check_one(pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap() as f32, "top-20");
            }
            for (tid, v) in probe.iter().zip(row["probe"].as_array().unwrap()) {
                check_one(*tid as usize, v.as_f64().unwrap() as f32, "probe");
            }
            // In f64: summing 150k f32 terms would itself be off by more than TOL.
            let max = ours.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let lse = max + ours.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            let want = row["logsumexp"].as_f64().unwrap();
            assert!((lse - want).abs() < TOL as f64, "{family}/{name} position {p}: logsumexp {lse} vs {want}");
            assert_eq!(instill::decode::sampler::argmax(&ours), row["argmax"].as_u64().unwrap() as u32, "{family}/{name} position {p}: argmax");
        }
        if let Some(greedy) = case.get("greedy") {
            let want = ids_of(greedy);
            // The reference ran generate(min_new_tokens=24): EOS is masked, not just skipped.
            let opts = GenerateOptions { max_new_tokens: want.len(), min_new_tokens: want.len(), ..Default::default() };
            let got = generate(&m, &tok, std::slice::from_ref(&ids), &opts, &mut |_, _| {}).unwrap().remove(0).tokens;
            assert_eq!(got, want, "{family}/{name}: greedy continuation differs from transformers");
        }
    }
    eprintln!("{family}: max |logit difference| {worst:.2e} (tolerance {TOL:.0e})");
}

#[test]
fn smollm2_matches_transformers() {
    check("smollm2", "smollm2-135m-instruct");
}

#[test]
fn qwen2_matches_transformers() {
    check("qwen2", "qwen2.5-coder-0.5b-instruct");
}

#[test]
fn gemma3_matches_transformers() {
    check("gemma3", "gemma3-270m");
}

/// The quantized path (8-bit activations against the blocks, as llama.cpp does) is not
/// bit-equal to the reference; it must still pick the same tokens nearly everywhere.
#[test]
fn quantized_path_stays_close() {
    for (family, id) in [("smollm2", "smollm2-135m-instruct"), ("qwen2", "qwen2.5-coder-0.5b-instruct"), ("gemma3", "gemma3-270m")] {
        let fx = read_json(&format!("logits/{family}.json"));
        let (m, _) = load(id, false);
        let (mut agree, mut total) = (0, 0);
        for case in fx["cases"].as_array().unwrap() {
            let ids = ids_of(&case["ids"]);
            // One token at a time, so every projection takes the quantized decode kernels.
            let mut cache = m.new_cache();
            let mut last = None;
            let rows: std::collections::HashMap<usize, u32> =
                case["rows"].as_array().unwrap().iter().map(|r| (r["position"].as_u64().unwrap() as usize, r["argmax"].as_u64().unwrap() as u32)).collect();
            for (p, &t) in ids.iter().enumerate() {
                let l = m.forward(&Batch::single(&[t], p as u32), Some(&mut cache), LogitsFor::Last).unwrap();
                last = Some(instill::decode::sampler::argmax(&l.squeeze(0).unwrap().to_vec1::<f32>().unwrap()));
                if let Some(&want) = rows.get(&p) {
                    total += 1;
                    agree += usize::from(last == Some(want));
                }
            }
            assert!(last.is_some());
        }
        let rate = agree as f64 / total as f64;
        eprintln!("{family}: quantized path picks the reference argmax at {agree}/{total} positions");
        assert!(rate >= 0.85, "{family}: quantized path agrees with the reference argmax at only {rate:.2}");
    }
}
