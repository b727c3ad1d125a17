//! `instill bench eval`: SuperNI evaluation examples/s with batched generation, against a
//! transformers `generate` loop (bench/peers/eval_generate_torch.py) on the same token ids,
//! batch size and greedy settings, in the same run.
use anyhow::{bail, Context, Result};
use clap::Args;
use instill::decode::{generate, GenerateOptions};
use instill::eval::suites::{superni::SuperNi, Suite};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[derive(Args)]
pub struct EvalBench {
    #[arg(short, long, default_values = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])]
    models: Vec<String>,
    #[arg(long, default_value = "../shared/data/superni/eval_dev.jsonl")]
    data: PathBuf,
    /// Examples: a seeded choice of this many tasks, one instance each.
    #[arg(long, default_value_t = 32)]
    examples: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 48)]
    max_new_tokens: usize,
    /// Python with torch and transformers for the peer; `none` skips it.
    #[arg(long, env = "INSTILL_PEER_PYTHON", default_value = "/tmp/ref-venv/bin/python")]
    peer_python: String,
    #[arg(long, default_value = "bench/peers/eval_generate_torch.py")]
    peer_script: PathBuf,
}

pub fn run(a: EvalBench) -> Result<()> {
    let threads = rayon::current_num_threads();
    println!("threads {threads}; SuperNI k=2 prompts, {} examples, batch {}, greedy, up to {} new tokens (EOS stops a row)", a.examples, a.batch, a.max_new_tokens);
    println!("| model | instill examples/s | new tokens | transformers examples/s | new tokens | speed-up |");
    println!("|---|---|---|---|---|---|");
    for m in &a.models {
        let source = instill::hub::resolve(m, true)?;
        let model = instill::CausalLm::load(&source, &Default::default())?;
        let tok = instill::Tokenizer::load(&source)?;
        let mut items = SuperNi::new(&a.data, 2, Some(1), 0)?.items()?;
        items.truncate(a.examples);
        let prompts: Vec<Vec<u32>> = items.iter().map(|i| tok.encode(&i.prompt, true)).collect::<instill::Result<_>>()?;
        let opts = GenerateOptions { max_new_tokens: a.max_new_tokens, ..Default::default() };
        let start = Instant::now();
        let mut new = 0;
        for chunk in prompts.chunks(a.batch) {
            new += generate(&model, &tok, chunk, &opts, &mut |_, _| {})?.iter().map(|g| g.tokens.len()).sum::<usize>();
        }
        let ours = prompts.len() as f64 / start.elapsed().as_secs_f64();
        drop(model);
        let peer = peer(&a, &source, &prompts, threads)?;
        let (p_rate, p_new) = peer.as_ref().map_or((f64::NAN, 0), |p| (p["examples_per_s"].as_f64().unwrap_or(f64::NAN), p["new_tokens"].as_u64().unwrap_or(0) as usize));
        println!("| {m} | {ours:.2} | {new} | {p_rate:.2} | {p_new} | {:.2}x |", ours / p_rate);
    }
    Ok(())
}

fn peer(a: &EvalBench, source: &instill::hub::ModelSource, prompts: &[Vec<u32>], threads: usize) -> Result<Option<serde_json::Value>> {
    if a.peer_python == "none" {
        return Ok(None);
    }
    let file = std::env::temp_dir().join(format!("instill-bench-eval-{}.jsonl", std::process::id()));
    let lines: String = prompts.iter().map(|p| format!("{}\n", serde_json::json!({ "ids": p }))).collect();
    std::fs::write(&file, lines)?;
    let out = Command::new(&a.peer_python)
        .arg(&a.peer_script)
        .args(["--gguf", &source.path().display().to_string(), "--prompts", &file.display().to_string()])
        .args(["--batch", &a.batch.to_string(), "--max-new-tokens", &a.max_new_tokens.to_string(), "--threads", &threads.to_string()])
        .output()
        .with_context(|| format!("running {}", a.peer_script.display()))?;
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        bail!("transformers peer failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    Ok(Some(serde_json::from_str(&line)?))
}
