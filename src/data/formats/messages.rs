//! OpenAI messages: `messages` of `{role, content}` (content a string or text parts),
//! with optional `tool_calls` and `tools`; `loss_weight` per turn is honoured.
use super::{has, message_list, validate, Errors, Format};
use crate::data::read::ReadOptions;
use crate::data::{Conversation, Example};
use serde_json::Value;

pub struct Messages;

impl Format for Messages {
    fn name(&self) -> &'static str {
        "messages"
    }
    fn detect(&self, v: &Value) -> bool {
        has(v, &["messages"])
    }
    fn parse(&self, v: &Value, _: &ReadOptions) -> Result<Vec<Example>, Errors> {
        let mut errs = vec![];
        let messages = message_list(v, "messages", &mut errs);
        let c = Conversation { messages, tools: super::json_field(v.get("tools")) };
        if errs.is_empty() {
            validate(&c, "messages", true, &mut errs);
        }
        if errs.is_empty() {
            Ok(vec![Example::Sft(c)])
        } else {
            Err(errs)
        }
    }
}
