//! Generation for one or many prompts at once: left-padded batched prefill, then one
//! token per row per step through the KV cache, with stop tokens and stop strings.
use super::sampler::{Sampler, SamplingParams};
use super::steer::Steer;
use crate::model::cache::KvCache;
use crate::model::{Batch, CausalLm, LogitsFor};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use candle_core::Tensor;
use rayon::prelude::*;
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
    /// The prompt's index in the call.
    index: usize,
    prompt: Vec<u32>,
    sampler: Sampler,
    tokens: Vec<u32>,
    text: String,
    finish: Option<FinishReason>,
    /// Tokens sampled so far (end-of-sequence included), and the next token's position.
    steps: usize,
    position: u32,
}

/// Generate continuations of `prompts` (token ids). `on_text(row, delta)` is called
/// with each new piece of decoded text, for streaming.
pub fn generate(model: &CausalLm, tok: &Tokenizer, prompts: &[Vec<u32>], opts: &GenerateOptions, on_text: &mut (dyn FnMut(usize, &str) + Send)) -> Result<Vec<Generation>> {
    let mut out: Vec<Option<Generation>> = vec![None; prompts.len()];
    let mut dec = Decoder::new(model, tok, prompts, opts, prompts.len())?;
    while !dec.is_done() {
        for (i, g) in crate::model::on_workers(|| dec.step(on_text))? {
            out[i] = Some(g);
        }
    }
    Ok(out.into_iter().map(|g| g.expect("every prompt finishes")).collect())
}

/// Continuous batching: at most `width` prompts decode together, and each finished row's
/// place goes to the next waiting prompt (prefilled, then joined to the running batch's
/// cache, left-padded), so a step is not spent on a batch that has mostly finished.
/// `step` returns the rows that finished in it, `(prompt index, generation)`; a caller
/// writes each as it finishes. Each prompt's sampling stream is its own (`streams`), so
/// which prompts share a step does not change what is sampled, only the last bits of the
/// logits. Decoding-time steering needs every prompt in the first batch (`width` >= the
/// prompt count).
pub struct Decoder<'a> {
    model: &'a CausalLm,
    tok: &'a Tokenizer,
    opts: &'a GenerateOptions,
    prompts: &'a [Vec<u32>],
    width: usize,
    ctx: usize,
    /// The next prompt to admit.
    next: usize,
    /// Rows decoding, in the cache's (and the logits') row order.
    live: Vec<Row>,
    state: Option<(KvCache, Tensor)>,
    guide: Option<crate::decode::steer::Running>,
}

impl<'a> Decoder<'a> {
    pub fn new(model: &'a CausalLm, tok: &'a Tokenizer, prompts: &'a [Vec<u32>], opts: &'a GenerateOptions, width: usize) -> Result<Self> {
        let ctx = opts.steer.as_ref().map_or(usize::MAX, |s| s.max_position()).min(model.config.max_position);
        if let Some(p) = prompts.iter().find(|p| p.len() >= ctx) {
            return Err(Error::Input(format!("prompt of {} tokens does not fit the model's context of {ctx} tokens: shorten it", p.len())));
        }
        if opts.steer.is_some() && width < prompts.len() {
            return Err(Error::Input("decoding-time steering runs every prompt in one batch: the batch width must hold them all".into()));
        }
        Ok(Decoder { model, tok, opts, prompts, width: width.max(1), ctx, next: 0, live: vec![], state: None, guide: None })
    }

    /// Every prompt has finished.
    pub fn is_done(&self) -> bool {
        self.next >= self.prompts.len() && self.live.is_empty()
    }

    /// Samples one token for every running row, returns the rows that finished, admits
    /// waiting prompts into the free places and runs the model one step.
    pub fn step(&mut self, on_text: &mut (dyn FnMut(usize, &str) + Send)) -> Result<Vec<(usize, Generation)>> {
        if self.opts.max_new_tokens == 0 {
            let rest: Vec<usize> = (self.next..self.prompts.len()).collect();
            self.next = self.prompts.len();
            return Ok(rest.into_iter().map(|i| (i, Generation { tokens: vec![], text: String::new(), finish: FinishReason::Length, prompt_tokens: self.prompts[i].len() })).collect());
        }
        let next = match self.state.is_some() {
            true => self.sample(on_text)?,
            false => vec![],
        };
        let keep: Vec<usize> = (0..self.live.len()).filter(|&j| self.live[j].finish.is_none()).collect();
        let mut done = vec![];
        if keep.len() < self.live.len() {
            done = self.retain(&keep)?;
        }
        let next: Vec<u32> = keep.iter().map(|&j| next[j]).collect();
        if !self.live.is_empty() {
            self.advance(&next)?;
        }
        self.admit()?;
        Ok(done)
    }

