//! Speed measurements behind `instill bench`. Timings are medians over repetitions
//! after one warm-up; ratios against peers are made by the CLI in the same run.
use crate::decode::sampler::argmax;
use crate::model::{Batch, CausalLm, LogitsFor};
use crate::Result;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct GenSpeed {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    /// Prompt processing (prefill) tokens/s.
    pub pp_tok_s: f64,
    /// Decode tokens/s (greedy, end-of-sequence ignored).
    pub tg_tok_s: f64,
    pub reps: usize,
    /// Greedy tokens of the last repetition (to compare engines).
    pub ids: Vec<u32>,
}

/// Prefill `prompt`, then decode `n_gen` greedy tokens; median over `reps` after a warm-up.
pub fn generation_speed(model: &CausalLm, prompt: &[u32], n_gen: usize, reps: usize) -> Result<GenSpeed> {
    crate::model::on_workers(|| speed(model, prompt, n_gen, reps))
}

fn speed(model: &CausalLm, prompt: &[u32], n_gen: usize, reps: usize) -> Result<GenSpeed> {
    let mut pp = vec![];
    let mut tg = vec![];
    let mut ids = vec![];
    for rep in 0..=reps {
        let mut cache = model.new_cache();
        let t0 = Instant::now();
        let logits = model.forward(&Batch::single(prompt, 0), Some(&mut cache), LogitsFor::Last)?;
        let mut next = argmax(&logits.squeeze(0)?.to_vec1::<f32>()?);
        let t1 = Instant::now();
        ids.clear();
        for i in 0..n_gen {
            ids.push(next);
            let l = model.forward(&Batch::single(&[next], (prompt.len() + i) as u32), Some(&mut cache), LogitsFor::Last)?;
            next = argmax(&l.squeeze(0)?.to_vec1::<f32>()?);
        }
        let t2 = Instant::now();
        if rep > 0 {
            pp.push(prompt.len() as f64 / (t1 - t0).as_secs_f64());
            tg.push(n_gen as f64 / (t2 - t1).as_secs_f64());
        }
    }
    Ok(GenSpeed { prompt_tokens: prompt.len(), gen_tokens: n_gen, pp_tok_s: median(&mut pp), tg_tok_s: median(&mut tg), reps, ids })
}

/// `prompts` (equally long) prefilled as one batch, then `n_gen` greedy steps that each
/// decode one token for every row; `pp_tok_s` and `tg_tok_s` count all rows' tokens, `ids`
/// are row 0's. Median over `reps` after a warm-up.
pub fn batched_generation_speed(model: &CausalLm, prompts: &[Vec<u32>], n_gen: usize, reps: usize) -> Result<GenSpeed> {
    crate::model::on_workers(|| batched_speed(model, prompts, n_gen, reps))
}

fn batched_speed(model: &CausalLm, prompts: &[Vec<u32>], n_gen: usize, reps: usize) -> Result<GenSpeed> {
    let (b, p) = (prompts.len(), prompts.first().map_or(0, Vec::len));
    if b == 0 || prompts.iter().any(|r| r.len() != p) {
        return Err(crate::Error::Input("batched generation speed needs equally long prompts".into()));
    }
    let (mut pp, mut tg, mut ids) = (vec![], vec![], vec![]);
    for rep in 0..=reps {
        let mut cache = model.new_cache();
        let t0 = Instant::now();
        let logits = model.forward(&Batch::left_padded(prompts, 0)?, Some(&mut cache), LogitsFor::Last)?;
        let mut next: Vec<u32> = logits.to_vec2::<f32>()?.iter().map(|l| argmax(l)).collect();
        let t1 = Instant::now();
        ids.clear();
        for i in 0..n_gen {
            ids.push(next[0]);
            let l = model.forward(&Batch::step(&next, &vec![(p + i) as u32; b]), Some(&mut cache), LogitsFor::Last)?;
            next = l.to_vec2::<f32>()?.iter().map(|l| argmax(l)).collect();
        }
        let t2 = Instant::now();
        if rep > 0 {
            pp.push((b * p) as f64 / (t1 - t0).as_secs_f64());
            tg.push((b * n_gen) as f64 / (t2 - t1).as_secs_f64());
        }
    }
    Ok(GenSpeed { prompt_tokens: b * p, gen_tokens: n_gen, pp_tok_s: median(&mut pp), tg_tok_s: median(&mut tg), reps, ids })
}

pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Sustained memory read bandwidth in GB/s: `threads` threads summing a 512 MiB buffer.
pub fn memory_read_bandwidth(threads: usize) -> f64 {
    let n: usize = (512 << 20) / 8;
    let buf: Vec<u64> = (0..n as u64).collect();
    let chunk = n.div_ceil(threads.max(1));
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = buf.chunks(chunk).map(|c| s.spawn(move || c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))).collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).fold(0, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.max((n * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}
