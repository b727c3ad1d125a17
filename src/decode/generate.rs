//! Generation for one or many prompts at once: left-padded batched prefill, then one
//! token per row per step through the KV cache, with stop tokens and stop strings.
use super::sampler::{Sampler, SamplingParams};
use super::steer::Steer;
use crate::model::{Batch, CausalLm, LogitsFor};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub stop_strings: Vec<String>,
    /// Keep going past end-of-sequence tokens (benchmarks).
    pub ignore_eos: bool,
    /// End-of-sequence tokens are forbidden until this many tokens exist (as in transformers).
    pub min_new_tokens: usize,
    /// Decoding-time tuning: companion models that steer every step (proxy-tuning, EFT,
    /// contrastive decoding).
    pub steer: Option<Arc<Steer>>,
    /// Each prompt's random stream for sampling (empty, or for prompts past its end: the
    /// prompt's index in the call).
    pub streams: Vec<u64>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_new_tokens: 256, sampling: SamplingParams::default(), stop_strings: vec![], ignore_eos: false, min_new_tokens: 0, steer: None, streams: vec![] }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Eos,
    StopString,
    Length,
    ContextFull,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
}

struct Row {
    prompt: Vec<u32>,
    sampler: Sampler,
    tokens: Vec<u32>,
    text: String,
    finish: Option<FinishReason>,
}

/// Generate continuations of `prompts` (token ids). `on_text(row, delta)` is called
/// with each new piece of decoded text, for streaming.
pub fn generate(model: &CausalLm, tok: &Tokenizer, prompts: &[Vec<u32>], opts: &GenerateOptions, on_text: &mut (dyn FnMut(usize, &str) + Send)) -> Result<Vec<Generation>> {
    crate::model::on_workers(|| generate_here(model, tok, prompts, opts, on_text))
}

