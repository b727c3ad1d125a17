//! GSM8K: grade-school maths word problems (`question`, `answer` ending in `#### N`),
//! prompted as lm-evaluation-harness does ("Question: ...\nAnswer:", with k worked
//! examples from a shots file before it) and scored by the final number: strict (`#### N`
//! in the output) and flexible (the last number in the output).
use super::{field, jsonl, Suite};
use crate::eval::metrics::{Gsm8k as Answer, Metric};
use crate::eval::Item;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Gsm8k {
    pub path: PathBuf,
    /// Worked examples before each question, from `shots` (the first k lines).
    pub k_shot: usize,
    pub shots: Option<PathBuf>,
    /// Evaluate the first `limit` problems.
    pub limit: Option<usize>,
}

fn qa(q: &str, a: &str) -> String {
    format!("Question: {q}\nAnswer: {a}\n\n")
}

impl Gsm8k {
    fn preamble(&self) -> Result<String> {
        if self.k_shot == 0 {
            return Ok(String::new());
        }
        let Some(path) = &self.shots else {
            return Err(Error::Input(format!("--k-shot {} needs --shots FILE (solved problems, e.g. gsm8k_train.jsonl)", self.k_shot)));
        };
        let lines = jsonl(path)?;
        if lines.len() < self.k_shot {
            return Err(Error::file(path, format!("holds {} problems; --k-shot asks for {}", lines.len(), self.k_shot)));
        }
        let mut s = String::new();
        for (n, v) in lines.iter().take(self.k_shot) {
            s.push_str(&qa(field(v, "question", path, *n)?, field(v, "answer", path, *n)?));
        }
        Ok(s)
    }
}

impl Suite for Gsm8k {
    fn name(&self) -> &'static str {
        "gsm8k"
    }

    fn items(&self) -> Result<Vec<Item>> {
        let pre = self.preamble()?;
        let lines = jsonl(&self.path)?;
        let p = &self.path;
        lines
            .iter()
            .take(self.limit.unwrap_or(usize::MAX))
            .map(|(n, v)| {
                let q = field(v, "question", p, *n)?;
                let answer = field(v, "answer", p, *n)?.to_string();
                let id = v.get("id").and_then(|i| i.as_str()).map_or_else(|| format!("gsm8k-{n}"), str::to_string);
                Ok(Item { id, task: "gsm8k".into(), categories: vec!["Math".into()], prompt: format!("{pre}Question: {q}\nAnswer:"), references: vec![answer], xlingual: false })
            })
            .collect()
    }

    fn max_new_tokens(&self) -> usize {
        256
    }

    /// lm-evaluation-harness's `until` for GSM8K.
    fn stop_strings(&self) -> Vec<String> {
        vec!["Question:".into(), "</s>".into(), "<|im_end|>".into(), "\n\n".into()]
    }

    fn metrics(&self, _: &Item) -> Vec<Box<dyn Metric>> {
        vec![Box::new(Answer { strict: false }), Box::new(Answer { strict: true })]
    }

    fn correct(&self, scores: &BTreeMap<String, f64>) -> bool {
        scores.get("exact_match_flexible").is_some_and(|&s| s == 100.0)
    }
}
