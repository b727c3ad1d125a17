//! Responses with numeric attribute scores, for regression reward models: HelpSteer2's
//! layout (`prompt`, `response`, and one number per attribute: `helpfulness`,
//! `correctness`, `coherence`, `complexity`, `verbosity`), or `messages` with a `scores`
//! object (`{"helpfulness": 3, ...}`). Attributes keep the record's order.
use super::{has, kind, message_list, text, validate, Errors, Format};
use crate::data::read::ReadOptions;
use crate::data::{Conversation, Example, Message};
use serde_json::Value;

/// HelpSteer2's attribute columns.
pub const HELPSTEER2: &[&str] = &["helpfulness", "correctness", "coherence", "complexity", "verbosity"];

pub struct Scored;

impl Format for Scored {
    fn name(&self) -> &'static str {
        "scored"
    }
    fn detect(&self, v: &Value) -> bool {
        (has(v, &["messages", "scores"]) && v["scores"].is_object()) || (has(v, &["prompt", "response"]) && HELPSTEER2.iter().any(|k| v.get(k).is_some_and(Value::is_number)))
    }
    fn parse(&self, v: &Value, _: &ReadOptions) -> Result<Vec<Example>, Errors> {
        let mut errs = vec![];
        let (messages, scores) = if has(v, &["messages"]) {
            let m = message_list(v, "messages", &mut errs);
            let s = match v.get("scores") {
                Some(Value::Object(o)) => o.iter().map(|(k, x)| number(x, &format!("scores.{k}"), &mut errs).map(|n| (k.clone(), n))).collect::<Option<Vec<_>>>(),
                other => {
                    errs.push(("scores".into(), format!("expected an object of numbers, found {}", other.map_or("nothing", kind))));
                    None
                }
            };
            (m, s.unwrap_or_default())
        } else {
            let m = vec![Message::new("user", text(v, "prompt", &mut errs)), Message::new("assistant", text(v, "response", &mut errs))];
            let s = HELPSTEER2.iter().filter(|k| v.get(**k).is_some()).filter_map(|k| number(&v[*k], k, &mut errs).map(|n| (k.to_string(), n))).collect();
            (m, s)
        };
        if scores.is_empty() && errs.is_empty() {
            errs.push(("scores".into(), "no attribute scores".into()));
        }
        let c = Conversation { messages, tools: None };
        validate(&c, "messages", true, &mut errs);
        if errs.is_empty() {
            Ok(vec![Example::Scored(c, scores)])
        } else {
            Err(errs)
        }
    }
}

/// The attribute names of a scored file's first record, in order.
pub fn attribute_names(path: &std::path::Path) -> crate::Result<Vec<String>> {
    let opts = ReadOptions { format: Some("scored".into()), skip_invalid: true, ..Default::default() };
    for r in crate::data::read::stream(path, &opts)?.flatten() {
        if let Example::Scored(_, s) = r.example {
            return Ok(s.into_iter().map(|x| x.0).collect());
        }
    }
    Err(crate::Error::file(path, "no scored record"))
}

fn number(v: &Value, field: &str, errs: &mut Errors) -> Option<f64> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Some(x),
        _ => {
            errs.push((field.into(), format!("expected a number, found {}", kind(v))));
            None
        }
    }
}
