//! `instill bench serve`: output tokens/s and time to first token at several
//! concurrencies, instill's server against llama.cpp's `llama-server` (same GGUF,
//! parallel slots, continuous batching) in the same run, and the cost of serving four
//! adapters at once against the base alone.
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct ServeBench {
    /// A registry id or .gguf file (both servers load the same file).
    #[arg(short, long, default_value = instill::hub::DEFAULT_MODEL)]
    model: String,
    /// Concurrent streaming clients, one measurement each.
    #[arg(long, value_delimiter = ',', default_values = ["1", "4", "16"])]
    concurrency: Vec<usize>,
    /// Requests per client.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Tokens per response (end-of-turn ignored, so both servers generate exactly this).
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// llama.cpp's server binary; `none` skips the peer.
    #[arg(long, env = "INSTILL_LLAMA_SERVER", default_value = "llama-server")]
    llama_server: String,
    /// Extra arguments for llama-server (e.g. `--llama-arg=--no-repack` where its AMX kernels crash).
    #[arg(long = "llama-arg", allow_hyphen_values = true)]
    llama_args: Vec<String>,
    /// A LoRA adapter directory (PEFT) served four times over, for the adapter cost.
    #[arg(long)]
    adapter: Option<std::path::PathBuf>,
}

const QUESTIONS: [&str; 8] = [
    "How do I start a small vegetable garden on a balcony?",
    "Explain what a hash table is to a new programmer.",
    "Write a short poem about autumn leaves.",
    "What are three tips for a good night's sleep?",
    "Summarize the plot of Romeo and Juliet in a few sentences.",
    "How does a bicycle stay upright?",
    "Give me a simple recipe for pancakes.",
    "What is the difference between weather and climate?",
];

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until `GET url/health` answers 200.
fn wait_ready(base: &str, proc: &mut Proc) -> Result<()> {
    for _ in 0..600 {
        if let Some(st) = proc.0.try_wait()? {
            bail!("{base}: the server exited ({st}) before it was ready");
        }
        if ureq::get(&format!("{base}/health")).timeout(Duration::from_secs(2)).call().is_ok_and(|r| r.status() == 200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{base}: not ready after 120 s")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_instill(path: &str, adapters: &[String], max_batch: usize) -> Result<(Proc, String)> {
    let port = free_port()?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "-m", path, "--port", &port.to_string(), "--served-name", "base", "--max-batch", &max_batch.to_string()]).stdout(Stdio::null()).stderr(Stdio::inherit());
    for a in adapters {
        cmd.args(["--adapter", a]);
    }
    let mut p = Proc(cmd.spawn()?);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, &mut p)?;
    Ok((p, base))
}

fn start_llama(bin: &str, path: &str, slots: usize, threads: usize, extra: &[String]) -> Result<(Proc, String)> {
    let port = free_port()?;
    let ctx = (slots * 1024).to_string();
    let args = ["-m", path, "--port", &port.to_string(), "-np", &slots.to_string(), "-c", &ctx, "-t", &threads.to_string(), "-tb", &threads.to_string(), "--no-webui", "-cb"];
    let mut p = Proc(
        Command::new(bin)
            .args(args)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {bin} (set --llama-server or INSTILL_LLAMA_SERVER, or `none`)"))?,
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, &mut p)?;
    Ok((p, base))
}

/// One streamed chat request: (seconds to the first content, completion tokens).
fn one(base: &str, model: &str, q: &str, max_tokens: usize) -> Result<(f64, usize)> {
    let body = json!({"model": model, "messages": [{"role": "user", "content": q}], "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}});
    let t0 = Instant::now();
    let resp = ureq::post(&format!("{base}/v1/chat/completions")).timeout(Duration::from_secs(600)).send_string(&body.to_string())?;
    let (mut first, mut tokens, mut pieces) = (None, None, 0);
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(data)?;
        if v["choices"][0]["delta"]["content"].as_str().is_some_and(|c| !c.is_empty()) {
            first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
            pieces += 1;
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            tokens = Some(n as usize);
        }
    }
    Ok((first.unwrap_or(f64::NAN), tokens.unwrap_or(pieces)))
}

struct Load {
    tok_s: f64,
    ttft: Vec<f64>,
}

/// `c` clients, each sending `rounds` requests in turn; models picked round-robin.
fn load(base: &str, models: &[&str], c: usize, rounds: usize, max_tokens: usize) -> Result<Load> {
    let t0 = Instant::now();
    let results: Vec<Result<Vec<(f64, usize)>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..c)
            .map(|i| s.spawn(move || (0..rounds).map(|r| one(base, models[(i + r) % models.len()], QUESTIONS[(i * rounds + r) % QUESTIONS.len()], max_tokens)).collect::<Result<Vec<_>>>()))
            .collect();
        hs.into_iter().map(|h| h.join().expect("client thread")).collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let mut ttft = vec![];
    let mut tokens = 0;
    for r in results {
        for (t, n) in r? {
            ttft.push(t);
            tokens += n;
        }
    }
    ttft.sort_by(f64::total_cmp);
    Ok(Load { tok_s: tokens as f64 / wall, ttft })
}

