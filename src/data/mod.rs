//! Instruction data: files on disk -> validated records -> token ids with loss masks -> batches.
//!
//! Readers (one per layout, in `formats/`) turn JSON values into [`Example`]s and report
//! every problem with its file, line or record, and field.
pub mod cache;
pub mod dedup;
pub mod formats;
pub mod mix;
pub mod pack;
pub mod parquet_io;
pub mod read;
pub mod render;
pub mod select;
pub mod stats;
pub mod write;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Where a record came from: `file:line` for JSONL, `file:record N` for JSON arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based line (JSONL) or record number (JSON array, Parquet row).
    pub index: usize,
    pub is_line: bool,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_line {
            write!(f, "{}:{}", self.file.display(), self.index)
        } else {
            write!(f, "{}: record {}", self.file.display(), self.index)
        }
    }
}

/// One thing wrong with one record.
#[derive(Debug, Clone)]
pub struct Problem {
    pub origin: Origin,
    pub field: String,
    pub msg: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.origin, self.msg)
        } else {
            write!(f, "{}: field {:?}: {}", self.origin, self.field, self.msg)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool_calls: Option<serde_json::Value>,
    /// Per-turn loss switch from the data (`loss_weight`), overriding the policy.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub train: Option<bool>,
}

impl Message {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Message { role: role.to_string(), content: content.into(), tool_calls: None, train: None }
    }

    /// The OpenAI-style object a chat template expects.
    pub fn to_template_value(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"role": self.role, "content": self.content});
        if let Some(tc) = &self.tool_calls {
            v["tool_calls"] = tc.clone();
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub messages: Vec<Message>,
    pub tools: Option<serde_json::Value>,
}

/// A prompt with a preferred and a rejected continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferencePair {
    pub prompt: Vec<Message>,
    pub chosen: Vec<Message>,
    pub rejected: Vec<Message>,
    /// How much better chosen is (a record's numeric `margin`): the reward model's
    /// Bradley-Terry loss asks for at least this difference.
    pub margin: Option<f64>,
}

/// A record after reading: what it is, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Example {
    Sft(Conversation),
    Preference(PreferencePair),
    /// A single response labelled desirable or not (KTO).
    Labelled(Conversation, bool),
    /// A response with numeric attribute scores (HelpSteer2-style reward regression).
    Scored(Conversation, Vec<(String, f64)>),
}

#[derive(Debug, Clone)]
pub struct Record {
    pub origin: Origin,
    pub example: Example,
}

pub const ROLES: &[&str] = &["system", "user", "assistant", "tool"];
