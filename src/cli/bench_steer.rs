//! `instill bench steer`: decode time per token of proxy-tuning (a large model plus an
//! expert and an anti-expert, three forward passes a token) against the large model
//! alone, in the same run, on the same prompts and at several batch sizes.
use super::steer::SteerArgs;
use super::ModelArgs;
use anyhow::Result;
use clap::Args;
use instill::decode::{generate, GenerateOptions};
use instill::{CausalLm, Tokenizer};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct SteerBench {
    /// The large model.
    #[arg(short, long, default_value = "qwen2.5-coder-1.5b-instruct")]
    model: String,
    #[arg(long, default_value = "qwen2.5-coder-0.5b-instruct")]
    expert: String,
    /// An adapter on the expert (its absence measures the same work).
    #[arg(long)]
    expert_adapter: Option<PathBuf>,
    #[arg(long, default_value = "qwen2.5-coder-0.5b-instruct")]
    anti: String,
    /// Decode steps timed (after a first token that covers the prefill).
    #[arg(long, default_value_t = 48)]
    tokens: usize,
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    batch: Vec<usize>,
    #[arg(long, default_value_t = 2)]
    reps: usize,
}

const PROMPTS: &[&str] = &[
    "Write a Python function that checks whether a string is a palindrome.",
    "Explain the difference between a list and a tuple in Python.",
    "Write a SQL query that returns the ten most recent orders.",
    "What does the `yield` keyword do in Python?",
];

/// Seconds for `k` new tokens of every prompt (EOS ignored).
fn time(model: &CausalLm, tok: &Tokenizer, prompts: &[Vec<u32>], opts: &GenerateOptions, k: usize) -> Result<f64> {
    let o = GenerateOptions { max_new_tokens: k, min_new_tokens: k, ignore_eos: true, ..opts.clone() };
    let t = Instant::now();
    generate(model, tok, prompts, &o, &mut |_, _| {})?;
    Ok(t.elapsed().as_secs_f64())
}

/// Seconds per decode step of each configuration: the time for `n + 1` tokens minus the
/// time for 1, over `n`, best of `reps`. The configurations take turns within each
/// repetition, so a change in the machine's load falls on all of them alike.
fn per_token(runs: &[(&CausalLm, &Tokenizer, &GenerateOptions)], prompts: &[Vec<u32>], n: usize, reps: usize) -> Result<Vec<f64>> {
    let mut best = vec![f64::INFINITY; runs.len()];
    for _ in 0..reps {
        for (b, (m, t, o)) in best.iter_mut().zip(runs) {
            let d = (time(m, t, prompts, o, n + 1)? - time(m, t, prompts, o, 1)?) / n as f64;
            *b = b.min(d);
        }
    }
    Ok(best)
}

pub fn run(a: SteerBench) -> Result<()> {
    let (model, tok) = ModelArgs::named(&a.model, false, None).load()?;
    let steer = SteerArgs { proxy_expert: Some(a.expert.clone()), proxy_expert_adapter: a.expert_adapter.clone(), proxy_anti: Some(a.anti.clone()), ..Default::default() };
    let proxy = GenerateOptions { steer: steer.build(&model, &tok, false)?, ..Default::default() };
    let (small, stok) = ModelArgs::named(&a.expert, false, None).load()?;
    println!("threads {}; {} decode steps timed, best of {}", rayon::current_num_threads(), a.tokens, a.reps);
    println!("large {}; expert {}{}; anti-expert {}", a.model, a.expert, a.expert_adapter.as_ref().map(|p| format!(" + {}", p.display())).unwrap_or_default(), a.anti);
    println!("| batch | small alone ms/token | large alone ms/token | proxy-tuned ms/token | proxy / large | proxy tokens/s (all rows) |");
    println!("|---|---|---|---|---|---|");
    for &b in &a.batch {
        let prompts: Vec<Vec<u32>> = (0..b).map(|i| tok.encode_chat(None, &[serde_json::json!({"role": "user", "content": PROMPTS[i % PROMPTS.len()]})])).collect::<instill::Result<_>>()?;
        let plain = GenerateOptions::default();
        let t = per_token(&[(&small, &stok, &plain), (&model, &tok, &plain), (&model, &tok, &proxy)], &prompts, a.tokens, a.reps)?;
        let (s, l, p) = (t[0], t[1], t[2]);
        println!("| {b} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.1} |", s * 1e3, l * 1e3, p * 1e3, p / l, b as f64 / p);
    }
    Ok(())
}
