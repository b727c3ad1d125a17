//! Evaluation suites: where the examples come from, how they are prompted and scored.
pub mod generic;
pub mod gsm8k;
pub mod superni;

use super::metrics::{best, Metric};
use super::{Item, Scored};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

pub trait Suite {
    fn name(&self) -> &'static str;
    /// The examples, in a fixed order.
    fn items(&self) -> Result<Vec<Item>>;
    /// Default generation length.
    fn max_new_tokens(&self) -> usize;
    /// Generation stops at these (the model would go on with the next demonstration).
    fn stop_strings(&self) -> Vec<String>;
    /// The metrics of one example, the primary one first.
    fn metrics(&self, item: &Item) -> Vec<Box<dyn Metric>>;
    /// Whether a prediction counts as correct (for flips), from its scores.
    fn correct(&self, scores: &BTreeMap<String, f64>) -> bool;

    /// Score one prediction with every metric.
    fn score(&self, item: &Item, prediction: &str, prompt_tokens: usize, new_tokens: usize) -> Scored {
        let metrics = self.metrics(item);
        let scores: BTreeMap<String, f64> = metrics.iter().map(|m| (m.name().to_string(), best(m.as_ref(), prediction, &item.references))).collect();
        Scored {
            id: item.id.clone(),
            task: item.task.clone(),
            categories: item.categories.clone(),
            prediction: prediction.to_string(),
            references: item.references.clone(),
            primary: metrics[0].name().to_string(),
            correct: self.correct(&scores),
            scores,
            prompt_tokens,
            new_tokens,
        }
    }
}

/// Lines of a JSONL file as JSON values, each with its 1-based line number.
/// An `hf://datasets/...` path reads the dataset's files one after the other.
pub fn jsonl(path: &Path) -> Result<Vec<(usize, serde_json::Value)>> {
    let mut out = vec![];
    for path in crate::hub::data_files(path)?.unwrap_or_else(|| vec![path.to_path_buf()]) {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e.to_string()))?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v = serde_json::from_str(line).map_err(|e| Error::file(&path, format!("line {}: invalid JSON: {e}", i + 1)))?;
            out.push((i + 1, v));
        }
    }
    Ok(out)
}

/// A string field of a record, or an error naming file, line and field.
pub fn field<'a>(v: &'a serde_json::Value, name: &str, path: &Path, line: usize) -> Result<&'a str> {
    v.get(name).and_then(|x| x.as_str()).ok_or_else(|| Error::file(path, format!("line {line}: field {name:?} is missing or not a string")))
}

/// References: a `references` list or a single `reference`/`output`/`answer` string.
pub fn references(v: &serde_json::Value, path: &Path, line: usize) -> Result<Vec<String>> {
    if let Some(list) = v.get("references").and_then(|r| r.as_array()) {
        let refs: Vec<String> = list.iter().filter_map(|r| r.as_str().map(str::to_string).or_else(|| r.as_number().map(|n| n.to_string()))).collect();
        if refs.is_empty() {
            return Err(Error::file(path, format!("line {line}: field \"references\" holds no strings")));
        }
        return Ok(refs);
    }
    for k in ["reference", "output", "answer"] {
        if let Some(s) = v.get(k).and_then(|x| x.as_str()) {
            return Ok(vec![s.to_string()]);
        }
    }
    Err(Error::file(path, format!("line {line}: no \"references\" list or \"reference\" string")))
}
