//! Evaluation: suites of prompts with references (SuperNI, GSM8K, generic JSONL), run
//! through the batched generator, scored with the papers' own metric code, and compared
//! between model versions (per-task deltas, negative and positive flips).
//!
//! A report directory holds `predictions.jsonl` (one scored line per example, appended
//! as batches finish, so an interrupted run resumes), `scores.json` and `report.md`.
pub mod compare;
pub mod judge;
pub mod metrics;
pub mod pairs;
pub mod report;
pub mod robustness;
pub mod runner;
pub mod suites;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One example to evaluate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    /// Task name (scores are grouped by task, then by category).
    pub task: String,
    #[serde(default)]
    pub categories: Vec<String>,
    pub prompt: String,
    pub references: Vec<String>,
    /// Score with the cross-lingual tokenizer (non-English outputs).
    #[serde(default)]
    pub xlingual: bool,
}

/// One scored prediction: a line of `predictions.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scored {
    pub id: String,
    pub task: String,
    #[serde(default)]
    pub categories: Vec<String>,
    pub prediction: String,
    pub references: Vec<String>,
    /// Metric name -> 0-100.
    pub scores: BTreeMap<String, f64>,
    /// The task's main metric (the one compared and charted).
    pub primary: String,
    /// Counted as correct for flips: an exact (normalised) answer.
    pub correct: bool,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
}

/// Write text atomically (temp file + rename).
pub fn write_text(path: &std::path::Path, text: &str) -> crate::Result<()> {
    crate::peft::write_atomic(path, text.as_bytes())
}

/// Write a value as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &std::path::Path, v: &T) -> crate::Result<()> {
    write_text(path, &serde_json::to_string_pretty(v).expect("serializable"))
}
