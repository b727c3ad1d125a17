//! `instill merge CONFIG.yaml --out DIR|FILE.gguf` and `instill task-vector`.
use anyhow::{bail, Result};
use clap::Args;
use instill::export::quant::Quant;
use instill::merge::{self, MergeConfig, Options};
use instill::progress::Progress;
use std::path::PathBuf;

#[derive(Args)]
pub struct MergeArgs {
    /// A mergekit YAML (merge_method, base_model, models or slices, parameters, dtype, tokenizer_source ...).
    config: PathBuf,
    /// Output: a directory (Hugging Face layout), a .gguf file, or (with --lora-rank) an adapter directory.
    #[arg(long)]
    out: PathBuf,
    /// GGUF tensor types for a .gguf output: f32, f16, bf16, q8_0, q4_0, q4_k_m or q6_k (default f16).
    #[arg(long)]
    quant: Option<String>,
    /// Seed of DARE's and DELLA's random masks (the same seed gives the same merge).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `paper`: the papers' forms where mergekit's differ (TIES: elect signs on unweighted deltas and average over agreeing models; DARE/DELLA: rescale by 1/p).
    #[arg(long)]
    method_variant: Option<String>,
    /// Write a LoRA adapter of this rank (truncated SVD of the merged delta) instead of a model; the inputs must be adapters over one base.
    #[arg(long)]
    lora_rank: Option<usize>,
    /// Split the weights into shards of at most this many MB.
    #[arg(long, default_value_t = 5000)]
    shard_mb: usize,
}

fn bar(label: &str) -> Progress {
    Progress::new(label, "tensor", 0, "{msg:>40} [{bar:40}] {pos}/{len} tensors {elapsed}", true)
}

fn tick(bar: &Progress) -> impl FnMut(usize, usize, &str) + '_ {
    move |done, total, name| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(name.to_string());
    }
}

pub fn run(a: MergeArgs) -> Result<()> {
    let paper = match a.method_variant.as_deref() {
        None => false,
        Some("paper") => true,
        Some(v) => bail!("--method-variant {v:?}: the only variant is \"paper\""),
    };
    let quant = a.quant.as_deref().map(Quant::parse).transpose()?;
    let cfg = MergeConfig::load(&a.config)?;
    let opts = Options { out: a.out.clone(), quant, seed: a.seed, paper, lora_rank: a.lora_rank, shard_bytes: a.shard_mb * 1_000_000 };
    let bar = bar("merge");
    let s = merge::run(cfg, &opts, &mut tick(&bar))?;
    bar.finish_and_clear();
    eprintln!("{}: {} tensors, {:.1} MB", s.method, s.tensors, s.bytes as f64 / 1e6);
    println!("{}", s.out.display());
    Ok(())
}

#[derive(Args)]
pub struct TaskVectorArgs {
    /// The model the tuned one started from (HF directory, .gguf, registry id).
    #[arg(long)]
    base: String,
    /// The tuned model.
    #[arg(long)]
    tuned: String,
    /// Output directory of `scale * (tuned - base)` (f32), usable as a model in a merge YAML.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Split the weights into shards of at most this many MB.
    #[arg(long, default_value_t = 5000)]
    shard_mb: usize,
}

pub fn task_vector(a: TaskVectorArgs) -> Result<()> {
    let bar = bar("task-vector");
    let s = merge::task_vector::write(&a.base, &a.tuned, &a.out, a.scale, a.shard_mb * 1_000_000, &mut tick(&bar))?;
    bar.finish_and_clear();
    eprintln!("{} tensors, {:.1} MB", s.tensors, s.bytes as f64 / 1e6);
    println!("{}", s.out.display());
    Ok(())
}
