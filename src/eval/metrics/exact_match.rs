//! SuperNI's exact match: SQuAD v1.1's `normalize_answer` without the article removal
//! (Tk-Instruct `src/compute_metrics.py`): `text.lower()`, drop every character of
//! `string.punctuation`, then `' '.join(text.split())`.
//!
//! Python details that matter here: `string.punctuation` is the 32 ASCII punctuation
//! characters only (so `“”`, `。`, `¿` stay); `str.split()` splits on Python's whitespace,
//! which is Rust's `char::is_whitespace` plus the ASCII separators U+001C..U+001F; and
//! `str.lower()` is full Unicode lower-casing (`İ` -> `i` + U+0307, final sigma), as
//! `str::to_lowercase` (up to Unicode-version differences: Python 3.11 has Unicode 14).

/// Python's `str.isspace()`, the set that `str.split()` and `str.strip()` use.
pub fn is_py_whitespace(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1c}'..='\u{1f}')
}

/// SuperNI's `normalize_answer`: lower-case, strip ASCII punctuation, collapse whitespace.
pub fn normalize_answer(s: &str) -> String {
    let lowered = s.to_lowercase();
    let kept: String = lowered.chars().filter(|c| !c.is_ascii_punctuation()).collect();
    kept.split(is_py_whitespace).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

/// 1.0 when the normalized strings are equal, else 0.0 (SuperNI's `exact_match_score`).
pub fn exact_match(pred: &str, reference: &str) -> f64 {
    if normalize_answer(pred) == normalize_answer(reference) {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_style_without_articles() {
        assert_eq!(normalize_answer("  The  Answer, is: \"B\"! "), "the answer is b");
        assert_eq!(normalize_answer("a\u{1c}b\u{85}c\u{a0}d"), "a b c d");
        assert_eq!(normalize_answer("“Yes.”"), "“yes”");
        assert_eq!(normalize_answer("ΟΔΟΣ"), "οδος");
        assert_eq!(exact_match("An apple.", "an apple"), 1.0);
        assert_eq!(exact_match("apple", "an apple"), 0.0);
    }
}
