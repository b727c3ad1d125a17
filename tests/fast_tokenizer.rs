//! Our byte-level BPE encoder against Hugging Face `tokenizers` with the same
//! tokenizer.json: ids and byte offsets equal on every string in ../shared/data, on the
//! rendered chat texts, and on random strings built to hit the pattern's corners.
mod common;

use instill::Tokenizer;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// Byte-level BPE families with their registry ids.
const MODELS: &[&str] = &["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"];

fn assert_same(tok: &Tokenizer, text: &str, what: &str) {
    let fast = tok.encode_with_offsets(text).unwrap();
    let reference = tok.encode_reference(text).unwrap();
    if fast != reference {
        let at = fast.0.iter().zip(&reference.0).position(|(a, b)| a != b).unwrap_or(fast.0.len().min(reference.0.len()));
        let lo = at.saturating_sub(3);
        panic!(
            "{what}: encoders differ at token {at}\n text {:?}\n fast {:?} {:?}\n  ref {:?} {:?}",
            &text[reference.1.get(lo).map_or(0, |s| s.0)..text.len().min(reference.1.get(at + 3).map_or(text.len(), |s| s.1))],
            &fast.0[lo..(at + 3).min(fast.0.len())],
            &fast.1[lo..(at + 3).min(fast.1.len())],
            &reference.0[lo..(at + 3).min(reference.0.len())],
            &reference.1[lo..(at + 3).min(reference.1.len())],
        );
    }
}

fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Every string value in the JSON and JSONL files under ../shared/data.
fn shared_strings() -> Option<Vec<String>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if !root.exists() {
        eprintln!("skipped: ../shared/data is not here");
        return None;
    }
    let mut files = vec![];
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "jsonl")) {
                files.push(p);
            }
        }
    }
    let mut out = vec![];
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let docs: Vec<serde_json::Value> = match serde_json::from_str(&text) {
            Ok(v) => vec![v],
            Err(_) => text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect(),
        };
        docs.iter().for_each(|d| strings(d, &mut out));
    }
    Some(out)
}

#[test]
fn fast_encoder_equals_tokenizers_on_all_shared_data() {
    let Some(texts) = shared_strings() else { return };
    assert!(texts.len() > 10_000, "{} strings", texts.len());
    for id in MODELS {
        let tok = common::load_tokenizer(id);
        assert!(tok.has_fast_encoder(), "{id} should use the fast encoder: {}", tok.encoder_name());
        texts.par_iter().for_each(|t| assert_same(&tok, t, id));
        // Rendered chats put special tokens between texts.
        let tmpl = tok.template(None).unwrap();
        texts.par_chunks(3).take(2000).for_each(|c| {
            let msgs: Vec<_> = c.iter().enumerate().map(|(i, t)| serde_json::json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": t})).collect();
            assert_same(&tok, &tmpl.render(&msgs, true, None).unwrap(), id);
        });
    }
}

/// Characters chosen for the pattern's corners: contractions, digits (ASCII and not),
/// letters without case, combining marks, every kind of whitespace, punctuation runs,
/// multi-byte chars split across tokens, and special-token text.
const PIECES: &[&str] = &[
    "a",
    "Z",
    "é",
    "ß",
    "ſ",
    "K",
    "日本",
    "한",
    "ـ",
    "\u{0301}",
    "\u{200d}",
    "1",
    "42",
    "٣",
    "½",
    "Ⅻ",
    "²",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\u{a0}",
    "\u{3000}",
    "\u{2028}",
    "\u{85}",
    "\u{b}",
    "'s",
    "'S",
    "'re",
    "'LL",
    "'d",
    "'",
    "\"",
    "...",
    "!?",
    "(",
    ")",
    "-",
    "_",
    "—",
    "😀",
    "🇫🇷",
    "\u{fe0f}",
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "<|im_",
    "Ġ",
    "\u{0}",
    "x\u{7f}",
];

#[test]
fn fast_encoder_equals_tokenizers_on_random_strings() {
    for id in MODELS {
        let tok = common::load_tokenizer(id);
        (0..4000u64).into_par_iter().for_each(|seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let n = rng.gen_range(1..40);
            let text: String = (0..n).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect();
            assert_same(&tok, &text, id);
        });
    }
}
