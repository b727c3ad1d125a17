//! Self-Instruct's task layout (its seed tasks, `user_oriented_instructions.jsonl`):
//! `instruction` plus `instances: [{input, output}]`, one example per instance. The user
//! turn is instruction + "\n" + input, as for Alpaca; `max_instances` caps each task.
use super::{kind, text, Errors, Format};
use crate::data::read::ReadOptions;
use crate::data::{Conversation, Example, Message};
use serde_json::Value;

pub struct SelfInstructTask;

impl Format for SelfInstructTask {
    fn name(&self) -> &'static str {
        "self-instruct"
    }
    fn detect(&self, v: &Value) -> bool {
        v.get("instruction").is_some() && v.get("instances").is_some_and(Value::is_array)
    }
    fn parse(&self, v: &Value, opts: &ReadOptions) -> Result<Vec<Example>, Errors> {
        let mut errs = vec![];
        let instruction = text(v, "instruction", &mut errs);
        let Some(instances) = v.get("instances").and_then(Value::as_array) else {
            return Err(vec![("instances".into(), "expected a list of {input, output}".into())]);
        };
        if instances.is_empty() {
            errs.push(("instances".into(), "empty: a task needs at least one instance".into()));
        }
        let mut out = vec![];
        for (i, inst) in instances.iter().enumerate() {
            if opts.superni.max_instances.is_some_and(|m| out.len() >= m) {
                break;
            }
            let input = match inst.get("input") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    errs.push((format!("instances[{i}].input"), format!("expected a string, found {}", kind(other))));
                    continue;
                }
            };
            let output = match inst.get("output") {
                Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                Some(Value::String(_)) => {
                    errs.push((format!("instances[{i}].output"), "empty response".into()));
                    continue;
                }
                Some(other) => {
                    errs.push((format!("instances[{i}].output"), format!("expected a string, found {}", kind(other))));
                    continue;
                }
                None => {
                    errs.push((format!("instances[{i}].output"), "missing".into()));
                    continue;
                }
            };
            let query = if input.trim().is_empty() { instruction.clone() } else { format!("{instruction}\n{input}") };
            let messages = vec![Message::new("user", query), Message::new("assistant", output)];
            out.push(Example::Sft(Conversation { messages, tools: None }));
        }
        if errs.is_empty() {
            Ok(out)
        } else {
            Err(errs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user_and_answer(e: &Example) -> (String, String) {
        let Example::Sft(c) = e else { panic!("not SFT: {e:?}") };
        (c.messages[0].content.clone(), c.messages[1].content.clone())
    }

    #[test]
    fn one_example_per_instance() {
        let v = json!({"id": "t0", "instruction": "Fix the grammar.", "instances": [
            {"input": "he go home", "output": "He goes home."},
            {"input": "", "output": "Nothing to fix."}]});
        assert!(SelfInstructTask.detect(&v));
        let got = SelfInstructTask.parse(&v, &ReadOptions::default()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(user_and_answer(&got[0]), ("Fix the grammar.\nhe go home".into(), "He goes home.".into()));
        assert_eq!(user_and_answer(&got[1]), ("Fix the grammar.".into(), "Nothing to fix.".into()));
        let mut capped = ReadOptions::default();
        capped.superni.max_instances = Some(1);
        assert_eq!(SelfInstructTask.parse(&v, &capped).unwrap().len(), 1);
    }

    #[test]
    fn bad_instances_name_the_field() {
        let v = json!({"instruction": "x", "instances": [{"input": "a", "output": ""}, {"input": 3, "output": "b"}, {"input": "c"}]});
        let errs = SelfInstructTask.parse(&v, &ReadOptions::default()).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(fields, ["instances[0].output", "instances[1].input", "instances[2].output"]);
        let empty = json!({"instruction": "x", "instances": []});
        assert_eq!(SelfInstructTask.parse(&empty, &ReadOptions::default()).unwrap_err()[0].0, "instances");
        assert!(!SelfInstructTask.detect(&json!({"instruction": "x", "output": "y"})));
    }
}
