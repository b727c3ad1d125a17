//! `instill bench synth`: a Magpie run (instructions sampled, then answered) at several
//! batch sizes, generated tokens per second of wall time, against llama.cpp
//! (llama-cpp-python) on the same GGUF generating the same number of tokens one sequence
//! at a time (the pre-query prompt, then the run's mean tokens per example), in the same
//! run.
use super::bench::run_peer;
use anyhow::{bail, Result};
use clap::Args;
use instill::synth::{self, Context, Generated};
use instill::{hub, CausalLm, LoadOptions, Tokenizer};

#[derive(Args)]
pub struct SynthBench {
    /// Registry id or .gguf file.
    #[arg(short, long, default_value = "smollm2-135m-instruct")]
    model: String,
    /// Examples per run.
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16])]
    batch: Vec<usize>,
    /// Tokens per response.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Python with llama-cpp-python for the peer; `none` skips it.
    #[arg(long, env = "INSTILL_PEER_PYTHON", default_value = "/tmp/peers-venv/bin/python")]
    peer_python: String,
}

/// Generated tokens (instructions and responses) and wall seconds of one Magpie run.
fn magpie(model: &CausalLm, tok: &Tokenizer, a: &SynthBench, batch: usize) -> Result<(usize, f64)> {
    let dir = std::env::temp_dir().join(format!("instill-bench-synth-{}-{batch}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let cx = Context {
        model,
        tok,
        model_name: a.model.clone(),
        n: a.n,
        seed: 0,
        batch_size: batch,
        template: None,
        max_new_tokens: a.max_new_tokens,
        input: None,
        rounds: 1,
        curation: Default::default(),
        ensemble: vec![],
        progress: false,
    };
    let out = dir.join("magpie.jsonl");
    let t = std::time::Instant::now();
    synth::synthesize(synth::method("magpie")?, &cx, &out)?;
    let secs = t.elapsed().as_secs_f64();
    let mut tokens = 0;
    for stage in ["instructions.jsonl", "responses.jsonl"] {
        let recs: Vec<Generated> = instill::decode::jobs::read_records(&dir.join("magpie.jsonl.work").join(stage))?;
        tokens += recs.iter().map(|r| r.tokens).sum::<usize>();
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok((tokens, secs))
}

pub fn run(a: SynthBench) -> Result<()> {
    let source = hub::resolve(&a.model, true)?;
    let hub::ModelSource::Gguf(path) = &source else { bail!("{}: bench synth needs a GGUF file (the peer reads it)", a.model) };
    let model = CausalLm::load(&source, &LoadOptions::default())?;
    let tok = Tokenizer::load(&source)?;
    let threads = rayon::current_num_threads();
    println!("threads {threads}; model {}; {} examples per run, responses up to {} tokens", a.model, a.n, a.max_new_tokens);
    let mut rows = vec![];
    for &b in &a.batch {
        let (tokens, secs) = magpie(&model, &tok, &a, b)?;
        rows.push((b, tokens, secs));
    }
    // The peer: the same total tokens, one sequence at a time, from the pre-query prompt.
    let peer = if a.peer_python == "none" {
        None
    } else {
        let (prefix, _) = synth::magpie::pre_query(&tok, None)?;
        let ids = tok.encode_rendered(&prefix)?;
        let total = rows.last().map_or(0, |r| r.1);
        let per = total.div_ceil(a.n.max(1)).max(1);
        let req = serde_json::json!({"gguf": path, "ids": ids, "n_gen": per, "reps": 1, "threads": threads});
        let p = run_peer(&a.peer_python, "llamacpp_gen.py", &req, "llama.cpp peer (install llama-cpp-python)")?;
        let secs_per_seq = ids.len() as f64 / p["pp_tok_s"].as_f64().unwrap_or(f64::NAN) + per as f64 / p["tg_tok_s"].as_f64().unwrap_or(f64::NAN);
        Some((per * a.n) as f64 / (secs_per_seq * a.n as f64))
    };
    println!("| batch | generated tokens | seconds | instill tokens/s | llama.cpp tokens/s (one sequence at a time) | ratio |");
    println!("|---|---|---|---|---|---|");
    for (b, tokens, secs) in rows {
        let ours = tokens as f64 / secs;
        let (p, r) = peer.map_or(("-".into(), "-".into()), |p| (format!("{p:.1}"), format!("**{:.2}x**", ours / p)));
        println!("| {b} | {tokens} | {secs:.1} | {ours:.1} | {p} | {r} |");
    }
    Ok(())
}
