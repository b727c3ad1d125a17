//! The novelty filter of Self-Instruct and Ensemble-Instruct: a candidate enters the pool
//! only when its ROUGE-L F-measure (rouge_score's tokenizer, no stemming) against every
//! instruction already there is at most the threshold (0.7 in the papers). Words are
//! interned once, each comparison is one LCS over ids, pairs whose lengths alone bound the
//! score under the threshold are skipped (`F = 2 LCS / (m + n) <= 2 min(m, n) / (m + n)`),
//! and the pool is scanned in parallel with an early exit: for 1,000 instructions a
//! candidate costs well under a millisecond, where the paper's scorer is called per pair.
use crate::eval::metrics::rouge;
use rayon::prelude::*;
use std::collections::HashMap;

#[derive(Default)]
pub struct Pool {
    vocab: HashMap<String, u32>,
    items: Vec<Vec<u32>>,
}

impl Pool {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn ids(&mut self, text: &str) -> Vec<u32> {
        rouge::tokenize(text, false)
            .into_iter()
            .map(|w| {
                let next = self.vocab.len() as u32;
                *self.vocab.entry(w).or_insert(next)
            })
            .collect()
    }

    /// Adds `text` to the pool without a check (seed instructions).
    pub fn add(&mut self, text: &str) {
        let ids = self.ids(text);
        self.items.push(ids);
    }

    /// Adds `text` when no pool member scores above `threshold` against it; returns
    /// whether it was added.
    pub fn admit(&mut self, text: &str, threshold: f64) -> bool {
        let c = self.ids(text);
        let too_close = self.items.par_iter().any(|p| {
            let total = (c.len() + p.len()) as f64;
            total > 0.0 && 2.0 * c.len().min(p.len()) as f64 / total > threshold && 2.0 * lcs(&c, p) as f64 / total > threshold
        });
        if !too_close {
            self.items.push(c);
        }
        !too_close
    }
}

/// Length of the longest common subsequence, one DP row.
pub fn lcs(a: &[u32], b: &[u32]) -> usize {
    let (a, b) = if a.len() < b.len() { (b, a) } else { (a, b) };
    let mut row = vec![0u32; b.len() + 1];
    for &x in a {
        let mut diag = 0;
        for (j, &y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()] as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_score_is_rouge_scores_rouge_l() {
        let pairs = [
            ("Give three tips for staying healthy.", "Give me three tips to stay healthy and happy."),
            ("Translate the sentence into French.", "Summarize the following article in one sentence."),
            ("a b c d e", "e d c b a"),
            ("", "anything"),
        ];
        for (x, y) in pairs {
            let (tx, ty) = (rouge::tokenize(x, false), rouge::tokenize(y, false));
            let want = rouge::rouge_l(&tx, &ty).fmeasure;
            let mut p = Pool::default();
            let (a, b) = (p.ids(x), p.ids(y));
            let got = if a.is_empty() && b.is_empty() { 0.0 } else { 2.0 * lcs(&a, &b) as f64 / (a.len() + b.len()) as f64 };
            assert!((got - want).abs() < 1e-12, "{x:?} / {y:?}: {got} vs {want}");
        }
    }

    #[test]
    fn near_duplicates_are_kept_out_and_novel_ones_admitted() {
        let mut p = Pool::default();
        p.add("Give three tips for staying healthy.");
        assert!(!p.admit("Give three tips for staying very healthy.", 0.7));
        assert!(p.admit("Write a haiku about the sea.", 0.7));
        assert!(!p.admit("write a haiku about the sea", 0.7), "case and punctuation do not make it new");
        assert_eq!(p.len(), 2);
    }
}
