//! `instill data ...`: check, convert and render instruction data.
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use instill::data::read::{load, ReadOptions};
use instill::data::Example;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DataCmd {
    /// Detect the layout, count records and report every problem with file:line and field.
    Check(CheckArgs),
}

#[derive(Args, Clone)]
pub struct ReadArgs {
    /// Layout (default: detected): alpaca, sharegpt, messages, gsm8k, superni, superni-task,
    /// sharegpt-preference, messages-preference, trl-preference, hh-rlhf, kto.
    #[arg(long)]
    pub format: Option<String>,
    /// Rename a field before reading: FROM=TO (repeatable), e.g. --map prompt=instruction.
    #[arg(long = "map")]
    pub map: Vec<String>,
    /// SuperNI: positive examples in each prompt.
    #[arg(long, default_value_t = 2)]
    pub k_shot: usize,
}

impl ReadArgs {
    pub fn options(&self) -> Result<ReadOptions> {
        let mut columns = vec![];
        for m in &self.map {
            let Some((a, b)) = m.split_once('=') else { bail!("--map {m:?}: expected FROM=TO") };
            columns.push((a.to_string(), b.to_string()));
        }
        let mut o = ReadOptions { format: self.format.clone(), columns, ..Default::default() };
        o.superni.k_positive = self.k_shot;
        Ok(o)
    }
}

#[derive(Args)]
pub struct CheckArgs {
    files: Vec<PathBuf>,
    #[command(flatten)]
    read: ReadArgs,
    /// Show at most this many problems per file.
    #[arg(long, default_value_t = 50)]
    max_problems: usize,
}

pub fn run(cmd: DataCmd) -> Result<()> {
    match cmd {
        DataCmd::Check(a) => check(a),
    }
}

fn check(a: CheckArgs) -> Result<()> {
    let opts = a.read.options()?;
    let mut bad = 0;
    for f in &a.files {
        let l = load(f, &opts)?;
        let (mut sft, mut pref, mut lab, mut turns) = (0, 0, 0, 0);
        for r in &l.records {
            match &r.example {
                Example::Sft(c) => {
                    sft += 1;
                    turns += c.messages.len();
                }
                Example::Preference(_) => pref += 1,
                Example::Labelled(..) => lab += 1,
            }
        }
        println!(
            "{}: {} layout, {} records ({sft} conversations with {turns} turns, {pref} preference pairs, {lab} labelled), {} problems",
            f.display(),
            l.format,
            l.records.len(),
            l.problems.len()
        );
        for p in l.problems.iter().take(a.max_problems) {
            println!("  {p}");
        }
        if l.problems.len() > a.max_problems {
            println!("  ... and {} more", l.problems.len() - a.max_problems);
        }
        bad += l.problems.len();
    }
    if bad > 0 {
        bail!("{bad} problems found");
    }
    Ok(())
}
