//! `instill graft -m BASE --skill DIR ... --out DIR`: add sparse fine-tuning deltas to a
//! base model, composing several and reporting where they conflict.
use super::ModelArgs;
use anyhow::{bail, Result};
use clap::Args;
use instill::peft::sparse_graft::{self, Overlap};
use std::path::PathBuf;

#[derive(Args)]
pub struct GraftArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A sparse delta (a `method: sparse` run directory or its adapter/); repeat to compose.
    #[arg(long = "skill", required = true)]
    skills: Vec<PathBuf>,
    /// Elements several skills change: add the changes, take their mean, or refuse.
    #[arg(long, value_enum, default_value = "sum")]
    overlap: Overlap,
    /// Output directory: the grafted model (Hugging Face layout) and graft.json.
    #[arg(long)]
    out: PathBuf,
    /// Write the composed sparse delta (an adapter directory for --adapter) instead of a model.
    #[arg(long)]
    delta: bool,
}

pub fn run(a: GraftArgs) -> Result<()> {
    if a.model.adapter.is_some() {
        bail!("--adapter: graft adds sparse deltas with --skill; merge a LoRA first with `export --merge`");
    }
    let (mut model, tok) = a.model.load()?;
    let (delta, report) = sparse_graft::graft(&mut model, &a.skills, a.overlap)?;
    if a.delta {
        delta.write(&a.out, serde_json::json!({"grafted_from": a.skills, "overlap_policy": a.overlap}))?;
    } else {
        instill::model::weights::save_hf_dir(&a.out, model.arch, &model.config, model.named_tensors()?, candle_core::DType::F32, 2_000_000_000, &tok.hf_files())?;
    }
    sparse_graft::save_report(&a.out, &report)?;
    let sizes: Vec<String> = a.skills.iter().zip(&report.nnz).map(|(s, n)| format!("{}: {n}", s.display())).collect();
    eprintln!("graft: {} elements changed ({}); {} overlap, {} of them in opposite directions ({:?})", report.nnz_total, sizes.join(", "), report.overlap, report.opposite, report.policy);
    for w in report.weights.iter().take(5) {
        eprintln!("  {}: {} overlapping, {} opposite", w.name, w.overlap, w.opposite);
    }
    println!("{}", a.out.display());
    Ok(())
}
