//! Any JSONL of prompts with references: `{"prompt", "references": [...]}` (or one
//! `reference`), optionally `id`, `task` and `category`. Scored by the metrics asked for,
//! the first being the primary one.
use super::{field, jsonl, references, Suite};
use crate::eval::metrics::{by_name, Metric};
use crate::eval::Item;
use crate::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Generic {
    pub path: PathBuf,
    pub metrics: Vec<String>,
    pub limit: Option<usize>,
    pub max_new_tokens: usize,
    pub stop: Vec<String>,
}

impl Suite for Generic {
    fn name(&self) -> &'static str {
        "generic"
    }

    fn items(&self) -> Result<Vec<Item>> {
        for m in &self.metrics {
            by_name(m)?;
        }
        let p = &self.path;
        jsonl(p)?
            .iter()
            .take(self.limit.unwrap_or(usize::MAX))
            .map(|(n, v)| {
                let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
                Ok(Item {
                    id: s("id").unwrap_or_else(|| format!("line-{n}")),
                    task: s("task").unwrap_or_else(|| "all".into()),
                    categories: s("category").into_iter().collect(),
                    prompt: field(v, "prompt", p, *n)?.to_string(),
                    references: references(v, p, *n)?,
                    xlingual: v.get("xlingual").and_then(|x| x.as_bool()).unwrap_or(false),
                })
            })
            .collect()
    }

    fn max_new_tokens(&self) -> usize {
        self.max_new_tokens
    }

    fn stop_strings(&self) -> Vec<String> {
        self.stop.clone()
    }

    fn metrics(&self, item: &Item) -> Vec<Box<dyn Metric>> {
        self.metrics
            .iter()
            .map(|m| {
                let m = if item.xlingual && m.eq_ignore_ascii_case("rougeL") { "rougeL_xlingual" } else { m.as_str() };
                by_name(m).expect("checked in items()")
            })
            .collect()
    }

    /// An exact (normalised) answer when exact match is computed; else the primary
    /// metric at its best (100, or 0 for an error rate).
    fn correct(&self, scores: &BTreeMap<String, f64>) -> bool {
        if let Some(&s) = scores.get("exact_match") {
            return s == 100.0;
        }
        let Some(m) = self.metrics.first().and_then(|m| by_name(m).ok()) else { return false };
        let target = if m.higher_is_better() { 100.0 } else { 0.0 };
        scores.get(m.name()).is_some_and(|&s| s == target)
    }
}
