//! Build a `tokenizers` tokenizer from GGUF metadata.
//!
//! GGUF stores the vocabulary, merges (or SentencePiece scores) and a `pre` name; the
//! pre-tokenizer, normalizer and decoder must be chosen from that name, exactly as the
//! original tokenizer.json had them. We emit a tokenizer.json document and load it,
//! which also gives us a tokenizer.json to write next to exported models.
use crate::model::gguf::Metadata;
use crate::{Error, Result};
use serde_json::{json, Value};
use std::collections::HashMap;

// GGUF token types.
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// Pre-tokenizer split patterns of the byte-level BPE families (from their tokenizer.json).
pub(super) const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(super) const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer.json document for a GGUF file's tokenizer.
pub fn tokenizer_json(md: &Metadata) -> Result<Value> {
    let model = md.str("tokenizer.ggml.model")?;
    let tokens = md.str_array("tokenizer.ggml.tokens")?;
    let types = md.i32_array("tokenizer.ggml.token_type").unwrap_or_else(|_| vec![1; tokens.len()]);
    let added = added_tokens(&tokens, &types);
    let mut doc = match model {
        "gpt2" => byte_level_bpe(md, &tokens)?,
        "llama" => sentencepiece_bpe(md, &tokens, &types)?,
        other => return Err(Error::file(&md.path, format!("tokenizer model {other:?} is not supported (instill reads \"gpt2\" byte-level BPE and \"llama\" SentencePiece)"))),
    };
    doc["version"] = "1.0".into();
    doc["truncation"] = Value::Null;
    doc["padding"] = Value::Null;
    doc["added_tokens"] = added.into();
    doc["post_processor"] = Value::Null;
    Ok(doc)
}

fn added_tokens(tokens: &[String], types: &[i32]) -> Vec<Value> {
    tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, &t))| t == CONTROL || t == USER_DEFINED)
        .map(|(id, (content, &t))| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": t == CONTROL})
        })
        .collect()
}

fn vocab_map(tokens: &[String]) -> serde_json::Map<String, Value> {
    // Later duplicates must not shadow earlier ids.
    let mut m = serde_json::Map::new();
    for (i, t) in tokens.iter().enumerate() {
        m.entry(t.clone()).or_insert(i.into());
    }
    m
}

fn byte_level_bpe(md: &Metadata, tokens: &[String]) -> Result<Value> {
    let pre = md.opt_str("tokenizer.ggml.pre").unwrap_or("default");
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    let (normalizer, pre_tok) = match pre {
        "smollm" => (Value::Null, json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]})),
        "qwen2" => (json!({"type": "NFC"}), json!({"type": "Sequence", "pretokenizers": [split(QWEN2_PATTERN), byte_level(false)]})),
        "llama-bpe" | "llama3" => (Value::Null, json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_PATTERN), byte_level(false)]})),
        "default" | "gpt2" | "gpt-2" => (Value::Null, byte_level(true)),
        other => return Err(Error::file(&md.path, format!("tokenizer pre-tokenizer {other:?} is not supported (known: smollm, qwen2, llama-bpe, gpt2, default)"))),
    };
    let merges = md.str_array("tokenizer.ggml.merges")?;
    Ok(json!({
        "normalizer": normalizer,
        "pre_tokenizer": pre_tok,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab_map(tokens), "merges": merges},
    }))
}

fn sentencepiece_bpe(md: &Metadata, tokens: &[String], types: &[i32]) -> Result<Value> {
    let scores = md.f32_array("tokenizer.ggml.scores")?;
    if scores.len() != tokens.len() {
        return Err(Error::file(&md.path, "tokenizer.ggml.scores and tokenizer.ggml.tokens differ in length"));
    }
    let add_space = md.opt_bool("tokenizer.ggml.add_space_prefix").unwrap_or(true);
    let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let normalizer = if add_space { json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, replace]}) } else { replace };
    let mut decoders = vec![json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}), json!({"type": "ByteFallback"}), json!({"type": "Fuse"})];
    if add_space {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let unk = md.opt_usize("tokenizer.ggml.unknown_token_id").and_then(|i| tokens.get(i)).cloned();
    Ok(json!({
        "normalizer": normalizer,
        "pre_tokenizer": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab_map(tokens), "merges": spm_merges(tokens, types, &scores)},
    }))
}

/// Merges implied by SentencePiece scores, as Hugging Face's SentencePieceExtractor
/// derives them: every split of a piece into two pieces, best-scored piece first.
fn spm_merges(tokens: &[String], types: &[i32], scores: &[f32]) -> Vec<Value> {
    let mergeable = |i: usize| !matches!(types[i], CONTROL | BYTE | UNUSED);
    let ids: HashMap<&str, usize> = tokens.iter().enumerate().filter(|(i, _)| mergeable(*i)).map(|(i, t)| (t.as_str(), i)).collect();
    // (score of the merged piece, left length, right length, left id, right id, pair)
    type Merge<'a> = (f32, usize, usize, usize, usize, [&'a str; 2]);
    let mut merges: Vec<Merge> = vec![];
    for (i, piece) in tokens.iter().enumerate() {
        if !mergeable(i) {
            continue;
        }
        let mut local = vec![];
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&li), Some(&ri)) = (ids.get(l), ids.get(r)) {
                local.push((li, ri, l.chars().count(), r.chars().count(), [l, r]));
            }
        }
        local.sort_by_key(|x| (x.0, x.1));
        merges.extend(local.into_iter().map(|(li, ri, ll, rl, m)| (scores[i], ll, rl, li, ri, m)));
    }
    // Descending by (score, len(left), len(right)); stable, like Python's sorted(reverse=True).
    merges.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
    // Pairs, not "l r" strings: SentencePiece pieces may contain spaces.
    merges.into_iter().map(|m| json!(m.5)).collect()
}
