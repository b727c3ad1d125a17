//! Character error rate as `jiwer.cer` (jiwer 4.0.0) computes it.
//!
//! jiwer's default CER transform is `Strip()` then one character per "word": each string
//! loses leading and trailing Python whitespace (`str.strip()`, which also strips
//! U+001C..U+001F) and is compared code point by code point. jiwer counts hits,
//! substitutions, deletions and insertions from rapidfuzz's Levenshtein opcodes, and
//! returns `(S + D + I) / (H + S + D)` summed over all pairs: the summed edit distance over
//! the summed reference length. When every reference is empty it returns the number of
//! insertions, i.e. the total hypothesis length (an integer, not a rate).

use super::exact_match::is_py_whitespace;

fn strip(s: &str) -> Vec<char> {
    s.trim_matches(is_py_whitespace).chars().collect()
}

/// Levenshtein distance (unit costs) over code points, two rows.
pub fn edit_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0usize; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(x != y);
            row[j + 1] = sub.min(prev[j + 1] + 1).min(row[j] + 1);
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

/// `jiwer.cer(reference, hypothesis)` for one pair.
pub fn cer(reference: &str, hypothesis: &str) -> f64 {
    cer_corpus(&[reference], &[hypothesis])
}

/// `jiwer.cer(references, hypotheses)` for lists: total edits over total reference
/// characters. Panics when the lists differ in length (jiwer raises `ValueError`).
pub fn cer_corpus<S: AsRef<str>>(references: &[S], hypotheses: &[S]) -> f64 {
    assert_eq!(references.len(), hypotheses.len(), "cer: references and hypotheses differ in number");
    let (mut edits, mut ref_chars, mut hyp_chars) = (0usize, 0usize, 0usize);
    for (r, h) in references.iter().zip(hypotheses) {
        let (r, h) = (strip(r.as_ref()), strip(h.as_ref()));
        edits += edit_distance(&r, &h);
        ref_chars += r.len();
        hyp_chars += h.len();
    }
    if ref_chars == 0 {
        // jiwer's empty-reference case: the error is the count of insertions.
        return hyp_chars as f64;
    }
    edits as f64 / ref_chars as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_jiwer() {
        assert_eq!(cer("kitten", "sitting"), 0.5);
        assert_eq!(cer("  abc\u{1f}", "abc"), 0.0);
        assert_eq!(cer("", "abc"), 3.0);
        assert_eq!(cer("", ""), 0.0);
        assert_eq!(cer_corpus(&["ab", "cd"], &["ab", "ce"]), 0.25);
        assert_eq!(edit_distance(&['日', '本'], &['本']), 1);
    }
}
