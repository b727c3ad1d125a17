//! `instill train RECIPE [--set k=v]... [--resume RUN_DIR]` (any objective), and
//! `instill sft`, the same for `objective: sft`.
use anyhow::{bail, Result};
use clap::Args;
use instill::progress::Progress;
use instill::train::recipe::Recipe;
use instill::train::trainer::{train, Event};
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainArgs {
    /// Recipe YAML (model, data, method, objective, hyper-parameters). With --resume it
    /// may be left out: the recipe saved in the run directory is used.
    recipe: Option<PathBuf>,
    /// Override a recipe key: --set lr=1e-4 --set lora.r=16 (values are YAML).
    #[arg(long = "set")]
    sets: Vec<String>,
    /// Continue the run in this directory from its newest readable checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
}

/// Run a recipe; `sft_only` is `instill sft`, which refuses other objectives.
pub fn run(a: TrainArgs, sft_only: bool) -> Result<()> {
    let recipe = match (&a.resume, &a.recipe) {
        // The run continues where it is, even if its directory was moved or copied.
        (Some(run), _) => Recipe { output_dir: Some(run.clone()), ..Recipe::load(&run.join("recipe.yaml"), &a.sets)? },
        (None, Some(r)) => Recipe::load(r, &a.sets)?,
        (None, None) => bail!("give a recipe (instill train recipes/dpo-smollm2.yaml) or --resume RUN_DIR"),
    };
    if sft_only && recipe.objective != "sft" {
        bail!("`instill sft` runs objective sft; this recipe's objective is {:?}: use `instill train`", recipe.objective);
    }
    if let (Some(run), Some(_)) = (&a.resume, &a.recipe) {
        eprintln!("resuming {}: using the recipe saved there", run.display());
    }
    let bar = Progress::new("train", "step", 0, "{spinner} step {pos}/{len} [{bar:30}] {msg} ({elapsed} < {eta})", true);
    let refs = Progress::new("reference", "sequence", 0, "reference log-probs {pos}/{len} [{bar:30}] ({elapsed} < {eta})", true);
    let report = train(&recipe, a.resume.is_some(), &mut |e| match e {
        Event::Note(s) => eprintln!("{s}"),
        Event::Reference { done, total } => {
            refs.set_length(total as u64);
            refs.set_position(done as u64);
            if done == total {
                refs.finish();
            }
        }
        Event::Step { step, total, metrics: m } => {
            bar.set_length(total as u64);
            bar.set_position(step as u64);
            let val = m.val_loss.map_or(String::new(), |v| format!(" val {v:.4}"));
            let pref = match (m.extra.get("rewards/accuracies"), m.extra.get("rewards/margins")) {
                (Some(a), Some(g)) => format!(" acc {a:.2} margin {g:.3}"),
                (None, Some(g)) => format!(" margin {g:.3}"),
                _ => String::new(),
            };
            bar.set_message(format!("loss {:.4}{val}{pref} lr {:.2e} |g| {:.2} {:.0} tok/s", m.loss, m.lr, m.grad_norm, m.tokens_per_s));
        }
    })?;
    bar.finish();
    let out = report.out.display();
    if report.interrupted {
        println!("stopped at step {}: checkpoint written; continue with `instill train --resume {out}`", report.steps);
    } else {
        let val = report.val_loss.map_or(String::new(), |v| format!(", validation loss {v:.4}"));
        println!("{out}: {} steps, final loss {:.4}{val}; result in {}, metrics in {out}/metrics.jsonl, curves in {out}/*.png", report.steps, report.final_loss, report.result.display());
    }
    Ok(())
}
