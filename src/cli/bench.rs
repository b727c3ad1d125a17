use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use instill::bench::{generation_speed, memory_read_bandwidth, GenSpeed};
use instill::hub;
use instill::{CausalLm, LoadOptions, Tokenizer};
use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Prompt-processing and decode tokens/s against llama.cpp on the same GGUF and token ids.
    Generate(GenBench),
    /// Read + render + tokenize examples/s against Hugging Face datasets.map.
    Data(super::bench_data::DataBench),
    /// LoRA / QLoRA training tokens/s and peak memory against PyTorch + PEFT.
    Train(super::bench_train::TrainBench),
    /// SuperNI evaluation examples/s against a transformers generate loop.
    Eval(super::bench_eval::EvalBench),
    /// DPO tokens/s and peak memory against TRL's DPOTrainer and a PyTorch + PEFT loop.
    Dpo(super::bench_dpo::DpoBench),
    /// TIES and SLERP merge wall time and peak RSS against mergekit.
    Merge(super::bench_merge::MergeBench),
    /// Server output tokens/s and time to first token at several concurrencies against llama.cpp's server.
    Serve(super::bench_serve::ServeBench),
    /// Proxy-tuned decoding time per token against the large model alone.
    Steer(super::bench_steer::SteerBench),
    /// Our f32 / bf16 GEMM against candle's and torch.matmul at the models' shapes.
    Gemm(super::bench_gemm::GemmBench),
    /// Magpie synthesis generated tokens/s at several batch sizes against llama.cpp one sequence at a time.
    Synth(super::bench_synth::SynthBench),
}

#[derive(Args)]
pub struct GenBench {
    /// Models to measure (registry ids or .gguf files).
    #[arg(short, long, default_values = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])]
    pub model: Vec<String>,
    #[arg(long, default_value_t = 128)]
    pub n_gen: usize,
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Python with llama-cpp-python for the peer; `none` skips it.
    #[arg(long, env = "INSTILL_PEER_PYTHON", default_value = "/tmp/peers-venv/bin/python")]
    pub peer_python: String,
    /// Scaling curves instead: prompt lengths 256-2048 and 1-16 sequences decoded together,
    /// each configuration in its own process, as a table and PNG plots in this directory.
    #[arg(long)]
    sweep: Option<std::path::PathBuf>,
    /// Internal: run one sweep configuration (`len:N` or `batch:B`) and print JSON.
    #[arg(long, hide = true)]
    worker: Option<String>,
}

// The peer harness's prompt (shared/bench/peers/gen_llamacpp.py), so figures compare.
const SYSTEM: &str = "You are a helpful assistant. Answer clearly and in plain language.";
const USER: &str = "I am planning a small vegetable garden on a sunny balcony of about four square meters. I have never grown anything before. Which vegetables are easiest for a beginner, how often should I water them, what kind of containers and soil do I need, and what are the most common mistakes people make in their first season? Please give practical, step-by-step advice.";

