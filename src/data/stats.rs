//! Token-length statistics of a dataset under a model's tokenizer and template,
//! rendered on all cores.
use super::render::{render, LossOn, Rendered};
use super::{Example, Record};
use crate::tokenizer::{ChatTemplate, Tokenizer};
use crate::Result;
use rayon::prelude::*;
use serde::Serialize;

/// Render every SFT record in parallel (order kept); preference records use their chosen side.
pub fn render_all(tok: &Tokenizer, tmpl: &ChatTemplate, records: &[Record], loss: LossOn) -> Result<Vec<Rendered>> {
    records
        .par_iter()
        .map(|r| {
            let c = match &r.example {
                Example::Sft(c) | Example::Labelled(c, _) => c.clone(),
                Example::Preference(p) => super::Conversation { messages: p.prompt.iter().chain(&p.chosen).cloned().collect(), tools: None },
            };
            render(tok, tmpl, &c, loss)
        })
        .collect()
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
