//! One reader per data layout, behind [`Format`]. Adding a layout is one file here
//! plus one line in [`FORMATS`].
pub mod alpaca;
pub mod gsm8k;
pub mod messages;
pub mod preference;
pub mod scored;
pub mod self_instruct;
pub mod sharegpt;
pub mod superni;
pub mod text;

use super::read::ReadOptions;
use super::{Conversation, Example, Message, ROLES};
use crate::{Error, Result};
use serde_json::Value;

/// (field, message) pairs; a record may have several.
pub type Errors = Vec<(String, String)>;

pub trait Format: Sync {
    fn name(&self) -> &'static str;
    /// Does this record look like this layout?
    fn detect(&self, v: &Value) -> bool;
    /// Parse one record (a SuperNI task file gives many examples).
    fn parse(&self, v: &Value, opts: &ReadOptions) -> std::result::Result<Vec<Example>, Errors>;
}

/// Detection order matters: more specific layouts first.
pub static FORMATS: &[&dyn Format] = &[
    &preference::ShareGptPreference,
    &preference::MessagesPreference,
    &preference::TrlPreference,
    &preference::HhRlhf,
    &preference::Kto,
    &scored::Scored,
    &superni::SuperNiTask,
    &superni::SuperNiInstance,
    &self_instruct::SelfInstructTask,
    &sharegpt::ShareGpt,
    &messages::Messages,
    &gsm8k::Gsm8k,
    &alpaca::Alpaca,
    &text::Text,
];

pub fn names() -> Vec<&'static str> {
    FORMATS.iter().map(|f| f.name()).collect()
}

pub fn by_name(name: &str) -> Result<&'static dyn Format> {
    FORMATS.iter().copied().find(|f| f.name() == name).ok_or_else(|| Error::Input(format!("unknown data format {name:?}: one of {}", names().join(", "))))
}

pub fn detect(v: &Value) -> Option<&'static dyn Format> {
    FORMATS.iter().copied().find(|f| f.detect(v))
}

pub(crate) fn has(v: &Value, keys: &[&str]) -> bool {
    keys.iter().all(|k| v.get(k).is_some())
}

/// A required string field.
pub(crate) fn text(v: &Value, field: &str, errs: &mut Errors) -> String {
    match v.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            errs.push((field.to_string(), format!("expected a string, found {}", kind(other))));
            String::new()
        }
        None => {
            errs.push((field.to_string(), "missing".to_string()));
            String::new()
        }
    }
}

/// An optional string field ("" when absent).
pub(crate) fn opt_text(v: &Value, field: &str, errs: &mut Errors) -> String {
    match v.get(field) {
        None | Some(Value::Null) => String::new(),
        Some(_) => text(v, field, errs),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Check a conversation: known roles, an optional leading system turn, user and
/// assistant alternating (tool results after assistant tool calls), non-empty responses,
/// ending with an assistant turn when `needs_response`.
pub(crate) fn validate(c: &Conversation, field: &str, needs_response: bool, errs: &mut Errors) {
    let msgs = &c.messages;
    if msgs.is_empty() {
        errs.push((field.to_string(), "no messages".to_string()));
        return;
    }
    let mut prev = "";
    let before = errs.len();
    for (i, m) in msgs.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if !ROLES.contains(&m.role.as_str()) {
            errs.push((format!("{f}.role"), format!("expected one of {}, got {:?}", ROLES.join("|"), m.role)));
            prev = "";
            continue;
        }
        let ok = match m.role.as_str() {
            "system" => i == 0,
            "user" => matches!(prev, "" | "system" | "assistant" | "tool"),
            "assistant" => matches!(prev, "user" | "tool") || (prev == "assistant" && msgs[i - 1].tool_calls.is_some()),
            _ => matches!(prev, "assistant" | "tool"), // tool
        };
        if !ok {
            let after = if prev.is_empty() { "the start".to_string() } else { format!("a {prev:?} turn") };
            errs.push((format!("{f}.role"), format!("{:?} cannot follow {after}", m.role)));
        }
        if m.role == "assistant" && m.content.trim().is_empty() && m.tool_calls.is_none() {
            errs.push((format!("{f}.content"), "empty response".to_string()));
        }
        prev = &m.role;
    }
    // A bad role already explains a missing response; one problem, not two.
    if needs_response && prev != "assistant" && errs.len() == before {
        errs.push((field.to_string(), format!("last turn is {prev:?}; a training example must end with an assistant response")));
    }
}

/// `[{"role", "content"}]` -> messages; content may be a string or a list of text parts.
pub(crate) fn message_list(v: &Value, field: &str, errs: &mut Errors) -> Vec<Message> {
    let Some(items) = v.get(field).and_then(Value::as_array) else {
        errs.push((field.to_string(), "expected a list of messages".to_string()));
        return vec![];
    };
    items.iter().enumerate().map(|(i, m)| message(m, &format!("{field}[{i}]"), errs)).collect()
}

pub(crate) fn message(m: &Value, f: &str, errs: &mut Errors) -> Message {
    let role = match m.get("role").and_then(Value::as_str) {
        Some(r) => r.to_string(),
        None => {
            errs.push((format!("{f}.role"), "missing".to_string()));
            String::new()
        }
    };
    let content = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").or_else(|| p.get("value")).and_then(Value::as_str)).collect::<Vec<_>>().join(""),
        None | Some(Value::Null) => String::new(),
        Some(other) => {
            errs.push((format!("{f}.content"), format!("expected a string or a list of parts, found {}", kind(other))));
            String::new()
        }
    };
    let train = m.get("loss_weight").and_then(Value::as_f64).map(|w| w > 0.0);
    Message { role, content, tool_calls: json_field(m.get("tool_calls")), train }
}

/// A free-form JSON field (tool calls, tool schemas): the value, or JSON text parsed back
/// (Parquet files store these as strings).
pub(crate) fn json_field(v: Option<&Value>) -> Option<Value> {
    match v? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(serde_json::from_str(s).unwrap_or(Value::String(s.clone()))),
        other => Some(other.clone()),
    }
}
