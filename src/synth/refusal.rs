//! R-Tuning (Zhang et al. 2024, "R-Tuning: Instructing Large Language Models to Say 'I
//! Don't Know'"): the model answers each question of QA data greedily; where its answer
//! matches the reference the question is in its knowledge (certain), elsewhere not
//! (uncertain). Every question is written as training data with the reference answer and
//! the paper's padding: "Are you sure you accurately answered the question based on your
//! internal knowledge? I am sure." (certain) or "... I am unsure." (uncertain), so the
//! tuned model learns to state its confidence. A match is the reference (or any of its
//! aliases) equal to the answer, or contained in it as whole words, after SuperNI's
//! normalization (lower case, no punctuation, single spaces). Input: JSONL with
//! `question` and `answer` (a string or a list of aliases), or `instruction` + `output`,
//! or `prompt` + `reference(s)`.
use super::{Context, Example, Method, Outcome};
use crate::decode::jobs::Job;
use crate::decode::GenerateOptions;
use crate::eval::metrics::exact_match::normalize_answer;
use crate::{Error, Result};
use serde_json::Value;
use std::path::Path;

pub struct Refusal;

pub const ASK: &str = "Are you sure you accurately answered the question based on your internal knowledge?";

/// A question with its reference answers (the first is the one written).
#[derive(Debug, Clone, PartialEq)]
pub struct Qa {
    pub question: String,
    pub answers: Vec<String>,
}

pub fn read_qa(path: &Path) -> Result<Vec<Qa>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |m: &str| Error::file(path, format!("line {}: {m}", i + 1));
        let v: Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        let q = ["question", "instruction", "prompt"].iter().find_map(|k| v.get(*k).and_then(Value::as_str));
        let a = ["answer", "answers", "output", "reference", "references"].iter().find_map(|k| v.get(*k));
        let answers: Vec<String> = match a {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(xs)) => xs.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            _ => vec![],
        };
        match (q, answers.is_empty()) {
            (Some(q), false) => out.push(Qa { question: q.to_string(), answers }),
            _ => return Err(bad("expected a question (\"question\", \"instruction\" or \"prompt\") and its answer (\"answer\", \"output\" or \"reference\")")),
        }
    }
    Ok(out)
}

/// Does the model's answer match a reference (equal, or containing it as whole words,
/// after normalization)?
pub fn matches(prediction: &str, answers: &[String]) -> bool {
    let p = format!(" {} ", normalize_answer(prediction));
    answers.iter().map(|a| normalize_answer(a)).filter(|a| !a.is_empty()).any(|a| p.trim() == a || p.contains(&format!(" {a} ")))
}

/// The training response: the reference answer, the question about certainty, the verdict.
pub fn padded(answer: &str, sure: bool) -> String {
    format!("{}\n\n{ASK} I am {}.", answer.trim(), if sure { "sure" } else { "unsure" })
}

impl Method for Refusal {
    fn name(&self) -> &'static str {
        "refusal"
    }

    fn about(&self) -> &'static str {
        "R-Tuning: QA data (--input) split by whether the model knows the answer, padded with \"I am sure\" / \"I am unsure\""
    }

    fn run(&self, cx: &Context, work: &Path) -> Result<Outcome> {
        let qa: Vec<Qa> = read_qa(cx.input("refusal", "QA data (JSONL with question and answer)")?)?.into_iter().take(cx.n).collect();
        let jobs: Vec<Job> = qa
            .iter()
            .enumerate()
            .map(|(i, q)| Ok(Job { id: format!("q{i}"), prompt: cx.tok.encode_chat(cx.template.as_deref(), &[serde_json::json!({"role": "user", "content": q.question})])?, stream: i as u64 }))
            .collect::<Result<_>>()?;
        let gen = GenerateOptions { max_new_tokens: cx.max_new_tokens, ..Default::default() };
        let by_id = cx.generate("refusal: answers", &work.join("answers.jsonl"), &jobs, gen)?;
        let mut out = Outcome::default();
        for (j, q) in jobs.iter().zip(&qa) {
            let sure = matches(&by_id[&j.id].text, &q.answers);
            let split = if sure { "certain" } else { "uncertain" };
            *out.counts.entry(split.to_string()).or_default() += 1;
            out.examples.push(Example {
                instruction: q.question.clone(),
                input: String::new(),
                output: padded(&q.answers[0], sure),
                provenance: cx.provenance("refusal", format!("{}/{split}", j.id)),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_by_normalized_whole_words() {
        let refs = vec!["Paris".to_string(), "City of Light".to_string()];
        assert!(matches("The capital of France is Paris.", &refs));
        assert!(matches("paris", &refs));
        assert!(matches("They call it the city of light!", &refs));
        assert!(!matches("Parisian food is good.", &refs), "a whole word, not a prefix");
        assert!(!matches("Lyon", &refs));
        assert_eq!(padded(" Paris ", false), "Paris\n\nAre you sure you accurately answered the question based on your internal knowledge? I am unsure.");
    }
}
