//! Alpaca: `instruction`, optional `input`, `output`, optional `system` and `history`
//! (earlier `[query, response]` pairs). The user turn is instruction + "\n" + input,
//! as LLaMA-Factory builds it.
use super::{has, opt_text, text, validate, Errors, Format};
use crate::data::read::ReadOptions;
use crate::data::{Conversation, Example, Message};
use serde_json::Value;

pub struct Alpaca;

impl Format for Alpaca {
    fn name(&self) -> &'static str {
        "alpaca"
    }
    fn detect(&self, v: &Value) -> bool {
        has(v, &["instruction", "output"])
    }
    fn parse(&self, v: &Value, _: &ReadOptions) -> Result<Vec<Example>, Errors> {
        let mut errs = vec![];
        let mut messages = vec![];
        let system = opt_text(v, "system", &mut errs);
        if !system.is_empty() {
            messages.push(Message::new("system", system));
        }
        if let Some(h) = v.get("history").filter(|h| !h.is_null()) {
            match h.as_array() {
                Some(pairs) => {
                    for (i, p) in pairs.iter().enumerate() {
                        match p.as_array().map(|a| a.as_slice()) {
                            Some([Value::String(q), Value::String(a)]) => {
                                messages.push(Message::new("user", q.clone()));
                                messages.push(Message::new("assistant", a.clone()));
                            }
                            _ => errs.push((format!("history[{i}]"), "expected [query, response] strings".into())),
                        }
                    }
                }
                None => errs.push(("history".into(), "expected a list of [query, response] pairs".into())),
            }
        }
        let mut query = text(v, "instruction", &mut errs);
        let input = opt_text(v, "input", &mut errs);
        if !input.is_empty() {
            query = format!("{query}\n{input}");
        }
        messages.push(Message::new("user", query));
        messages.push(Message::new("assistant", text(v, "output", &mut errs)));
        let c = Conversation { messages, tools: None };
        if errs.is_empty() {
            validate(&c, "output", true, &mut errs);
            // Report an empty response against the field the user wrote.
            for e in errs.iter_mut() {
                if e.0.ends_with(".content") {
                    e.0 = "output".into();
                }
            }
        }
        if errs.is_empty() {
            Ok(vec![Example::Sft(c)])
        } else {
            Err(errs)
        }
    }
}