fn pct(xs: &[f64], p: f64) -> f64 {
    xs[((xs.len() as f64 - 1.0) * p).round() as usize]
}

pub fn run(a: ServeBench) -> Result<()> {
    let source = instill::hub::resolve(&a.model, true)?;
    let instill::hub::ModelSource::Gguf(path) = &source else { bail!("{}: bench serve needs a GGUF file (llama.cpp loads the same one)", a.model) };
    let path = path.display().to_string();
    let threads = rayon::current_num_threads();
    let slots = a.concurrency.iter().copied().max().unwrap_or(1);
    println!("model {} ({path}); {threads} threads; {} tokens per response; {} requests per client; llama-server {} {}", a.model, a.max_tokens, a.rounds, a.llama_server, a.llama_args.join(" "));
    println!("| concurrency | instill tok/s | llama.cpp tok/s | ratio | instill TTFT p50 / p99 s | llama.cpp TTFT p50 / p99 s |");
    println!("|---|---|---|---|---|---|");
    let (ours, ob) = start_instill(&path, &[], slots)?;
    let peer = if a.llama_server == "none" { None } else { Some(start_llama(&a.llama_server, &path, slots, threads, &a.llama_args)?) };
    for &c in &a.concurrency {
        let x = load(&ob, &["base"], c, a.rounds, a.max_tokens)?;
        let y = match &peer {
            Some((_, pb)) => Some(load(pb, &["base"], c, a.rounds, a.max_tokens)?),
            None => None,
        };
        let f = |l: &Option<Load>, g: &dyn Fn(&Load) -> String| l.as_ref().map_or("-".to_string(), g);
        println!(
            "| {c} | {:.1} | {} | {} | {:.2} / {:.2} | {} |",
            x.tok_s,
            f(&y, &|l| format!("{:.1}", l.tok_s)),
            f(&y, &|l| format!("{:.2}x", x.tok_s / l.tok_s)),
            pct(&x.ttft, 0.5),
            pct(&x.ttft, 0.99),
            f(&y, &|l| format!("{:.2} / {:.2}", pct(&l.ttft, 0.5), pct(&l.ttft, 0.99)))
        );
    }
    drop(peer);
    drop(ours);
    if let Some(dir) = &a.adapter {
        adapter_cost(&path, dir, slots, a.rounds, a.max_tokens)?;
    }
    Ok(())
}

/// Concurrency `c` over four adapters (each request another) against the base alone.
fn adapter_cost(path: &str, dir: &std::path::Path, c: usize, rounds: usize, max_tokens: usize) -> Result<()> {
    let specs: Vec<String> = (0..4).map(|i| format!("a{i}={}", dir.display())).collect();
    let (_p, base) = start_instill(path, &specs, c)?;
    let plain = load(&base, &["base"], c, rounds, max_tokens)?;
    let mixed = load(&base, &["a0", "a1", "a2", "a3"], c, rounds, max_tokens)?;
    println!(
        "\nadapters at concurrency {c}: base alone {:.1} tok/s (TTFT p50 {:.2} s); four LoRA adapters in one batch {:.1} tok/s (TTFT p50 {:.2} s): {:.2}x the base",
        plain.tok_s,
        pct(&plain.ttft, 0.5),
        mixed.tok_s,
        pct(&mixed.ttft, 0.5),
        mixed.tok_s / plain.tok_s
    );
    Ok(())
}
