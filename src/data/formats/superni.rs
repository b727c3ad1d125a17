//! Super-NaturalInstructions: task files (`Definition`, `Positive Examples`,
//! `Negative Examples`, `Instances`) and evaluation lines (`task`, `definition`,
//! `positive_examples`, `input`, `references`), turned into the standard Tk-Instruct
//! prompt: definition, k positive (optionally negative) examples, then the instance.
use super::{has, Errors, Format};
use crate::data::read::ReadOptions;
use crate::data::{Conversation, Example, Message};
use serde_json::Value;
use std::collections::HashSet;

#[derive(Debug, Clone)]
pub struct SuperNiOptions {
    /// Positive examples shown before the instance.
    pub k_positive: usize,
    pub k_negative: usize,
    pub explanations: bool,
    /// Instance ids to leave out (e.g. those of an evaluation set).
    pub exclude_ids: HashSet<String>,
    /// Keep at most this many instances per task file (after exclusion).
    pub max_instances: Option<usize>,
}

impl Default for SuperNiOptions {
    fn default() -> Self {
        SuperNiOptions { k_positive: 2, k_negative: 0, explanations: false, exclude_ids: HashSet::new(), max_instances: None }
    }
}

/// A demonstration: input, output and optional explanation.
pub struct Demo<'a> {
    pub input: &'a str,
    pub output: &'a str,
    pub explanation: Option<&'a str>,
}

/// Append `s`, ending it with "." unless it ends in punctuation (as the official code does).
fn sentence(out: &mut String, s: &str) {
    out.push_str(s);
    if !out.chars().last().is_some_and(|c| c.is_ascii_punctuation()) {
        out.push('.');
    }
    out.push('\n');
}

/// The standard SuperNI / Tk-Instruct prompt, ending in "Output: ".
pub fn prompt(definition: &str, positive: &[Demo], negative: &[Demo], input: &str, explanations: bool) -> String {
    let mut s = String::new();
    if !definition.trim().is_empty() {
        s.push_str(&format!("Definition: {}\n\n", definition.trim()));
    }
    for (label, demos) in [("Positive", positive), ("Negative", negative)] {
        for (i, d) in demos.iter().enumerate() {
            let mut e = format!(" {label} Example {} -\n", i + 1);
            sentence(&mut e, &format!("Input: {}", d.input.trim()));
            sentence(&mut e, &format!(" Output: {}", d.output.trim()));
            if let (true, Some(x)) = (explanations, d.explanation) {
                sentence(&mut e, &format!(" Explanation: {}", x.trim()));
            }
            e.push('\n');
            s.push_str(&e);
        }
    }
    s.push_str("Now complete the following example -\n");
    sentence(&mut s, &format!("Input: {}", input.trim()));
    s.push_str("Output: ");
    s
}

fn demos<'a>(v: &'a Value, field: &str, k: usize) -> Vec<Demo<'a>> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .take(k)
                .map(|d| Demo {
                    input: d.get("input").and_then(Value::as_str).unwrap_or(""),
                    output: d.get("output").and_then(Value::as_str).unwrap_or(""),
                    explanation: d.get("explanation").and_then(Value::as_str),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// References are strings, but some tasks store numbers.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn example(prompt: String, response: &str) -> Example {
    let messages = vec![Message::new("user", prompt), Message::new("assistant", response)];
    Example::Sft(Conversation { messages, tools: None })
}

/// A whole task file: one example per instance.
pub struct SuperNiTask;

impl Format for SuperNiTask {
    fn name(&self) -> &'static str {
        "superni-task"
    }
    fn detect(&self, v: &Value) -> bool {
        has(v, &["Definition", "Instances"])
    }
    fn parse(&self, v: &Value, opts: &ReadOptions) -> Result<Vec<Example>, Errors> {
        let o = &opts.superni;
        let definition = match &v["Definition"] {
            Value::Array(a) => a.first().and_then(Value::as_str).unwrap_or(""),
            Value::String(s) => s,
            _ => return Err(vec![("Definition".into(), "expected a string or a list of strings".into())]),
        };
        let pos = demos(v, "Positive Examples", o.k_positive);
        let neg = demos(v, "Negative Examples", o.k_negative);
        let Some(instances) = v["Instances"].as_array() else {
            return Err(vec![("Instances".into(), "expected a list".into())]);
        };
        let mut out = vec![];
        let mut errs = vec![];
        for (i, inst) in instances.iter().enumerate() {
            let id = inst.get("id").and_then(Value::as_str).unwrap_or("");
            if o.exclude_ids.contains(id) {
                continue;
            }
            if o.max_instances.is_some_and(|m| out.len() >= m) {
                break;
            }
            let input = inst.get("input").and_then(Value::as_str);
            let output = match inst.get("output") {
                Some(Value::Array(a)) => a.first().and_then(scalar_text),
                Some(v) => scalar_text(v),
                None => None,
            };
            match (input, output) {
                (Some(inp), Some(outp)) if !outp.trim().is_empty() => out.push(example(prompt(definition, &pos, &neg, inp, o.explanations), &outp)),
                (None, _) => errs.push((format!("Instances[{i}].input"), "missing".into())),
                _ => errs.push((format!("Instances[{i}].output"), "missing or empty".into())),
            }
        }
        if errs.is_empty() {
            Ok(out)
        } else {
            Err(errs)
        }
    }
}

/// One evaluation instance per line (`eval_dev.jsonl`); the response is the first reference.
pub struct SuperNiInstance;

impl Format for SuperNiInstance {
    fn name(&self) -> &'static str {
        "superni"
    }
    fn detect(&self, v: &Value) -> bool {
        has(v, &["definition", "input", "references"])
    }
    fn parse(&self, v: &Value, opts: &ReadOptions) -> Result<Vec<Example>, Errors> {
        let o = &opts.superni;
        let definition = v["definition"].as_str().unwrap_or("");
        let pos = demos(v, "positive_examples", o.k_positive);
        let input = v["input"].as_str().ok_or_else(|| vec![("input".to_string(), "expected a string".to_string())])?;
        let reference = v["references"].as_array().and_then(|r| r.first()).and_then(scalar_text);
        let Some(reference) = reference.filter(|r| !r.trim().is_empty()) else {
            return Err(vec![("references".into(), "expected a non-empty list of strings".into())]);
        };
        Ok(vec![example(prompt(definition, &pos, &[], input, o.explanations), &reference)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_prompt_layout() {
        let pos = [Demo { input: "2+2", output: "4", explanation: None }];
        let p = prompt("Add the numbers", &pos, &[], "3+3", false);
        assert_eq!(p, "Definition: Add the numbers\n\n Positive Example 1 -\nInput: 2+2.\n Output: 4.\n\nNow complete the following example -\nInput: 3+3.\nOutput: ");
    }
}