pub fn run(b: BenchCmd) -> Result<()> {
    let a = match b {
        BenchCmd::Generate(a) => a,
        BenchCmd::Data(d) => return super::bench_data::run(d),
        BenchCmd::Train(t) => return super::bench_train::run(t),
        BenchCmd::Dpo(t) => return super::bench_dpo::run(t),
        BenchCmd::Eval(e) => return super::bench_eval::run(e),
        BenchCmd::Serve(s) => return super::bench_serve::run(s),
        BenchCmd::Steer(s) => return super::bench_steer::run(s),
        BenchCmd::Merge(m) => return super::bench_merge::run(m),
        BenchCmd::Gemm(g) => return super::bench_gemm::run(g),
        BenchCmd::Synth(s) => return super::bench_synth::run(s),
    };
    if let Some(point) = &a.worker {
        return super::bench_gen_sweep::worker(&a, point);
    }
    if let Some(dir) = &a.sweep {
        return super::bench_gen_sweep::sweep(&a, dir);
    }
    let threads = rayon::current_num_threads();
    let bw = memory_read_bandwidth(threads);
    println!("threads {threads}; measured memory read bandwidth {bw:.1} GB/s; int8 prefill {}", if instill::model::kernels::qgemm::enabled() { "on" } else { "off" });
    println!("| model | prompt tok | instill pp tok/s | llama.cpp pp tok/s | pp ratio | instill tg tok/s | llama.cpp tg tok/s | tg ratio | weights read/token | bandwidth used | same greedy tokens |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for m in &a.model {
        let source = hub::resolve(m, true)?;
        let hub::ModelSource::Gguf(path) = &source else { bail!("{m}: bench generate needs a GGUF file") };
        let model = CausalLm::load(&source, &LoadOptions::default())?;
        let tok = Tokenizer::load(&source)?;
        let ids = prompt_ids(&tok)?;
        let ours = generation_speed(&model, &ids, a.n_gen, a.reps)?;
        let peer = if a.peer_python == "none" { None } else { Some(llamacpp(&a, path, &ids, threads)?) };
        let bytes = model.weight_bytes_per_token() as f64;
        row(m, &ours, peer.as_ref(), bytes);
    }
    Ok(())
}

pub fn prompt_ids(tok: &Tokenizer) -> Result<Vec<u32>> {
    let msgs = [serde_json::json!({"role": "system", "content": SYSTEM}), serde_json::json!({"role": "user", "content": USER})];
    match tok.template(None) {
        Ok(t) => Ok(tok.encode_rendered(&t.render(&msgs, true, None)?)?),
        Err(_) => Ok(tok.encode(&format!("{SYSTEM}\n\n{USER}\n\n"), true)?), // base model: plain text
    }
}

fn row(m: &str, ours: &GenSpeed, peer: Option<&serde_json::Value>, bytes: f64) {
    let f = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.1}"));
    let p_pp = peer.and_then(|p| p["pp_tok_s"].as_f64());
    let p_tg = peer.and_then(|p| p["tg_tok_s"].as_f64());
    let same = peer.and_then(|p| p["ids"].as_array()).map(|ids| ids.iter().zip(&ours.ids).take_while(|(a, b)| a.as_u64() == Some(**b as u64)).count());
    println!(
        "| {m} | {} | {:.1} | {} | {} | {:.1} | {} | {} | {:.1} MB | {:.1} GB/s | {} |",
        ours.prompt_tokens,
        ours.pp_tok_s,
        f(p_pp),
        p_pp.map_or("-".into(), |p| format!("{:.2}x", ours.pp_tok_s / p)),
        ours.tg_tok_s,
        f(p_tg),
        p_tg.map_or("-".into(), |p| format!("{:.2}x", ours.tg_tok_s / p)),
        bytes / 1e6,
        bytes * ours.tg_tok_s / 1e9,
        same.map_or("-".into(), |s| format!("{s}/{}", ours.gen_tokens)),
    );
}

fn llamacpp(a: &GenBench, gguf: &std::path::Path, ids: &[u32], threads: usize) -> Result<serde_json::Value> {
    let req = serde_json::json!({"gguf": gguf, "ids": ids, "n_gen": a.n_gen, "reps": a.reps, "threads": threads});
    run_peer(&a.peer_python, "llamacpp_gen.py", &req, "llama.cpp peer (install llama-cpp-python)")
}

/// Run `bench/peers/<script>` with `python`, the request as JSON on stdin; parse its JSON line.
pub fn run_peer(python: &str, script: &str, req: &serde_json::Value, what: &str) -> Result<serde_json::Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/peers").join(script);
    let mut child = Command::new(python).arg(&path).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().with_context(|| format!("starting the {what} with {python} (or pass --peer-python none)"))?;
    child.stdin.take().expect("piped").write_all(req.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("the {what} failed (exit {})", out.status);
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("the {what} printed no JSON"))
}
