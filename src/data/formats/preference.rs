//! Preference data: ShareGPT (`conversations` + `chosen`/`rejected` turns), messages
//! (`chosen_messages`/`rejected_messages`), TRL (`prompt`/`chosen`/`rejected`, strings or
//! message lists), hh-rlhf ("\n\nHuman:"/"\n\nAssistant:" strings), and KTO-style single
//! responses with a desirable/undesirable `label`.
use super::sharegpt::turns;
use super::{has, kind, message, message_list, validate, Errors, Format};
use crate::data::read::ReadOptions;
use crate::data::{Conversation, Example, Message, PreferencePair};
use serde_json::Value;

fn pair(prompt: Vec<Message>, chosen: Vec<Message>, rejected: Vec<Message>, mut errs: Errors) -> Result<Vec<Example>, Errors> {
    for (name, side) in [("chosen", &chosen), ("rejected", &rejected)] {
        if side.is_empty() && errs.is_empty() {
            errs.push((name.into(), "missing: a preference pair needs both a chosen and a rejected response".into()));
        }
        // What differs between the sides must be the response: a side that starts with
        // another user (or system) turn means the two prompts do not match.
        if let Some(at) = side.iter().position(|m| m.role != "assistant" && m.role != "tool") {
            if errs.is_empty() {
                errs.push((format!("{name}[{at}]"), format!("the prompts of chosen and rejected differ (a {:?} turn after the shared prompt)", side[at].role)));
            }
        }
        let c = Conversation { messages: prompt.iter().chain(side.iter()).cloned().collect(), tools: None };
        validate(&c, name, true, &mut errs);
    }
    if errs.is_empty() && chosen == rejected {
        errs.push(("rejected".into(), "identical to chosen: the pair expresses no preference".into()));
    }
    if errs.is_empty() {
        Ok(vec![Example::Preference(PreferencePair { prompt, chosen, rejected, margin: None })])
    } else {
        Err(errs)
    }
}

/// A record's numeric `margin`, kept with its pair.
fn with_margin(v: &Value, parsed: Result<Vec<Example>, Errors>) -> Result<Vec<Example>, Errors> {
    let mut out = parsed?;
    if let (Some(m), Some(Example::Preference(p))) = (v.get("margin").and_then(Value::as_f64), out.first_mut()) {
        p.margin = Some(m);
    }
    Ok(out)
}

pub struct ShareGptPreference;

impl Format for ShareGptPreference {
    fn name(&self) -> &'static str {
        "sharegpt-preference"
    }
    fn detect(&self, v: &Value) -> bool {
        has(v, &["conversations", "chosen", "rejected"])
    }
    fn parse(&self, v: &Value, _: &ReadOptions) -> Result<Vec<Example>, Errors> {
        let mut errs = vec![];
        let prompt = turns(&v["conversations"], "conversations", &mut errs);
        let side = |f: &str, errs: &mut Errors| turns(&Value::Array(vec![v[f].clone()]), f, errs);
        let chosen = side("chosen", &mut errs);
        let rejected = side("rejected", &mut errs);
        with_margin(v, pair(prompt, chosen, rejected, errs))
    }
}

/// Split two full conversations into their shared prompt and differing endings.
fn split_common(a: Vec<Message>, b: Vec<Message>) -> (Vec<Message>, Vec<Message>, Vec<Message>) {
    let n = a.iter().zip(&b).take_while(|(x, y)| x.role == y.role && x.content == y.content).count();
    let n = n.min(a.len().saturating_sub(1)).min(b.len().saturating_sub(1));
    (a[..n].to_vec(), a[n..].to_vec(), b[n..].to_vec())
}

pub struct MessagesPreference;

impl Format for MessagesPreference {
    fn name(&self) -> &'static str {
        "messages-preference"
    }
    fn detect(&self, v: &Value) -> bool {
        has(v, &["chosen_messages", "rejected_messages"])
    }
    fn parse(&self, v: &Value, _: &ReadOptions) -> Result<Vec<Example>, Errors> {
        let mut errs = vec![];
        let a = message_list(v, "chosen_messages", &mut errs);
        let b = message_list(v, "rejected_messages", &mut errs);
        let (p, c, r) = split_common(a, b);
        with_margin(v, pair(p, c, r, errs))
    }
}

