//! GSM8K: `question` / `answer` (the answer ends with `#### N`).
use super::{has, text, Errors, Format};
use crate::data::read::ReadOptions;
use crate::data::{Conversation, Example, Message};
use serde_json::Value;

pub struct Gsm8k;

impl Format for Gsm8k {
    fn name(&self) -> &'static str {
        "gsm8k"
    }
    fn detect(&self, v: &Value) -> bool {
        has(v, &["question", "answer"])
    }
    fn parse(&self, v: &Value, _: &ReadOptions) -> Result<Vec<Example>, Errors> {
        let mut errs = vec![];
        let q = text(v, "question", &mut errs);
        let a = text(v, "answer", &mut errs);
        if errs.is_empty() && a.trim().is_empty() {
            errs.push(("answer".into(), "empty response".into()));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let messages = vec![Message::new("user", q), Message::new("assistant", a)];
        Ok(vec![Example::Sft(Conversation { messages, tools: None })])
    }
}
