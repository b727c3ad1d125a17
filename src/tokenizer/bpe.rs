//! A fast encoder for byte-level BPE tokenizers (GPT-2, SmolLM2, Qwen2, Llama 3).
//!
//! Hugging Face `tokenizers` is general: an Oniguruma regex per pre-tokenizer, a
//! `String` per token and a full `Encoding` per call. Rendering a dataset needs only ids
//! and byte offsets, so this encoder does just that: special tokens by Aho-Corasick, the
//! split pattern by a hand-written scanner (`pretok.rs`), merges on small id arrays, and
//! a per-thread cache of word encodings. It is built only when the tokenizer.json has
//! exactly a shape it reproduces; anything else stays with `tokenizers`. Tests check it
//! against `tokenizers` on every text in ../shared/data and on random strings.
use super::pretok::{split, Pattern};
use super::Span;
use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct FastBpe {
    id: usize,
    pattern: Pattern,
    nfc: bool,
    ignore_merges: bool,
    /// Token of each byte (None: the byte has none and is dropped).
    byte_ids: [Option<u32>; 256],
    /// (left, right) -> (rank, merged id)
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Whole words by their bytes (only used with `ignore_merges`).
    vocab: HashMap<Vec<u8>, u32>,
    specials: Option<(AhoCorasick, Vec<u32>)>,
}

/// Words longer than this are not cached (rare, and would bloat the cache).
const CACHE_WORD: usize = 48;
const CACHE_ENTRIES: usize = 1 << 18;
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// A word's tokens: (id, start, end) with byte offsets relative to the word.
type WordTokens = Vec<(u32, u32, u32)>;

thread_local! {
    /// (encoder id, word bytes -> tokens)
    static CACHE: RefCell<(usize, HashMap<Vec<u8>, WordTokens>)> = RefCell::new((usize::MAX, HashMap::new()));
}

/// GPT-2's map from bytes to the printable chars that stand for them in the vocabulary.
fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        out[b as usize] = if printable {
            b as char
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid char")
        };
    }
    out
}

