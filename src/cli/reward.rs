//! `instill reward score -m RM_DIR --data pairs.jsonl --out DIR`: per-pair rewards,
//! accuracy and a margin histogram.
use anyhow::Result;
use clap::{Args, Subcommand};
use instill::data::read::ReadOptions;
use instill::eval::pairs::{reward_pairs, summarize, write_report};
use instill::model::reward::RewardModel;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum RewardCmd {
    /// Score preference pairs with a reward model: rewards, accuracy, margin histogram.
    Score(ScoreArgs),
}

#[derive(Args)]
pub struct ScoreArgs {
    /// A reward model directory (`runs/NAME/model` of an `objective: reward` run, or a
    /// transformers `*ForSequenceClassification` directory).
    #[arg(short, long)]
    model: PathBuf,
    /// Preference pairs (any layout `instill data` reads).
    #[arg(long)]
    data: PathBuf,
    /// Report directory: pairs.jsonl, summary.json, margins.png.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
}

pub fn run(c: RewardCmd) -> Result<()> {
    let RewardCmd::Score(a) = c;
    let rm = RewardModel::load(&a.model)?;
    let scores = reward_pairs(&rm, &a.data, &ReadOptions::default(), a.batch_size)?;
    let s = summarize(&scores, &a.model.display().to_string());
    write_report(&a.out, &scores, &s)?;
    println!(
        "{} pairs: accuracy {:.1}%, mean margin {:.3} (median {:.3}); per pair in {}/pairs.jsonl, histogram in {}/margins.png",
        s.pairs,
        100.0 * s.accuracy,
        s.mean_margin,
        s.median_margin,
        a.out.display(),
        a.out.display()
    );
    Ok(())
}
