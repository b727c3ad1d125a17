//! `instill bench data`: read + render + tokenize (with loss masks) examples/s against
//! Hugging Face `datasets.map` with the same tokenizer and chat template, same run.
use anyhow::{Context, Result};
use clap::Args;
use instill::data::read::{load, ReadOptions};
use instill::data::render::LossOn;
use instill::data::stats::render_all;
use instill::{hub, Tokenizer};
use std::time::Instant;

#[derive(Args)]
pub struct DataBench {
    /// Files to process.
    #[arg(default_values = ["../shared/data/sft/lima.json", "../shared/data/sft/gsm8k_train.jsonl"])]
    files: Vec<std::path::PathBuf>,
    #[arg(short, long, default_value = hub::DEFAULT_MODEL)]
    model: String,
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Python with transformers + datasets for the peer; `none` skips it.
    #[arg(long, env = "INSTILL_PEER_PYTHON", default_value = "/tmp/peers-venv/bin/python")]
    peer_python: String,
}

pub fn run(a: DataBench) -> Result<()> {
    let source = hub::resolve(&a.model, true)?;
    let tok = Tokenizer::load(&source)?;
    let tmpl = tok.template(None)?;
    let threads = rayon::current_num_threads();
    let peer = if a.peer_python == "none" { None } else { Some(datasets_map(&a, source.path(), threads)?) };
    println!("threads {threads}; instill: read + render + tokenize + loss masks; datasets.map: load_dataset + apply_chat_template(tokenize=True), num_proc {threads}");
    println!("| file | examples | tokens (instill / HF) | instill examples/s | datasets.map examples/s | ratio |");
    println!("|---|---|---|---|---|---|");
    for f in &a.files {
        let mut times = vec![];
        let mut result = None;
        for _ in 0..a.reps.max(1) {
            let t = Instant::now();
            let l = load(f, &ReadOptions::default())?;
            let r = render_all(&tok, &tmpl, &l.records, LossOn::Assistant)?;
            times.push(t.elapsed().as_secs_f64());
            result = Some(r);
        }
        let r = result.expect("one rep");
        let ours = r.len() as f64 / instill::bench::median(&mut times);
        let tokens: usize = r.iter().flatten().map(|x| x.ids.len()).sum();
        let key = f.display().to_string();
        let p = peer.as_ref().map(|p| &p["results"][&key]);
        let p_rate = p.and_then(|p| p["examples_per_s"].as_f64());
        let p_tok = p.and_then(|p| p["tokens"].as_u64()).map_or("-".into(), |t| t.to_string());
        println!("| {key} | {} | {tokens} / {p_tok} | {ours:.0} | {} | {} |", r.len(), p_rate.map_or("-".into(), |x| format!("{x:.0}")), p_rate.map_or("-".into(), |x| format!("{:.1}x", ours / x)));
    }
    Ok(())
}

fn datasets_map(a: &DataBench, gguf: &std::path::Path, threads: usize) -> Result<serde_json::Value> {
    let files: Vec<String> = a.files.iter().map(|f| f.display().to_string()).collect();
    let dir = gguf.parent().context("model path has a directory")?;
    let name = gguf.file_name().context("model file name")?.to_string_lossy();
    let req = serde_json::json!({"files": files, "model_dir": dir, "gguf": name, "num_proc": threads});
    super::bench::run_peer(&a.peer_python, "data_map.py", &req, "datasets.map peer (pip install torch transformers datasets gguf)")
}
