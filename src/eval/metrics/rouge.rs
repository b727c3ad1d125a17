//! ROUGE-L and ROUGE-1 as Google's `rouge_score` 0.1.2 computes them, with its default
//! tokenizer (the one SuperNI's `rougeL_score` uses for English tasks, with
//! `use_stemmer=True`).
//!
//! rouge_score's tokenizer: `text.lower()`, every run of characters outside `[a-z0-9]`
//! becomes a space, split on whitespace, Porter-stem (nltk's default mode, see
//! [`super::porter`]) the tokens longer than three characters, keep the tokens matching
//! `^[a-z0-9]+$`. Only ASCII letters and digits survive, so lowering one character at a
//! time is enough: the only non-ASCII characters whose lower case holds ASCII letters are
//! U+0130 `İ` (-> `i` + U+0307, which then splits the token) and U+212A KELVIN SIGN (-> `k`),
//! and Rust and Python agree on both. Non-ASCII digits and letters are separators.

use super::porter;

/// Precision, recall and F-measure, as rouge_score's `Score` tuple.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

impl Score {
    const ZERO: Score = Score { precision: 0.0, recall: 0.0, fmeasure: 0.0 };

    /// rouge_score's `scoring.fmeasure`: `2 * p * r / (p + r)`, 0 when both are 0.
    fn new(precision: f64, recall: f64) -> Score {
        let fmeasure = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        Score { precision, recall, fmeasure }
    }
}

/// rouge_score's default tokenizer (`rouge_score.tokenize.tokenize`).
pub fn tokenize(text: &str, use_stemmer: bool) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        for l in c.to_lowercase() {
            if l.is_ascii_lowercase() || l.is_ascii_digit() {
                cur.push(l);
            } else if !cur.is_empty() {
                tokens.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    if use_stemmer {
        for t in tokens.iter_mut() {
            if t.len() > 3 {
                *t = porter::stem(t);
            }
        }
        // The final `^[a-z0-9]+$` filter; stems of `[a-z0-9]+` stay in it, but be sure.
        tokens.retain(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }
    tokens
}

/// Length of the longest common subsequence (rouge_score's `_lcs_table`, one row at a time).
fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            row[j + 1] = if x == y { prev[j] + 1 } else { prev[j + 1].max(row[j]) };
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

/// ROUGE-L (`_score_lcs`): precision = LCS / |pred|, recall = LCS / |target|; all zero when
/// either side has no tokens.
pub fn rouge_l<T: PartialEq>(pred: &[T], target: &[T]) -> Score {
    if pred.is_empty() || target.is_empty() {
        return Score::ZERO;
    }
    let lcs = lcs_len(target, pred) as f64;
    Score::new(lcs / pred.len() as f64, lcs / target.len() as f64)
}

/// ROUGE-1 (`_score_ngrams` with n = 1): clipped unigram overlap; denominators are at
/// least 1, so empty sides give zeros rather than NaN, as in rouge_score.
pub fn rouge_1<T: Eq + std::hash::Hash>(pred: &[T], target: &[T]) -> Score {
    use std::collections::HashMap;
    let mut counts: HashMap<&T, (usize, usize)> = HashMap::new();
    for t in target {
        counts.entry(t).or_default().0 += 1;
    }
    for t in pred {
        counts.entry(t).or_default().1 += 1;
    }
    let overlap: usize = counts.values().map(|&(t, p)| t.min(p)).sum();
    let overlap = overlap as f64;
    Score::new(overlap / pred.len().max(1) as f64, overlap / target.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_like_rouge_score() {
        assert_eq!(tokenize("The quick-brown FOXES, jumping!", true), ["the", "quick", "brown", "fox", "jump"]);
        assert_eq!(tokenize("The quick-brown FOXES", false), ["the", "quick", "brown", "foxes"]);
        assert_eq!(tokenize("İstanbul \u{212A}elvin naïve 3½ ４", false), ["i", "stanbul", "kelvin", "na", "ve", "3"]);
        assert!(tokenize(" ...\n\t ", true).is_empty());
    }

    #[test]
    fn lcs_scores() {
        let s = rouge_l(&["a", "b", "c", "d"], &["a", "c", "x"]);
        assert_eq!((s.precision, s.recall), (0.5, 2.0 / 3.0));
        assert_eq!(rouge_l::<&str>(&[], &["a"]), Score::ZERO);
        let s = rouge_1(&["a", "a", "b"], &["a", "b", "b", "c"]);
        assert_eq!((s.precision, s.recall), (2.0 / 3.0, 0.5));
    }
}
