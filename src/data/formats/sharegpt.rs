//! ShareGPT: `conversations` of `{from, value}` with roles human/gpt/system/
//! function_call/observation, optional `system` and `tools`.
use super::{has, kind, validate, Errors, Format};
use crate::data::read::ReadOptions;
use crate::data::{Conversation, Example, Message};
use serde_json::Value;

pub struct ShareGpt;

/// ShareGPT role -> chat role. A function call is an assistant turn carrying a tool call.
fn role(from: &str) -> Option<&'static str> {
    Some(match from {
        "human" | "user" => "user",
        "gpt" | "assistant" | "function_call" => "assistant",
        "system" => "system",
        "observation" | "tool" | "function" => "tool",
        _ => return None,
    })
}

pub(crate) fn turns(list: &Value, field: &str, errs: &mut Errors) -> Vec<Message> {
    let Some(items) = list.as_array() else {
        errs.push((field.into(), format!("expected a list of turns, found {}", kind(list))));
        return vec![];
    };
    let mut out = vec![];
    for (i, t) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let from = t.get("from").and_then(Value::as_str).unwrap_or("");
        let Some(r) = role(from) else {
            errs.push((format!("{f}.from"), format!("expected one of human|gpt|system|function_call|observation, got {from:?}")));
            continue;
        };
        let Some(value) = t.get("value").and_then(Value::as_str) else {
            errs.push((format!("{f}.value"), "expected a string".into()));
            continue;
        };
        let mut m = Message::new(r, value);
        if from == "function_call" {
            // Keep the call as structured data when it parses, as chat templates expect.
            let call = serde_json::from_str::<Value>(value).unwrap_or(Value::String(value.to_string()));
            m.tool_calls = Some(serde_json::json!([{"type": "function", "function": call}]));
            m.content = String::new();
        }
        out.push(m);
    }
    out
}

/// `tools` may be a JSON string (LLaMA-Factory) or a list.
pub(crate) fn tools(v: &Value) -> Option<Value> {
    super::json_field(v.get("tools"))
}

impl Format for ShareGpt {
    fn name(&self) -> &'static str {
        "sharegpt"
    }
    fn detect(&self, v: &Value) -> bool {
        has(v, &["conversations"])
    }
    fn parse(&self, v: &Value, _: &ReadOptions) -> Result<Vec<Example>, Errors> {
        let mut errs = vec![];
        let mut messages = vec![];
        if let Some(s) = v.get("system").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            messages.push(Message::new("system", s));
        }
        messages.extend(turns(&v["conversations"], "conversations", &mut errs));
        let c = Conversation { messages, tools: tools(v) };
        if errs.is_empty() {
            validate(&c, "conversations", true, &mut errs);
        }
        if errs.is_empty() {
            Ok(vec![Example::Sft(c)])
        } else {
            Err(errs)
        }
    }
}
