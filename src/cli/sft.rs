//! `instill sft RECIPE [--set k=v]... [--resume RUN_DIR]`
use anyhow::{bail, Result};
use clap::Args;
use instill::train::recipe::Recipe;
use instill::train::trainer::train;
use std::path::PathBuf;

#[derive(Args)]
pub struct SftArgs {
    /// Recipe YAML (model, data, method, hyper-parameters). With --resume it may be
    /// left out: the recipe saved in the run directory is used.
    recipe: Option<PathBuf>,
    /// Override a recipe key: --set lr=1e-4 --set lora.r=16 (values are YAML).
    #[arg(long = "set")]
    sets: Vec<String>,
    /// Continue the run in this directory from its newest checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
}

pub fn run(a: SftArgs) -> Result<()> {
    let recipe = match (&a.resume, &a.recipe) {
        (Some(run), _) => Recipe::load(&run.join("recipe.yaml"), &a.sets)?,
        (None, Some(r)) => Recipe::load(r, &a.sets)?,
        (None, None) => bail!("give a recipe (instill sft recipes/lora-smollm2.yaml) or --resume RUN_DIR"),
    };
    if let (Some(run), Some(_)) = (&a.resume, &a.recipe) {
        eprintln!("resuming {}: using the recipe saved there", run.display());
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} step {pos}/{len} [{bar:30}] {msg} ({elapsed} < {eta})").expect("template").progress_chars("=> "));
    let report = train(&recipe, a.resume.is_some(), &mut |step, total, m| {
        bar.set_length(total as u64);
        bar.set_position(step as u64);
        let val = m.val_loss.map_or(String::new(), |v| format!(" val {v:.4}"));
        bar.set_message(format!("loss {:.4}{val} lr {:.2e} |g| {:.2} {:.0} tok/s", m.loss, m.lr, m.grad_norm, m.tokens_per_s));
    })?;
    bar.finish();
    let out = report.out.display();
    if report.interrupted {
        println!("stopped at step {}: checkpoint written; continue with `instill sft --resume {out}`", report.steps);
    } else {
        let val = report.val_loss.map_or(String::new(), |v| format!(", validation loss {v:.4}"));
        let result = instill::train::trainer::final_dir(recipe.method);
        println!("{out}: {} steps, final loss {:.4}{val}; result in {out}/{result}, metrics in {out}/metrics.jsonl, curve in {out}/loss.png", report.steps, report.final_loss);
    }
    Ok(())
}