/// A TRL field: a string (plain text; the side is one assistant turn) or message list.
fn trl_side(v: &Value, field: &str, role: &str, errs: &mut Errors) -> Vec<Message> {
    match v.get(field) {
        Some(Value::String(s)) => vec![Message::new(role, s.clone())],
        Some(Value::Array(_)) => message_list(v, field, errs),
        Some(Value::Object(_)) => vec![message(&v[field], field, errs)],
        other => {
            errs.push((field.into(), format!("expected a string or a list of messages, found {}", other.map_or("nothing", kind))));
            vec![]
        }
    }
}

pub struct TrlPreference;

impl Format for TrlPreference {
    fn name(&self) -> &'static str {
        "trl-preference"
    }
    fn detect(&self, v: &Value) -> bool {
        has(v, &["prompt", "chosen", "rejected"])
    }
    fn parse(&self, v: &Value, _: &ReadOptions) -> Result<Vec<Example>, Errors> {
        let mut errs = vec![];
        let prompt = trl_side(v, "prompt", "user", &mut errs);
        let chosen = trl_side(v, "chosen", "assistant", &mut errs);
        let rejected = trl_side(v, "rejected", "assistant", &mut errs);
        with_margin(v, pair(prompt, chosen, rejected, errs))
    }
}

/// "\n\nHuman: ...\n\nAssistant: ..." -> messages.
pub fn hh_turns(s: &str, field: &str, errs: &mut Errors) -> Vec<Message> {
    let mut out: Vec<Message> = vec![];
    let mut rest = s;
    while !rest.is_empty() {
        let (role, after) = if let Some(r) = rest.strip_prefix("\n\nHuman:") {
            ("user", r)
        } else if let Some(r) = rest.strip_prefix("\n\nAssistant:") {
            ("assistant", r)
        } else if out.is_empty() {
            errs.push((field.into(), "expected the text to start with \"\\n\\nHuman:\"".into()));
            return out;
        } else {
            unreachable!("the loop always cuts at a marker")
        };
        let end = [after.find("\n\nHuman:"), after.find("\n\nAssistant:")].into_iter().flatten().min().unwrap_or(after.len());
        out.push(Message::new(role, after[..end].trim()));
        rest = &after[end..];
    }
    out
}

pub struct HhRlhf;

impl Format for HhRlhf {
    fn name(&self) -> &'static str {
        "hh-rlhf"
    }
    fn detect(&self, v: &Value) -> bool {
        v.get("chosen").and_then(Value::as_str).is_some_and(|s| s.starts_with("\n\nHuman:")) && has(v, &["rejected"])
    }
    fn parse(&self, v: &Value, _: &ReadOptions) -> Result<Vec<Example>, Errors> {
        let mut errs = vec![];
        let a = hh_turns(v["chosen"].as_str().unwrap_or(""), "chosen", &mut errs);
        let b = hh_turns(v["rejected"].as_str().unwrap_or(""), "rejected", &mut errs);
        let (p, c, r) = split_common(a, b);
        with_margin(v, pair(p, c, r, errs))
    }
}

pub struct Kto;

impl Format for Kto {
    fn name(&self) -> &'static str {
        "kto"
    }
    fn detect(&self, v: &Value) -> bool {
        has(v, &["label"]) && (has(v, &["messages"]) || has(v, &["completion"]))
    }
    fn parse(&self, v: &Value, _: &ReadOptions) -> Result<Vec<Example>, Errors> {
        let mut errs = vec![];
        let label = match &v["label"] {
            Value::Bool(b) => *b,
            Value::String(s) if s == "true" || s == "desirable" => true,
            Value::String(s) if s == "false" || s == "undesirable" => false,
            other => {
                errs.push(("label".into(), format!("expected true/false, found {}", kind(other))));
                false
            }
        };
        let messages = if has(v, &["messages"]) {
            message_list(v, "messages", &mut errs)
        } else {
            let mut m = trl_side(v, "prompt", "user", &mut errs);
            m.extend(trl_side(v, "completion", "assistant", &mut errs));
            m
        };
        let c = Conversation { messages, tools: None };
        if errs.is_empty() {
            validate(&c, "messages", true, &mut errs);
        }
        if errs.is_empty() {
            Ok(vec![Example::Labelled(c, label)])
        } else {
            Err(errs)
        }
    }
}
