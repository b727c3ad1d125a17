//! Label accuracy for classification-style tasks: a prediction is right when, with leading
//! and trailing whitespace removed, it equals the label exactly (case and punctuation
//! count; use [`super::exact_match`] for SuperNI's looser comparison). Whitespace is
//! Python's `str.strip()` set, as elsewhere in these metrics.

use super::exact_match::is_py_whitespace;

/// Whether `pred` and `label` are equal after trimming whitespace at both ends.
pub fn label_match(pred: &str, label: &str) -> bool {
    pred.trim_matches(is_py_whitespace) == label.trim_matches(is_py_whitespace)
}

/// Fraction of predictions that match their label; 0.0 for no examples.
/// Panics when the lists differ in length.
pub fn accuracy<S: AsRef<str>>(preds: &[S], labels: &[S]) -> f64 {
    assert_eq!(preds.len(), labels.len(), "accuracy: predictions and labels differ in number");
    if preds.is_empty() {
        return 0.0;
    }
    let hits = preds.iter().zip(labels).filter(|(p, l)| label_match(p.as_ref(), l.as_ref())).count();
    hits as f64 / preds.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_equality() {
        assert!(label_match(" positive\n", "positive"));
        assert!(!label_match("Positive", "positive"));
        assert_eq!(accuracy(&["a", "b ", "c"], &["a", "b", "d"]), 2.0 / 3.0);
        assert_eq!(accuracy::<&str>(&[], &[]), 0.0);
    }
}