    /// A token for each live row from the current logits.
    fn sample(&mut self, on_text: &mut (dyn FnMut(usize, &str) + Send)) -> Result<Vec<u32>> {
        let Some((_, logits)) = &self.state else { return Ok(vec![]) };
        let mut rows_logits = logits.to_vec2::<f32>()?;
        if let (Some(s), Some(g)) = (self.opts.steer.as_deref(), &self.guide) {
            s.apply(&mut rows_logits, g)?;
        }
        let (tok, opts, ctx) = (self.tok, self.opts, self.ctx);
        // Rows draw in parallel: a sampled draw over Qwen's 151,936 logits is a
        // partial sort per row.
        let next: Vec<u32> = self
            .live
            .par_iter_mut()
            .zip(rows_logits.into_par_iter())
            .map(|(row, mut l)| {
                if row.tokens.len() < opts.min_new_tokens {
                    for &s in &tok.stop_ids {
                        if let Some(x) = l.get_mut(s as usize) {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }
                // Only the repetition penalty reads the history: skip the copy when it is off.
                let history: Vec<u32> = if row.sampler.params.repetition_penalty != 1.0 { row.prompt.iter().chain(&row.tokens).copied().collect() } else { vec![] };
                row.sampler.sample(&mut l, &history)
            })
            .collect();
        for (row, &t) in self.live.iter_mut().zip(&next) {
            accept(row, t, tok, opts, on_text)?;
            row.steps += 1;
            if row.finish.is_none() && row.position as usize + 1 >= ctx {
                row.finish = Some(FinishReason::ContextFull);
            }
            if row.finish.is_none() && row.steps >= opts.max_new_tokens {
                row.finish = Some(FinishReason::Length);
            }
        }
        Ok(next)
    }

    /// Finished rows leave the batch (later steps no longer compute them); returns them.
    fn retain(&mut self, keep: &[usize]) -> Result<Vec<(usize, Generation)>> {
        let n = self.live.len();
        let mut old: Vec<Option<Row>> = std::mem::take(&mut self.live).into_iter().map(Some).collect();
        self.live = keep.iter().map(|&j| old[j].take().expect("kept once")).collect();
        // The logits are the next step's (`advance`), so only the cache keeps rows.
        if keep.is_empty() {
            self.state = None;
            self.guide = None;
        } else if let Some((cache, _)) = &mut self.state {
            cache.retain_rows(keep)?;
            // Admitting prompts joins shorter rows, left-padded: drop padding left in every
            // row once the longest have gone.
            if self.width < self.prompts.len() {
                cache.trim_front()?;
            }
            if let (Some(s), Some(g)) = (self.opts.steer.as_deref(), &mut self.guide) {
                s.retain(g, keep, n)?;
            }
        }
        Ok(old.into_iter().flatten().map(|r| (r.index, finish(r, FinishReason::Length))).collect())
    }

    /// One model step for the live rows with their sampled tokens.
    fn advance(&mut self, next: &[u32]) -> Result<()> {
        let Some((cache, logits)) = &mut self.state else { return Ok(()) };
        let pos: Vec<u32> = self.live.iter().map(|r| r.position).collect();
        let step = Batch::step(next, &pos);
        self.live.iter_mut().for_each(|r| r.position += 1);
        *logits = self.model.forward(&step, Some(cache), LogitsFor::Last)?;
        if let (Some(s), Some(g)) = (self.opts.steer.as_deref(), &mut self.guide) {
            s.step(g, next, &pos)?;
        }
        Ok(())
    }

    /// Prefills waiting prompts into the free places: at the start, when the batch has
    /// emptied, or once a quarter of it is free (admitting in groups keeps the
    /// prefills few).
    fn admit(&mut self) -> Result<()> {
        let free = self.width - self.live.len();
        let waiting = self.prompts.len() - self.next;
        if waiting == 0 || free == 0 || (!self.live.is_empty() && free < (self.width / 4).max(1).min(waiting)) {
            return Ok(());
        }
        let take = free.min(waiting);
        let (first, prompts) = (self.next, &self.prompts[self.next..self.next + take]);
        self.next += take;
        let pad = self.tok.eos_id.unwrap_or(0);
        let (cache, logits) = prefill(self.model, prompts, pad)?;
        if let Some(s) = self.opts.steer.as_deref() {
            self.guide = Some(s.start(|m| prefill(m, prompts, pad))?);
        }
        let opts = self.opts;
        self.live.extend(prompts.iter().enumerate().map(|(k, p)| Row {
            index: first + k,
            prompt: p.clone(),
            sampler: Sampler::new(opts.sampling.clone(), opts.streams.get(first + k).copied().unwrap_or((first + k) as u64)),
            tokens: vec![],
            text: String::new(),
            finish: None,
            steps: 0,
            position: p.len() as u32,
        }));
        self.state = Some(match self.state.take() {
            Some((c, l)) => (KvCache::concat_left_padded(&[&c, &cache])?, Tensor::cat(&[&l, &logits], 0)?),
            None => (cache, logits),
        });
        Ok(())
    }
}

/// Run the prompts, filling a batch cache: as one left-padded batch when they are equally
/// long, else one prompt at a time, stacked after. Prompts of different lengths would
/// otherwise pay for attention over padding, and a batch's attention scores grow with
/// every row (24 SuperNI prompts, batches of 8: 94 s -> 44 s on SmolLM2).
fn prefill(model: &CausalLm, prompts: &[Vec<u32>], pad: u32) -> Result<(KvCache, Tensor)> {
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
    Ok((KvCache::stack_left_padded(&caches)?, Tensor::cat(&logits, 0)?))
}

/// Add token `t` to a row: stop on EOS or a stop string, stream the new text.
fn accept(row: &mut Row, t: u32, tok: &Tokenizer, opts: &GenerateOptions, on_text: &mut (dyn FnMut(usize, &str) + Send)) -> Result<()> {
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
        on_text(row.index, &text[row.text.len()..]);
    }
    row.text = text;
    Ok(())
}

fn finish(r: Row, default: FinishReason) -> Generation {
    Generation { prompt_tokens: r.prompt.len(), tokens: r.tokens, text: r.text, finish: r.finish.unwrap_or(default) }
}
