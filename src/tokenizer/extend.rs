//! Vocabulary extension for Learned Embedding Propagation (Tikhomirov & Chernyshev 2024):
//! new BPE merges learned on a corpus, continuing the tokenizer's own. Each word (a
//! pre-token of the model's pre-tokenizer) starts as the model tokenizes it; the most
//! frequent adjacent pair becomes a new token, merged everywhere, until `new_tokens` are
//! made or no pair occurs `min_freq` times. The merges are appended after the existing
//! ones (lowest priority), so every text tokenizes as before up to the new merges, which
//! apply only to pairs no old merge joins. Written by hand because `tokenizers`'
//! trainers start from characters and cannot continue an existing vocabulary.
use super::Tokenizer;
use crate::{Error, Result};
use serde_json::Value;
use std::collections::HashMap;

/// A new token: its string (in the vocabulary's byte-level form), id, and the original
/// tokens it spells (for the mean-of-sub-token initialisation).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewToken {
    pub token: String,
    pub id: u32,
    pub parts: Vec<u32>,
}

pub struct Extension {
    /// The extended `tokenizer.json`.
    pub json: Value,
    pub added: Vec<NewToken>,
}

/// Learn up to `new_tokens` merges on `texts`; new ids start at `first_id` (at least the
/// model's embedding rows, so none lands on a padding row another tool might use).
pub fn learn(tok: &Tokenizer, texts: &[String], new_tokens: usize, min_freq: usize, first_id: u32) -> Result<Extension> {
    let model = &tok.json["model"];
    if model["type"].as_str() != Some("BPE") || !model["vocab"].is_object() {
        return Err(Error::Tokenizer("vocabulary extension needs a BPE tokenizer (tokenizer.json model type \"BPE\")".into()));
    }
    let mut words: HashMap<Vec<u32>, u64> = HashMap::new();
    for t in texts {
        for (a, b) in tok.pieces(t)? {
            *words.entry(tok.encode(&t[a..b], false)?).or_default() += 1;
        }
    }
    let mut words: Vec<(Vec<u32>, u64)> = words.into_iter().collect();
    words.sort();
    let mut strings: HashMap<u32, String> = HashMap::new();
    let mut parts: HashMap<u32, Vec<u32>> = HashMap::new();
    let known: std::collections::HashSet<String> = model["vocab"].as_object().expect("checked").keys().cloned().collect();
    let mut banned = std::collections::HashSet::new();
    let mut added = vec![];
    let mut next = first_id;
    while added.len() < new_tokens {
        let Some(((a, b), n)) = best_pair(&words, &banned) else { break };
        if n < min_freq as u64 {
            break;
        }
        let s = |id: u32, strings: &HashMap<u32, String>| strings.get(&id).cloned().or_else(|| tok.id_to_token(id));
        let (Some(sa), Some(sb)) = (s(a, &strings), s(b, &strings)) else {
            banned.insert((a, b));
            continue;
        };
        let joined = format!("{sa}{sb}");
        if known.contains(&joined) || strings.values().any(|v| *v == joined) {
            // An old token no merge of this order reaches: adding it twice is impossible.
            banned.insert((a, b));
            continue;
        }
        let p: Vec<u32> = [a, b].iter().flat_map(|x| parts.get(x).cloned().unwrap_or_else(|| vec![*x])).collect();
        for (w, _) in &mut words {
            merge(w, (a, b), next);
        }
        strings.insert(next, joined.clone());
        parts.insert(next, p.clone());
        added.push((NewToken { token: joined, id: next, parts: p }, (sa, sb)));
        next += 1;
    }
    let json = extended_json(&tok.json, &added)?;
    Ok(Extension { json, added: added.into_iter().map(|(t, _)| t).collect() })
}

/// The most frequent adjacent pair (ties: the smallest ids), with its count.
fn best_pair(words: &[(Vec<u32>, u64)], banned: &std::collections::HashSet<(u32, u32)>) -> Option<((u32, u32), u64)> {
    let mut counts: HashMap<(u32, u32), u64> = HashMap::new();
    for (w, n) in words {
        for p in w.windows(2) {
            *counts.entry((p[0], p[1])).or_default() += n;
        }
    }
    counts.into_iter().filter(|(p, _)| !banned.contains(p)).max_by(|x, y| x.1.cmp(&y.1).then(y.0.cmp(&x.0)))
}

/// Replace every non-overlapping `pair` in `w`, left to right, by `id`.
fn merge(w: &mut Vec<u32>, pair: (u32, u32), id: u32) {
    let mut out = Vec::with_capacity(w.len());
    let mut i = 0;
    while i < w.len() {
        if i + 1 < w.len() && (w[i], w[i + 1]) == pair {
            out.push(id);
            i += 2;
        } else {
            out.push(w[i]);
            i += 1;
        }
    }
    *w = out;
}

/// `json` with the new tokens in `model.vocab` and their merges after the old ones, in
/// the file's own merge notation (`"a b"` strings or `["a", "b"]` pairs).
fn extended_json(json: &Value, added: &[(NewToken, (String, String))]) -> Result<Value> {
    let mut out = json.clone();
    let model = &mut out["model"];
    let pairs = model["merges"].as_array().and_then(|m| m.first()).is_some_and(Value::is_array);
    let vocab = model["vocab"].as_object_mut().ok_or_else(|| Error::Tokenizer("tokenizer.json: model.vocab is not an object".into()))?;
    for (t, _) in added {
        vocab.insert(t.token.clone(), t.id.into());
    }
    let merges = model["merges"].as_array_mut().ok_or_else(|| Error::Tokenizer("tokenizer.json: model.merges is not a list".into()))?;
    for (_, (a, b)) in added {
        merges.push(if pairs { serde_json::json!([a, b]) } else { format!("{a} {b}").into() });
    }
    Ok(out)
}
