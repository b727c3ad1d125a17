//! One generated choice of one request, as the engine carries it: its prompt and
//! prefill progress, sampler and logits processors, the text streamed so far, and the
//! events it sends back to the request's handler.
use super::engine::Job;
use super::metrics::Metrics;
use crate::decode::processor::{log_softmax, top_k, Bias, LogitsProcessor, MinTokens, Penalties};
use crate::decode::{Sampler, SamplingParams};
use crate::model::KvCache;
use crate::tokenizer::Tokenizer;
use crate::Result;
use candle_core::Tensor;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct JobParams {
    pub max_tokens: usize,
    pub min_tokens: usize,
    pub sampling: SamplingParams,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub logit_bias: Vec<(u32, f32)>,
    pub stop: Vec<String>,
    /// Some(k): report each token's log-probability and the k most likely alternatives.
    pub logprobs: Option<usize>,
    pub n: usize,
    pub ignore_eos: bool,
    /// Keep special tokens in the text (tool-call markers such as Qwen's `<tool_call>`
    /// are special tokens that would otherwise be dropped).
    pub keep_special: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-turn token or a stop string.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
}

#[derive(Debug, Clone)]
pub struct TokenLogprob {
    pub text: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<(String, Vec<u8>, f32)>,
}

#[derive(Debug)]
pub enum Event {
    /// New text of choice `choice` (may be empty while a multi-byte character or a
    /// possible stop string is held back), with the token's log-probability if asked.
    Token {
        choice: usize,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    Done {
        choice: usize,
        finish: Finish,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed {
        message: String,
        timeout: bool,
    },
}

pub enum Step {
    More,
    Finished,
    Join(KvCache),
}

pub struct Row {
    job: Arc<Job>,
    choice: usize,
    pub slot: Option<usize>,
    pub prefix: Option<Tensor>,
    prefilled: usize,
    pub own: Option<KvCache>,
    /// The token to feed next, at position `pos` (soft-prompt vectors included).
    pub pending: u32,
    pub pos: u32,
    tokens: Vec<u32>,
    text: String,
    sent: usize,
    sampler: Sampler,
    procs: Vec<Box<dyn LogitsProcessor>>,
    started: Instant,
    first: bool,
}

impl Row {
    pub fn new(job: Arc<Job>, choice: usize, slot: Option<usize>, prefix: Option<Tensor>, tok: &Tokenizer) -> Self {
        let p = &job.params;
        let mut procs: Vec<Box<dyn LogitsProcessor>> = vec![];
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            procs.push(Box::new(Penalties::new(p.presence_penalty, p.frequency_penalty)));
        }
        if !p.logit_bias.is_empty() {
            procs.push(Box::new(Bias(p.logit_bias.clone())));
        }
        if p.min_tokens > 0 {
            procs.push(Box::new(MinTokens { min: p.min_tokens, stop_ids: tok.stop_ids.clone() }));
        }
        let sampler = Sampler::new(p.sampling.clone(), choice as u64);
        let started = Instant::now();
        let choice = job.first_choice + choice;
        Row { job, choice, slot, prefix, prefilled: 0, own: None, pending: 0, pos: 0, tokens: vec![], text: String::new(), sent: 0, sampler, procs, started, first: true }
    }

    /// The next prompt chunk, its start position, and whether it is the last.
    pub fn next_chunk(&mut self, size: usize) -> (Vec<u32>, u32, bool) {
        let p = &self.job.prompt;
        let end = (self.prefilled + size.max(1)).min(p.len());
        let chunk = p[self.prefilled..end].to_vec();
        let start = self.prefilled as u32;
        self.prefilled = end;
        let n_prefix = self.prefix.as_ref().map_or(0, |t| t.dim(0).unwrap_or(0));
        self.pos = (n_prefix + end) as u32;
        (chunk, start, end == p.len())
    }

    pub fn alive(&self, now: Instant) -> bool {
        if self.job.events.is_closed() {
            return false;
        }
        if now > self.job.deadline {
            self.fail("the request took longer than the server's --timeout", true);
            return false;
        }
        true
    }

    pub fn fail(&self, message: &str, timeout: bool) {
        let _ = self.job.events.send(Event::Failed { message: message.to_string(), timeout });
    }

    /// Sample this row's next token from `logits`, stream it, and say whether the row is done.
    pub fn choose(&mut self, mut logits: Vec<f32>, tok: &Tokenizer, ctx: usize, m: &Metrics) -> Result<bool> {
        let want = self.job.params.logprobs;
        let logps = want.map(|_| log_softmax(&logits));
        for p in &mut self.procs {
            p.process(&mut logits, &self.tokens);
        }
        let t = self.sampler.sample(&mut logits, &[]);
        if self.first {
            m.ttft.observe(self.job.received.elapsed().as_secs_f64());
            self.first = false;
        }
        let lp = match (want, logps) {
            (Some(k), Some(lps)) => Some(token_logprob(tok, t, &lps, k)?),
            _ => None,
        };
        self.pending = t;
        let (ignore_eos, max_tokens) = (self.job.params.ignore_eos, self.job.params.max_tokens);
        let finish = if !ignore_eos && tok.stop_ids.contains(&t) {
            Some(Finish::Stop)
        } else {
            self.tokens.push(t);
            m.generation_tokens.fetch_add(1, Ordering::Relaxed);
            self.add_text(tok)?
        };
        let finish = finish.or_else(|| (self.tokens.len() >= max_tokens || self.pos as usize >= ctx).then_some(Finish::Length));
        let held = if finish.is_some() { 0 } else { self.held_back() };
        let end = floor_boundary(&self.text, self.text.len() - held).max(self.sent);
        let delta = self.text[self.sent..end].to_string();
        self.sent = end;
        if !delta.is_empty() || lp.is_some() {
            let _ = self.job.events.send(Event::Token { choice: self.choice, text: delta, logprob: lp });
        }
        if let Some(f) = finish {
            let _ = self.job.events.send(Event::Done { choice: self.choice, finish: f, prompt_tokens: self.job.prompt.len(), completion_tokens: self.tokens.len() });
            m.request_decode.observe(self.started.elapsed().as_secs_f64());
        }
        Ok(finish.is_some())
    }

    /// Decode the tokens so far; cut at the first stop string.
    fn add_text(&mut self, tok: &Tokenizer) -> Result<Option<Finish>> {
        let text = tok.decode(&self.tokens, !self.job.params.keep_special)?;
        // Text ending inside a multi-byte character waits for the next token.
        let text = text.strip_suffix('\u{FFFD}').map_or(text.clone(), str::to_string);
        let from = self.sent.saturating_sub(self.job.params.stop.iter().map(String::len).max().unwrap_or(0));
        let from = floor_boundary(&text, from);
        let cut = self.job.params.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text[from..].find(s.as_str()).map(|i| i + from)).min();
        self.text = text;
        if let Some(c) = cut {
            self.text.truncate(c.max(self.sent));
            return Ok(Some(Finish::Stop));
        }
        Ok(None)
    }

    /// Bytes at the end of the text that could be the start of a stop string: not sent yet.
    fn held_back(&self) -> usize {
        let mut held = 0;
        for s in &self.job.params.stop {
            for k in (1..s.len()).rev() {
                if k > held && s.is_char_boundary(k) && self.text.ends_with(&s[..k]) {
                    held = k;
                    break;
                }
            }
        }
        held
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn token_logprob(tok: &Tokenizer, t: u32, logps: &[f32], k: usize) -> Result<TokenLogprob> {
    let piece = |id: u32| -> Result<(String, Vec<u8>)> {
        let s = tok.decode(&[id], false)?;
        let b = s.as_bytes().to_vec();
        Ok((s, b))
    };
    let (text, bytes) = piece(t)?;
    let mut top = vec![];
    for (id, lp) in top_k(logps, k) {
        let (s, b) = piece(id)?;
        top.push((s, b, lp));
    }
    Ok(TokenLogprob { text, bytes, logprob: logps[t as usize], top })
}
