//! Properties every forward path must keep: the KV cache, batching with left padding
//! and packing with segments change no result; export to a HF dir round-trips.
mod common;

use common::{load, max_abs_diff, tmpdir};
use instill::decode::{generate, GenerateOptions, SamplingParams};
use instill::model::{Batch, LogitsFor};
use instill::{hub::ModelSource, CausalLm, LoadOptions};

const TOL: f32 = 1e-4;

fn ids(tok: &instill::Tokenizer, s: &str) -> Vec<u32> {
    tok.encode(s, true).unwrap()
}

#[test]
fn kv_cache_decode_matches_full_forward() {
    let (m, tok) = load("smollm2-135m-instruct", true);
    let p = ids(&tok, "The quick brown fox jumps over the lazy dog because");
    let full = m.forward(&Batch::single(&p, 0), None, LogitsFor::All).unwrap().squeeze(0).unwrap();
    let mut cache = m.new_cache();
    let split = 5;
    m.forward(&Batch::single(&p[..split], 0), Some(&mut cache), LogitsFor::All).unwrap();
    for i in split..p.len() {
        let step = m.forward(&Batch::single(&p[i..=i], i as u32), Some(&mut cache), LogitsFor::Last).unwrap();
        let want = full.get(i).unwrap().unsqueeze(0).unwrap();
        let d = max_abs_diff(&step, &want);
        assert!(d < TOL, "position {i}: cached decode differs from full forward by {d}");
    }
}

#[test]
fn left_padded_batch_matches_single_rows() {
    // Dequantized: batched decoding of a quantized model uses multi-row kernels whose
    // float sums differ in order from the one-row kernel (logits move by ~1e-2 to 1e-1,
    // as the Q8 rounding of activations amplifies), which can flip a near-tie; padding
    // and masking are what this test is about.
    let (m, tok) = load("smollm2-135m-instruct", true);
    let prompts = vec![ids(&tok, "Hello there"), ids(&tok, "Write a haiku about the sea and the wind at night")];
    let batch = Batch::left_padded(&prompts, 0).unwrap();
    let both = m.forward(&batch, None, LogitsFor::Last).unwrap();
    for (r, p) in prompts.iter().enumerate() {
        let one = m.forward(&Batch::single(p, 0), None, LogitsFor::Last).unwrap();
        let d = max_abs_diff(&both.get(r).unwrap().unsqueeze(0).unwrap(), &one);
        assert!(d < 1e-3, "row {r}: padded batch differs by {d}");
    }
    let opts = GenerateOptions { max_new_tokens: 12, ..Default::default() };
    let together = generate(&m, &tok, &prompts, &opts, &mut |_, _| {}).unwrap();
    for (r, p) in prompts.iter().enumerate() {
        let alone = generate(&m, &tok, std::slice::from_ref(p), &opts, &mut |_, _| {}).unwrap();
        assert_eq!(together[r].tokens, alone[0].tokens, "row {r}: batched greedy output differs");
    }
    // Rows that finish early leave the batch; the others go on exactly as alone. A stop
    // string taken from one row's own output ends that row first.
    let three = vec![prompts[0].clone(), prompts[1].clone(), ids(&tok, "The three primary colours are")];
    let first = generate(&m, &tok, &three[..1], &opts, &mut |_, _| {}).unwrap();
    let stop: String = first[0].text.chars().take(4).collect();
    let opts = GenerateOptions { stop_strings: vec![stop], ..opts };
    let together = generate(&m, &tok, &three, &opts, &mut |_, _| {}).unwrap();
    assert!(together[0].tokens.len() < together.iter().map(|g| g.tokens.len()).max().unwrap(), "row 0 should finish first");
    for (r, p) in three.iter().enumerate() {
        let alone = generate(&m, &tok, std::slice::from_ref(p), &opts, &mut |_, _| {}).unwrap();
        assert_eq!((&together[r].tokens, &together[r].text), (&alone[0].tokens, &alone[0].text), "row {r} after others finished");
    }
}

#[test]
fn packed_segments_match_separate_sequences() {
    let (m, tok) = load("smollm2-135m-instruct", true);
    let a = ids(&tok, "Paris is the capital of");
    let b = ids(&tok, "One, two, three, four");
    let n = a.len() + b.len();
    let packed = Batch {
        tokens: vec![[a.clone(), b.clone()].concat()],
        positions: vec![(0..a.len() as u32).chain(0..b.len() as u32).collect()],
        segments: vec![(0..n).map(|i| u32::from(i >= a.len())).collect()],
        valid: vec![vec![true; n]],
    };
    let out = m.forward(&packed, None, LogitsFor::All).unwrap().squeeze(0).unwrap();
    let la = m.forward(&Batch::single(&a, 0), None, LogitsFor::All).unwrap().squeeze(0).unwrap();
    let lb = m.forward(&Batch::single(&b, 0), None, LogitsFor::All).unwrap().squeeze(0).unwrap();
    assert!(max_abs_diff(&out.narrow(0, 0, a.len()).unwrap(), &la) < TOL);
    assert!(max_abs_diff(&out.narrow(0, a.len(), b.len()).unwrap(), &lb) < TOL);
}

