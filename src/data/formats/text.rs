//! Raw text: `{"text": "..."}`, one document per record, for language-model tuning on
//! plain text (Learned Embedding Propagation's embedding tuning): read as one assistant
//! turn, so `template: plain` renders it as it is and every token trains.
use super::{text, Errors, Format};
use crate::data::read::ReadOptions;
use crate::data::{Conversation, Example, Message};
use serde_json::Value;

pub struct Text;

impl Format for Text {
    fn name(&self) -> &'static str {
        "text"
    }
    fn detect(&self, v: &Value) -> bool {
        v.as_object().is_some_and(|o| o.get("text").is_some_and(Value::is_string) && !o.contains_key("label"))
    }
    fn parse(&self, v: &Value, _: &ReadOptions) -> Result<Vec<Example>, Errors> {
        let mut errs = vec![];
        let t = text(v, "text", &mut errs);
        if errs.is_empty() && t.trim().is_empty() {
            errs.push(("text".into(), "empty text".into()));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(vec![Example::Sft(Conversation { messages: vec![Message::new("assistant", t)], tools: None })])
    }
}
