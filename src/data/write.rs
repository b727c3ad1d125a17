//! Writing records back out in a chosen layout (JSONL or Parquet), atomically.
use super::{Conversation, Example, Message, Record};
use crate::Result;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// `{"messages": [{role, content}]}` (preference: `prompt`/`chosen`/`rejected` lists).
    Messages,
    /// `{"conversations": [{from, value}]}`.
    Sharegpt,
    /// `{"instruction", "input", "output", "system", "history"}` (single-answer chats).
    Alpaca,
}

fn messages_json(m: &[Message]) -> Value {
    Value::Array(m.iter().map(Message::to_template_value).collect())
}

fn sharegpt_json(m: &[Message]) -> Value {
    Value::Array(
        m.iter()
            .map(|m| {
                let from = match (m.role.as_str(), m.tool_calls.is_some()) {
                    ("assistant", true) => "function_call",
                    ("assistant", false) => "gpt",
                    ("user", _) => "human",
                    ("tool", _) => "observation",
                    (other, _) => other,
                };
                let value = match (&m.tool_calls, m.role.as_str()) {
                    (Some(tc), "assistant") => tc.get(0).and_then(|c| c.get("function")).map_or(String::new(), |f| f.to_string()),
                    _ => m.content.clone(),
                };
                json!({"from": from, "value": value})
            })
            .collect(),
    )
}

fn alpaca_json(c: &Conversation) -> Option<Value> {
    let mut msgs = c.messages.as_slice();
    let mut system = String::new();
    if let Some(first) = msgs.first().filter(|m| m.role == "system") {
        system = first.content.clone();
        msgs = &msgs[1..];
    }
    if !msgs.len().is_multiple_of(2) || msgs.iter().any(|m| m.tool_calls.is_some() || m.role == "tool") {
        return None;
    }
    let pairs: Vec<(&Message, &Message)> = msgs.chunks(2).map(|p| (&p[0], &p[1])).collect();
    let (last_q, last_a) = pairs.last()?;
    let history: Vec<Value> = pairs[..pairs.len() - 1].iter().map(|(q, a)| json!([q.content, a.content])).collect();
    Some(json!({"instruction": last_q.content, "input": "", "output": last_a.content, "system": system, "history": history}))
}

/// One JSON value per record in `layout`; None when the record cannot be expressed there.
pub fn to_json(e: &Example, layout: Layout) -> Option<Value> {
    Some(match (e, layout) {
        (Example::Sft(c), Layout::Messages) => {
            let mut v = json!({"messages": messages_json(&c.messages)});
            if let Some(t) = &c.tools {
                v["tools"] = t.clone();
            }
            v
        }
        (Example::Sft(c), Layout::Sharegpt) => {
            let mut v = json!({"conversations": sharegpt_json(&c.messages)});
            if let Some(t) = &c.tools {
                v["tools"] = Value::String(t.to_string());
            }
            v
        }
        (Example::Sft(c), Layout::Alpaca) => alpaca_json(c)?,
        (Example::Preference(p), Layout::Messages) => {
            json!({"prompt": messages_json(&p.prompt), "chosen": messages_json(&p.chosen), "rejected": messages_json(&p.rejected)})
        }
        (Example::Preference(p), Layout::Sharegpt) if p.chosen.len() == 1 && p.rejected.len() == 1 => json!({
            "conversations": sharegpt_json(&p.prompt),
            "chosen": sharegpt_json(&p.chosen)[0].clone(),
            "rejected": sharegpt_json(&p.rejected)[0].clone(),
        }),
        (Example::Labelled(c, label), Layout::Messages) => json!({"messages": messages_json(&c.messages), "label": label}),
        (Example::Scored(c, scores), Layout::Messages) => {
            let s: serde_json::Map<String, Value> = scores.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            json!({"messages": messages_json(&c.messages), "scores": s})
        }
        _ => return None,
    })
}

/// Write every record as JSONL in `layout` (temp file + rename); errors on the first
/// record the layout cannot hold, naming it. `extra` adds fields per record (e.g. source).
pub fn write_jsonl(path: &Path, records: &[Record], layout: Layout) -> Result<usize> {
    write_with(path, records.iter().map(|r| (r, None)), layout)
}

/// Write a stream of records as JSONL line by line (bounded memory), or as Parquet when
/// `path` ends in `.parquet` (collected first); atomically. Stops at the first error.
pub fn write_stream(path: &Path, records: impl Iterator<Item = Result<Record>>, layout: Layout) -> Result<usize> {
    write_values(path, records.map(|r| r.and_then(|r| to_json(&r.example, layout).ok_or_else(|| unwritable(&r, layout)))))
}

/// Write JSON rows as JSONL line by line (bounded memory), or as Parquet when `path`
/// ends in `.parquet` (collected first); atomically: nothing is left at `path` on error.
pub fn write_values(path: &Path, rows: impl Iterator<Item = Result<Value>>) -> Result<usize> {
    if path.extension().is_some_and(|e| e == "parquet") {
        let rows = rows.collect::<Result<Vec<Value>>>()?;
        super::parquet_io::write_rows(path, &rows)?;
        return Ok(rows.len());
    }
    let tmp = path.with_extension("jsonl.partial");
    let result = (|| -> Result<usize> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let mut n = 0;
        for v in rows {
            serde_json::to_writer(&mut f, &v?).map_err(|e| crate::Error::Input(e.to_string()))?;
            f.write_all(b"\n")?;
            n += 1;
        }
        f.flush()?;
        Ok(n)
    })();
    match result {
        Ok(n) => {
            std::fs::rename(&tmp, path)?;
            Ok(n)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn unwritable(r: &Record, layout: Layout) -> crate::Error {
    crate::Error::Input(format!("{}: this record cannot be written as {layout:?} (e.g. tool calls or multi-turn preference in alpaca)", r.origin))
}

/// Write records (JSONL, or Parquet when `path` ends in `.parquet`) atomically, each
/// with an optional extra field.
pub fn write_with<'a>(path: &Path, records: impl Iterator<Item = (&'a Record, Option<(&'a str, Value)>)>, layout: Layout) -> Result<usize> {
    write_values(
        path,
        records.map(|(r, extra)| {
            let mut v = to_json(&r.example, layout).ok_or_else(|| unwritable(r, layout))?;
            if let Some((k, x)) = extra {
                v[k] = x;
            }
            Ok(v)
        }),
    )
}
