//! Token-length statistics of a dataset under a model's tokenizer and template,
//! rendered on all cores.
use super::render::{render, LossOn, Rendered};
use super::{Conversation, Example, Record};
use crate::tokenizer::{ChatTemplate, Tokenizer};
use crate::Result;
use rayon::prelude::*;
use serde::Serialize;

/// The conversations a record trains on: its own, or a preference pair's prompt +
/// chosen and prompt + rejected.
pub fn conversations(e: &Example) -> Vec<Conversation> {
    match e {
        Example::Sft(c) | Example::Labelled(c, _) | Example::Scored(c, _) => vec![c.clone()],
        Example::Preference(p) => [&p.chosen, &p.rejected].into_iter().map(|side| Conversation { messages: p.prompt.iter().chain(side.iter()).cloned().collect(), tools: None }).collect(),
    }
}

/// Render every record in parallel (order kept): one rendering per conversation, so
/// preference records give two (chosen, rejected).
pub fn render_all(tok: &Tokenizer, tmpl: &ChatTemplate, records: &[Record], loss: LossOn) -> Result<Vec<Vec<Rendered>>> {
    records.par_iter().map(|r| conversations(&r.example).iter().map(|c| render(tok, tmpl, c, loss)).collect()).collect()
}

#[derive(Debug, Serialize)]
pub struct LengthStats {
    pub examples: usize,
    pub tokens: usize,
    pub trained_tokens: usize,
    pub mean: f64,
    pub p50: usize,
    pub p90: usize,
    pub p99: usize,
    pub max: usize,
    pub max_len: usize,
    /// Fraction of examples longer than `max_len`.
    pub truncated: f64,
}

/// Statistics of `(tokens, trained tokens)` per example.
pub fn length_stats(examples: &[(usize, usize)], max_len: usize) -> LengthStats {
    let mut lens: Vec<usize> = examples.iter().map(|e| e.0).collect();
    lens.sort_unstable();
    let q = |p: f64| lens.get(((lens.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0);
    let tokens: usize = lens.iter().sum();
    LengthStats {
        examples: lens.len(),
        tokens,
        trained_tokens: examples.iter().map(|e| e.1).sum(),
        mean: tokens as f64 / lens.len().max(1) as f64,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        max: lens.last().copied().unwrap_or(0),
        max_len,
        truncated: lens.iter().filter(|&&l| l > max_len).count() as f64 / lens.len().max(1) as f64,
    }
}