fn generate_here(model: &CausalLm, tok: &Tokenizer, prompts: &[Vec<u32>], opts: &GenerateOptions, on_text: &mut (dyn FnMut(usize, &str) + Send)) -> Result<Vec<Generation>> {
    let ctx = opts.steer.as_ref().map_or(usize::MAX, |s| s.max_position()).min(model.config.max_position);
    if let Some(p) = prompts.iter().find(|p| p.len() >= ctx) {
        return Err(Error::Input(format!("prompt of {} tokens does not fit the model's context of {ctx} tokens: shorten it", p.len())));
    }
    let mut rows: Vec<Row> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Row { prompt: p.clone(), sampler: Sampler::new(opts.sampling.clone(), opts.streams.get(i).copied().unwrap_or(i as u64)), tokens: vec![], text: String::new(), finish: None })
        .collect();
    if rows.is_empty() || opts.max_new_tokens == 0 {
        return Ok(finish_all(rows, FinishReason::Length));
    }
    let pad = tok.eos_id.unwrap_or(0);
    let (mut cache, mut logits) = prefill(model, prompts, pad)?;
    let steer = opts.steer.as_deref();
    let mut guide = steer.map(|s| s.start(|m| prefill(m, prompts, pad))).transpose()?;
    let mut positions: Vec<u32> = prompts.iter().map(|p| p.len() as u32).collect();
    // Rows still generating, in the cache's (and the logits') row order.
    let mut live: Vec<usize> = (0..rows.len()).collect();
    for _ in 0..opts.max_new_tokens {
        let mut rows_logits = logits.to_vec2::<f32>()?;
        if let (Some(s), Some(g)) = (steer, &guide) {
            s.apply(&mut rows_logits, g)?;
        }
        let mut next = Vec::with_capacity(live.len());
        for (&i, mut l) in live.iter().zip(rows_logits) {
            let row = &mut rows[i];
            if row.tokens.len() < opts.min_new_tokens {
                for &s in &tok.stop_ids {
                    if let Some(x) = l.get_mut(s as usize) {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            // Only the repetition penalty reads the history: skip the copy when it is off.
            let history: Vec<u32> = if row.sampler.params.repetition_penalty != 1.0 { row.prompt.iter().chain(&row.tokens).copied().collect() } else { vec![] };
            let t = row.sampler.sample(&mut l, &history);
            next.push(t);
            accept(row, t, tok, opts, i, on_text)?;
            if row.finish.is_none() && positions[i] as usize + 1 >= ctx {
                row.finish = Some(FinishReason::ContextFull);
            }
        }
        let keep: Vec<usize> = (0..live.len()).filter(|&j| rows[live[j]].finish.is_none()).collect();
        if keep.is_empty() {
            break;
        }
        // Finished rows leave the batch: later steps no longer compute them.
        if keep.len() < live.len() {
            cache.retain_rows(&keep)?;
            if let (Some(s), Some(g)) = (steer, &mut guide) {
                s.retain(g, &keep, live.len())?;
            }
            next = keep.iter().map(|&j| next[j]).collect();
            live = keep.iter().map(|&j| live[j]).collect();
        }
        let pos: Vec<u32> = live.iter().map(|&i| positions[i]).collect();
        let step = Batch::step(&next, &pos);
        live.iter().for_each(|&i| positions[i] += 1);
        logits = model.forward(&step, Some(&mut cache), LogitsFor::Last)?;
        if let (Some(s), Some(g)) = (steer, &mut guide) {
            s.step(g, &next, &pos)?;
        }
    }
    Ok(finish_all(rows, FinishReason::Length))
}

/// Run the prompts, filling a batch cache: as one left-padded batch when they are equally
/// long, else one prompt at a time, stacked after. Prompts of different lengths would
/// otherwise pay for attention over padding, and a batch's attention scores grow with
/// every row (24 SuperNI prompts, batches of 8: 94 s -> 44 s on SmolLM2).
fn prefill(model: &CausalLm, prompts: &[Vec<u32>], pad: u32) -> Result<(crate::model::cache::KvCache, candle_core::Tensor)> {
    if prompts.iter().all(|p| p.len() == prompts[0].len()) {
        let mut cache = model.new_cache();
        let logits = model.forward(&Batch::left_padded(prompts, pad)?, Some(&mut cache), LogitsFor::Last)?;
        return Ok((cache, logits));
    }
    let mut caches = Vec::with_capacity(prompts.len());
    let mut logits = Vec::with_capacity(prompts.len());
    for p in prompts {
        let mut c = model.new_cache();
        logits.push(model.forward(&Batch::single(p, 0), Some(&mut c), LogitsFor::Last)?);
        caches.push(c);
    }
    Ok((crate::model::cache::KvCache::stack_left_padded(&caches)?, candle_core::Tensor::cat(&logits, 0)?))
}

/// Add token `t` to a row: stop on EOS or a stop string, stream the new text.
fn accept(row: &mut Row, t: u32, tok: &Tokenizer, opts: &GenerateOptions, i: usize, on_text: &mut (dyn FnMut(usize, &str) + Send)) -> Result<()> {
    if !opts.ignore_eos && tok.stop_ids.contains(&t) {
        row.finish = Some(FinishReason::Eos);
        return Ok(());
    }
    row.tokens.push(t);
    let text = tok.decode(&row.tokens, true)?;
    // Hold back text that ends inside a multi-byte character.
    if text.ends_with('\u{FFFD}') {
        return Ok(());
    }
    let mut text = text;
    if let Some(cut) = opts.stop_strings.iter().filter_map(|s| text.find(s.as_str())).min() {
        text.truncate(cut);
        row.finish = Some(FinishReason::StopString);
    }
    if text.len() > row.text.len() && text.starts_with(&row.text) {
        on_text(i, &text[row.text.len()..]);
    }
    row.text = text;
    Ok(())
}

fn finish_all(rows: Vec<Row>, default: FinishReason) -> Vec<Generation> {
    rows.into_iter().map(|r| Generation { prompt_tokens: r.prompt.len(), tokens: r.tokens, text: r.text, finish: r.finish.unwrap_or(default) }).collect()
}