#[test]
fn sampling_is_seeded() {
    let (m, tok) = load("smollm2-135m-instruct", false);
    let p = vec![ids(&tok, "Tell me a story about a robot")];
    let run = |seed| {
        let sampling = SamplingParams { temperature: 1.0, top_p: 0.95, seed, ..Default::default() };
        let opts = GenerateOptions { max_new_tokens: 24, sampling, ..Default::default() };
        generate(&m, &tok, &p, &opts, &mut |_, _| {}).unwrap().remove(0).tokens
    };
    assert_eq!(run(1), run(1), "same seed, same output");
    assert_ne!(run(1), run(2), "different seeds should differ over 24 sampled tokens");
}

#[test]
fn stop_strings_and_max_tokens() {
    let (m, tok) = load("smollm2-135m-instruct", false);
    let p = vec![ids(&tok, "1, 2, 3, 4, 5,")];
    let opts = GenerateOptions { max_new_tokens: 20, stop_strings: vec!["8".into()], ..Default::default() };
    let g = generate(&m, &tok, &p, &opts, &mut |_, _| {}).unwrap().remove(0);
    assert_eq!(g.finish, instill::decode::FinishReason::StopString, "{g:?}");
    assert!(!g.text.contains('8') && g.text.contains('7'), "{:?}", g.text);
    let opts = GenerateOptions { max_new_tokens: 3, ..Default::default() };
    let g = generate(&m, &tok, &p, &opts, &mut |_, _| {}).unwrap().remove(0);
    assert_eq!((g.tokens.len(), g.finish), (3, instill::decode::FinishReason::Length));
}

fn export_roundtrip(id: &str, shard_bytes: usize) {
    let (m, tok) = load(id, true);
    let dir = tmpdir(&format!("export-{id}-{shard_bytes}"));
    let out = dir.join("hf");
    let tj = serde_json::to_vec(&tok.json).unwrap();
    instill::model::weights::save_hf_dir(&out, m.arch, &m.config, m.named_tensors().unwrap(), candle_core::DType::F32, shard_bytes, &[("tokenizer.json", tj)]).unwrap();
    let back = CausalLm::load(&ModelSource::HfDir(out.clone()), &LoadOptions::default()).unwrap();
    let tok2 = instill::Tokenizer::from_hf_dir(&out).unwrap();
    let p = ids(&tok, "Exported models keep their logits 12345");
    assert_eq!(tok2.encode("Exported models keep their logits 12345", false).unwrap(), tok.encode("Exported models keep their logits 12345", false).unwrap());
    let a = m.forward(&Batch::single(&p, 0), None, LogitsFor::All).unwrap();
    let b = back.forward(&Batch::single(&p, 0), None, LogitsFor::All).unwrap();
    let d = max_abs_diff(&a, &b);
    assert!(d < 1e-5, "{id}: logits after HF export differ by {d}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn export_to_hf_dir_roundtrips() {
    export_roundtrip("smollm2-135m-instruct", 2_000_000_000);
}

#[test]
fn export_sharded_roundtrips() {
    export_roundtrip("tiny-random-llama", 20_000);
}

#[test]
fn continuous_batching_matches_single_rows() {
    // Two places for five prompts of different lengths: rows finish at different steps
    // (a stop string, the token limit), waiting prompts join the running batch left-padded,
    // and each must go on exactly as it would alone, sampled ones included (each prompt
    // has its own stream).
    use instill::decode::generate::Decoder;
    let (m, tok) = load("smollm2-135m-instruct", true);
    let texts = ["Hello there", "Write a haiku about the sea and the wind at night", "The three primary colours are", "Once upon a time", "List four prime numbers:"];
    let prompts: Vec<Vec<u32>> = texts.iter().map(|t| ids(&tok, t)).collect();
    let greedy = GenerateOptions { max_new_tokens: 10, ..Default::default() };
    let first = generate(&m, &tok, &prompts[..1], &greedy, &mut |_, _| {}).unwrap();
    let stop: String = first[0].text.chars().take(3).collect();
    let sampled = SamplingParams { temperature: 0.9, top_p: 0.95, seed: 7, ..Default::default() };
    for opts in [GenerateOptions { stop_strings: vec![stop], ..greedy.clone() }, GenerateOptions { sampling: sampled, streams: vec![11, 12, 13, 14, 15], ..greedy.clone() }] {
        let mut dec = Decoder::new(&m, &tok, &prompts, &opts, 2).unwrap();
        let mut got = vec![None; prompts.len()];
        let mut steps = 0;
        while !dec.is_done() {
            for (i, g) in dec.step(&mut |_, _| {}).unwrap() {
                assert!(got[i].replace(g).is_none(), "prompt {i} finished twice");
            }
            steps += 1;
        }
        assert!(steps > opts.max_new_tokens + 1, "the five prompts never queued behind two places");
        for (i, p) in prompts.iter().enumerate() {
            let one = GenerateOptions { streams: opts.streams.get(i).map(|&s| vec![s]).unwrap_or_default(), ..opts.clone() };
            let alone = generate(&m, &tok, std::slice::from_ref(p), &one, &mut |_, _| {}).unwrap().remove(0);
            let g = got[i].take().expect("every prompt finishes");
            assert_eq!((&g.tokens, &g.text, g.finish), (&alone.tokens, &alone.text, alone.finish), "prompt {i} in the continuous batch");
        }
    }
}
