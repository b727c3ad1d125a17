//! Evaluation metrics, each in its own file, with parity to the code the papers used
//! (the official SuperNI scorer, jiwer, lm-evaluation-harness): see
//! `tests/metrics_parity.rs` and `tests/fixtures/metrics`.
//!
//! Every metric scores one prediction against one reference on a 0-100 scale (as the
//! official SuperNI code reports); [`best`] takes the best over several references, as
//! its `metric_max_over_ground_truths` does.
pub mod accuracy;
pub mod cer;
pub mod exact_match;
pub mod gsm8k;
pub mod porter;
pub mod rouge;
pub mod xlingual;

use crate::{Error, Result};

pub trait Metric: Send + Sync {
    fn name(&self) -> &'static str;
    /// `prediction` against one reference, 0-100.
    fn score(&self, prediction: &str, reference: &str) -> f64;
    /// False for error rates, where the best reference is the lowest.
    fn higher_is_better(&self) -> bool {
        true
    }
}

/// The best score over `references` (0 when there are none).
pub fn best(m: &dyn Metric, prediction: &str, references: &[String]) -> f64 {
    let scores = references.iter().map(|r| m.score(prediction, r));
    let pick = if m.higher_is_better() { scores.fold(f64::NEG_INFINITY, f64::max) } else { scores.fold(f64::INFINITY, f64::min) };
    if pick.is_finite() {
        pick
    } else {
        0.0
    }
}

/// ROUGE-L F-measure: rouge_score's tokenizer with the Porter stemmer, or for
/// non-English outputs the official code's GPT-2 token split ([`xlingual`]).
pub struct RougeL {
    pub xlingual: bool,
}

impl Metric for RougeL {
    fn name(&self) -> &'static str {
        "rougeL"
    }
    fn score(&self, prediction: &str, reference: &str) -> f64 {
        let f = if self.xlingual {
            rouge::rouge_l(&xlingual::tokenize(prediction), &xlingual::tokenize(reference)).fmeasure
        } else {
            rouge::rouge_l(&rouge::tokenize(prediction, true), &rouge::tokenize(reference, true)).fmeasure
        };
        100.0 * f
    }
}

/// SuperNI's exact match (lower case, no punctuation, collapsed whitespace).
pub struct ExactMatch;

impl Metric for ExactMatch {
    fn name(&self) -> &'static str {
        "exact_match"
    }
    fn score(&self, prediction: &str, reference: &str) -> f64 {
        100.0 * exact_match::exact_match(prediction, reference)
    }
}

/// Character error rate (jiwer), in percent.
pub struct Cer;

impl Metric for Cer {
    fn name(&self) -> &'static str {
        "cer"
    }
    fn score(&self, prediction: &str, reference: &str) -> f64 {
        100.0 * cer::cer(reference, prediction)
    }
    fn higher_is_better(&self) -> bool {
        false
    }
}

/// Label accuracy: equal after trimming whitespace.
pub struct Accuracy;

impl Metric for Accuracy {
    fn name(&self) -> &'static str {
        "accuracy"
    }
    fn score(&self, prediction: &str, reference: &str) -> f64 {
        if accuracy::label_match(prediction, reference) {
            100.0
        } else {
            0.0
        }
    }
}

/// GSM8K: the final answer extracted from the prediction equals the reference's
/// `#### N`; `strict` needs the `#### N` form, otherwise the last number counts.
pub struct Gsm8k {
    pub strict: bool,
}

impl Metric for Gsm8k {
    fn name(&self) -> &'static str {
        if self.strict {
            "exact_match_strict"
        } else {
            "exact_match_flexible"
        }
    }
    fn score(&self, prediction: &str, reference: &str) -> f64 {
        let ok = if self.strict { gsm8k::correct(prediction, reference) } else { gsm8k::correct_flexible(prediction, reference) };
        if ok {
            100.0
        } else {
            0.0
        }
    }
}

pub const NAMES: &[&str] = &["rougeL", "rougeL_xlingual", "exact_match", "cer", "accuracy", "gsm8k_strict", "gsm8k_flexible"];

/// A metric by name (as `instill score --metric` takes it).
pub fn by_name(name: &str) -> Result<Box<dyn Metric>> {
    Ok(match name {
        "rougeL" | "rougel" | "rouge-l" => Box::new(RougeL { xlingual: false }),
        "rougeL_xlingual" => Box::new(RougeL { xlingual: true }),
        "exact_match" | "em" => Box::new(ExactMatch),
        "cer" => Box::new(Cer),
        "accuracy" | "acc" => Box::new(Accuracy),
        "gsm8k_strict" => Box::new(Gsm8k { strict: true }),
        "gsm8k_flexible" | "gsm8k" => Box::new(Gsm8k { strict: false }),
        _ => return Err(Error::Input(format!("unknown metric {name:?}: use one of {}", NAMES.join(", ")))),
    })
}
