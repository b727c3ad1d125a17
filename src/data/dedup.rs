//! Duplicate removal and contamination checks.
//!
//! Exact duplicates: same text after lower-casing and collapsing whitespace. Near
//! duplicates: MinHash signatures over word 5-gram shingles with LSH banding, then a
//! check of the estimated Jaccard similarity. Contamination: word n-grams shared between
//! a training set and an evaluation set. Written here because no crate does MinHash/LSH
//! over our records without pulling in a larger text-processing stack.
use super::{Example, Record};
use std::collections::{HashMap, HashSet};

/// The text a record is compared by: every turn's content, in order.
pub fn record_text(e: &Example) -> String {
    let msgs: Vec<&super::Message> = match e {
        Example::Sft(c) | Example::Labelled(c, _) | Example::Scored(c, _) => c.messages.iter().collect(),
        Example::Preference(p) => p.prompt.iter().chain(&p.chosen).collect(),
    };
    msgs.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

fn mix64(mut x: u64) -> u64 {
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

fn hash_str(s: &str) -> u64 {
    // FNV-1a, then mixed.
    let mut h = 0xcbf29ce484222325u64;
    for b in s.as_bytes() {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    mix64(h)
}

fn ngram_hashes(w: &[String], n: usize) -> HashSet<u64> {
    if w.len() < n {
        return std::iter::once(hash_str(&w.join(" "))).collect();
    }
    w.windows(n).map(|g| hash_str(&g.join(" "))).collect()
}

pub const PERMUTATIONS: usize = 128;
const BANDS: usize = 32;
const SHINGLE: usize = 5;

pub fn minhash(text: &str) -> Vec<u64> {
    let shingles = ngram_hashes(&words(text), SHINGLE);
    (0..PERMUTATIONS as u64).map(|i| shingles.iter().map(|&s| mix64(s ^ mix64(i + 1))).min().unwrap_or(u64::MAX)).collect()
}

pub fn estimated_jaccard(a: &[u64], b: &[u64]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

#[derive(Debug, Default)]
pub struct DedupReport {
    pub exact: usize,
    pub near: usize,
    /// (removed index, index of the kept record it duplicates)
    pub removed: Vec<(usize, usize)>,
}

/// Indices of the records to keep (first occurrence wins), and what was removed.
/// `near` is a Jaccard threshold in (0, 1]; None does exact deduplication only.
pub fn dedup(records: &[Record], near: Option<f64>) -> (Vec<usize>, DedupReport) {
    dedup_texts(records.iter().map(|r| record_text(&r.example)), near)
}

/// [`dedup`] over the records' texts as a stream: memory holds hashes and signatures,
/// not the records, so a second pass can write the kept ones.
pub fn dedup_texts(texts: impl Iterator<Item = String>, near: Option<f64>) -> (Vec<usize>, DedupReport) {
    let mut report = DedupReport::default();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut keep = vec![];
    let mut sigs: Vec<Vec<u64>> = vec![];
    let mut buckets: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
    for (i, text) in texts.enumerate() {
        let norm = words(&text).join(" ");
        if let Some(&first) = seen.get(&hash_str(&norm)) {
            report.exact += 1;
            report.removed.push((i, first));
            continue;
        }
        seen.insert(hash_str(&norm), i);
        if let Some(t) = near {
            let sig = minhash(&text);
            let rows = PERMUTATIONS / BANDS;
            let band_keys: Vec<(usize, u64)> = (0..BANDS).map(|b| (b, hash_str(&format!("{:?}", &sig[b * rows..(b + 1) * rows])))).collect();
            let dup = band_keys.iter().filter_map(|k| buckets.get(k)).flatten().find(|&&j| estimated_jaccard(&sig, &sigs[j]) >= t).copied();
            if let Some(j) = dup {
                report.near += 1;
                report.removed.push((i, keep[j]));
                continue;
            }
            let slot = sigs.len();
            for k in band_keys {
                buckets.entry(k).or_default().push(slot);
            }
            sigs.push(sig);
        }
        keep.push(i);
    }
    (keep, report)
}

/// Training records sharing word n-grams with an evaluation set.
#[derive(Debug, serde::Serialize)]
pub struct Contamination {
    pub n: usize,
    pub train_records: usize,
    pub eval_records: usize,
    /// (train origin, shared n-grams, fraction of its n-grams that are shared)
    pub contaminated: Vec<(String, usize, f64)>,
    /// Evaluation records any of whose n-grams appear in the training set.
    pub eval_touched: usize,
}

pub fn contamination(train: &[Record], eval: &[Record], n: usize) -> Contamination {
    let eval_grams: Vec<HashSet<u64>> = eval.iter().map(|r| ngram_hashes(&words(&record_text(&r.example)), n)).collect();
    let all_eval: HashSet<u64> = eval_grams.iter().flatten().copied().collect();
    let mut train_all = HashSet::new();
    let mut contaminated = vec![];
    for r in train {
        let g = ngram_hashes(&words(&record_text(&r.example)), n);
        let shared = g.iter().filter(|h| all_eval.contains(h)).count();
        if shared > 0 {
            contaminated.push((r.origin.to_string(), shared, shared as f64 / g.len() as f64));
        }
        train_all.extend(g);
    }
    let eval_touched = eval_grams.iter().filter(|g| g.iter().any(|h| train_all.contains(h))).count();
    Contamination { n, train_records: train.len(), eval_records: eval.len(), contaminated, eval_touched }
}

/// Which of `texts` share a word n-gram with any record of `eval` (decontaminating
/// generated data; a text shorter than `n` words counts as one n-gram).
pub fn shares_ngrams(texts: &[String], eval: &[Record], n: usize) -> Vec<bool> {
    let all: HashSet<u64> = eval.iter().flat_map(|r| ngram_hashes(&words(&record_text(&r.example)), n)).collect();
    texts.iter().map(|t| ngram_hashes(&words(t), n).iter().any(|h| all.contains(h))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Conversation, Message, Origin};

    fn rec(i: usize, text: &str) -> Record {
        let c = Conversation { messages: vec![Message::new("user", "q"), Message::new("assistant", text)], tools: None };
        Record { origin: Origin { file: "t.jsonl".into(), index: i + 1, is_line: true }, example: Example::Sft(c) }
    }

    #[test]
    fn exact_and_near_duplicates() {
        let base = "the quick brown fox jumps over the lazy dog while the farmer watches from the old wooden fence near the barn at dawn";
        let recs = vec![
            rec(0, base),
            rec(1, &base.to_uppercase()),          // exact after normalisation
            rec(2, &base.replace("dawn", "dusk")), // near duplicate
            rec(3, "completely different text about compilers, types and register allocation in optimising back ends"),
        ];
        let (keep, rep) = dedup(&recs, None);
        assert_eq!((keep, rep.exact, rep.near), (vec![0, 2, 3], 1, 0));
        let (keep, rep) = dedup(&recs, Some(0.7));
        assert_eq!((keep, rep.exact, rep.near), (vec![0, 3], 1, 1));
        assert_eq!(rep.removed, vec![(1, 0), (2, 0)]);
    }

    #[test]
    fn contamination_finds_shared_ngrams() {
        let train = vec![rec(0, "alpha beta gamma delta epsilon zeta eta theta"), rec(1, "nothing in common here at all today")];
        let eval = vec![rec(0, "we saw alpha beta gamma delta epsilon in the test")];
        let c = contamination(&train, &eval, 5);
        assert_eq!(c.contaminated.len(), 1);
        assert_eq!(c.contaminated[0].1, 1);
        assert_eq!(c.eval_touched, 1);
    }
}