impl FastBpe {
    /// The fast encoder for a tokenizer.json document, or None if it has a shape this
    /// encoder does not reproduce exactly.
    pub fn from_json(doc: &Value, split_patterns: &[(&str, Pattern)]) -> Result<Self, String> {
        let (pattern, nfc) = pre_tokenizer(doc, split_patterns).ok_or("normalizer or pre-tokenizer")?;
        let model = &doc["model"];
        let plain = model["type"] == "BPE"
            && model["dropout"].is_null()
            && model["continuing_subword_prefix"].as_str().unwrap_or("").is_empty()
            && model["end_of_word_suffix"].as_str().unwrap_or("").is_empty()
            && !model["byte_fallback"].as_bool().unwrap_or(false);
        if !plain {
            return Err("BPE model options".into());
        }
        let chars = byte_chars();
        let char_byte: HashMap<char, u8> = chars.iter().enumerate().map(|(b, c)| (*c, b as u8)).collect();
        let to_bytes = |t: &str| -> Option<Vec<u8>> { t.chars().map(|c| char_byte.get(&c).copied()).collect() };
        let vocab_json = model["vocab"].as_object().ok_or("vocab")?;
        let ignore_merges = model["ignore_merges"].as_bool().unwrap_or(false);
        let mut ids: HashMap<&str, u32> = HashMap::with_capacity(vocab_json.len());
        // Whole words are looked up only with `ignore_merges`.
        let mut vocab = HashMap::new();
        for (t, id) in vocab_json {
            let id = id.as_u64().ok_or("vocab id")? as u32;
            ids.insert(t, id);
            if ignore_merges {
                if let Some(b) = to_bytes(t) {
                    vocab.insert(b, id);
                }
            }
        }
        let mut byte_ids = [None; 256];
        for (b, c) in chars.iter().enumerate() {
            byte_ids[b] = ids.get(c.to_string().as_str()).copied();
        }
        let mut merges = HashMap::new();
        for (rank, m) in model["merges"].as_array().ok_or("merges")?.iter().enumerate() {
            let pair = match m {
                Value::String(s) => s.split_once(' '),
                Value::Array(a) => a.first().and_then(|l| l.as_str()).zip(a.get(1).and_then(|r| r.as_str())),
                _ => None,
            };
            let (l, r) = pair.ok_or_else(|| format!("merge {rank}"))?;
            let id = |t: &str| ids.get(t).copied().ok_or_else(|| format!("merge {rank}: {t:?} is not in the vocabulary"));
            let new = id(&format!("{l}{r}"))?;
            // Later duplicates replace earlier ones, as in `tokenizers`.
            merges.insert((id(l)?, id(r)?), (rank as u32, new));
        }
        let specials = added_tokens(doc).ok_or("added tokens")?;
        Ok(FastBpe { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), pattern, nfc, ignore_merges, byte_ids, merges, vocab, specials })
    }

    /// Ids and byte spans of `text`, or None when the text needs a normalisation this
    /// encoder does not do (the caller falls back to `tokenizers`).
    pub fn encode(&self, text: &str) -> Option<(Vec<u32>, Vec<Span>)> {
        if self.nfc && !text.is_ascii() && !unicode_normalization_alignments::is_nfc(text) {
            return None;
        }
        let mut ids = Vec::with_capacity(text.len() / 3);
        let mut spans = Vec::with_capacity(text.len() / 3);
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut plain = |a: usize, b: usize, ids: &mut Vec<u32>, spans: &mut Vec<Span>| {
            pieces.clear();
            split(self.pattern, &text[a..b], a, &mut pieces);
            for &(s, e) in &pieces {
                self.word(text, s, e, ids, spans);
            }
        };
        if let Some((ac, special_ids)) = &self.specials {
            for m in ac.find_iter(text) {
                plain(start, m.start(), &mut ids, &mut spans);
                ids.push(special_ids[m.pattern().as_usize()]);
                spans.push((m.start(), m.end()));
                start = m.end();
            }
        }
        plain(start, text.len(), &mut ids, &mut spans);
        Some((ids, spans))
    }

    /// Encode the word `text[s..e]`, pushing ids and spans.
    fn word(&self, text: &str, s: usize, e: usize, ids: &mut Vec<u32>, spans: &mut Vec<Span>) {
        let bytes = &text.as_bytes()[s..e];
        let mut push = |toks: &[(u32, u32, u32)]| {
            for &(id, a, b) in toks {
                ids.push(id);
                // Spans widen to whole chars: a token holding part of a char spans all of it.
                spans.push((floor_char(text, s + a as usize), ceil_char(text, s + b as usize)));
            }
        };
        if bytes.len() > CACHE_WORD {
            return push(&self.merge(bytes));
        }
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != self.id || c.1.len() > CACHE_ENTRIES {
                *c = (self.id, HashMap::new());
            }
            match c.1.get(bytes) {
                Some(hit) => push(hit),
                None => {
                    let toks = self.merge(bytes);
                    push(&toks);
                    c.1.insert(bytes.to_vec(), toks);
                }
            }
        });
    }

    /// Byte-pair merges, lowest rank first, leftmost among equals (as `tokenizers`):
    /// (id, start, end) per token, relative to the word. Bytes without a token are
    /// dropped, as `tokenizers` does when there is no unknown token.
    fn merge(&self, bytes: &[u8]) -> WordTokens {
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(bytes) {
                return vec![(id, 0, bytes.len() as u32)];
            }
        }
        let mut sym: Vec<(u32, u32, u32)> = bytes.iter().enumerate().filter_map(|(i, &b)| self.byte_ids[b as usize].map(|id| (id, i as u32, i as u32 + 1))).collect();
        let rank = |a: &(u32, u32, u32), b: &(u32, u32, u32)| self.merges.get(&(a.0, b.0)).copied();
        let mut ranks: Vec<Option<(u32, u32)>> = sym.windows(2).map(|w| rank(&w[0], &w[1])).collect();
        loop {
            let best = ranks.iter().enumerate().filter_map(|(i, r)| r.map(|r| (r.0, i, r.1))).min();
            let Some((_, i, new)) = best else { break };
            sym[i] = (new, sym[i].1, sym[i + 1].2);
            sym.remove(i + 1);
            ranks.remove(i);
            if i > 0 {
                ranks[i - 1] = rank(&sym[i - 1], &sym[i]);
            }
            if i < ranks.len() {
                ranks[i] = rank(&sym[i], &sym[i + 1]);
            }
        }
        sym
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// The split pattern and whether NFC comes first, for the pre-tokenizer shapes we know.
fn pre_tokenizer(doc: &Value, split_patterns: &[(&str, Pattern)]) -> Option<(Pattern, bool)> {
    let nfc = match &doc["normalizer"] {
        Value::Null => false,
        n if n["type"] == "NFC" => true,
        _ => return None,
    };
    let byte_level = |v: &Value, regex: bool| v["type"] == "ByteLevel" && v["use_regex"].as_bool() == Some(regex) && !v["add_prefix_space"].as_bool().unwrap_or(false);
    let pre = &doc["pre_tokenizer"];
    if byte_level(pre, true) {
        return Some((Pattern::Gpt2 { digits: false }, nfc));
    }
    let seq = pre["pretokenizers"].as_array().filter(|_| pre["type"] == "Sequence")?;
    match seq.as_slice() {
        [d, b] if d["type"] == "Digits" && d["individual_digits"] == true && byte_level(b, true) => Some((Pattern::Gpt2 { digits: true }, nfc)),
        [s, b] if s["type"] == "Split" && s["behavior"] == "Isolated" && s["invert"] == false && byte_level(b, false) => {
            let re = s["pattern"]["Regex"].as_str()?;
            split_patterns.iter().find(|(p, _)| *p == re).map(|(_, k)| (*k, nfc))
        }
        _ => None,
    }
}

/// Aho-Corasick over the added tokens (leftmost-longest, as `tokenizers` matches them),
/// and their ids; Some(None) when there are none, None for options we do
/// not reproduce (lstrip, rstrip, single_word, normalized tokens under NFC).
#[allow(clippy::type_complexity)]
fn added_tokens(doc: &Value) -> Option<Option<(AhoCorasick, Vec<u32>)>> {
    let added = doc["added_tokens"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if added.is_empty() {
        return Some(None);
    }
    let mut contents = vec![];
    let mut ids = vec![];
    for t in added {
        let tricky = ["lstrip", "rstrip", "single_word"].iter().any(|k| t[k].as_bool().unwrap_or(false));
        if tricky || (t["normalized"].as_bool().unwrap_or(true) && !doc["normalizer"].is_null()) {
            return None;
        }
        contents.push(t["content"].as_str()?.to_string());
        ids.push(t["id"].as_u64()? as u32);
    }
    let ac = AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&contents).ok()?;
    Some(Some((ac, ids)))
}
