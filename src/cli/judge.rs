//! `instill eval judge`: a model grades answers (MT-bench's judge prompts), single 1-10
//! or pairwise in both orders; writes judged.jsonl, summary.json and report.md.
use super::ModelArgs;
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use instill::eval::judge::{self, JudgeOptions};
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    Single,
    Pairwise,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::Pairwise => "pairwise",
        }
    }
}

#[derive(Args)]
pub struct JudgeArgs {
    /// The judge model.
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, value_enum, default_value = "pairwise")]
    mode: Mode,
    /// Questions: MT-bench's JSONL, Self-Instruct's user-oriented set, or {id, prompt}.
    #[arg(long)]
    questions: PathBuf,
    /// The answers judged: an eval report directory or JSONL with {id, answer}.
    #[arg(long)]
    answers: PathBuf,
    /// Pairwise: the answers compared against (a report or JSONL), or `reference` for
    /// the questions' own reference outputs (an AlpacaEval-style win rate).
    #[arg(long)]
    against: Option<String>,
    /// Single: grade against the questions' reference answers (MT-bench's `single-math-v1`).
    #[arg(long)]
    with_reference: bool,
    /// Report directory (resumable).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Tokens per judgment (explanation and verdict).
    #[arg(long, default_value_t = 384)]
    max_new_tokens: usize,
    /// Chat template for the judge (default: its own).
    #[arg(long)]
    template: Option<String>,
    /// Judge only the first N questions.
    #[arg(long)]
    limit: Option<usize>,
}

pub fn run(a: JudgeArgs) -> Result<()> {
    let mut qs = judge::read_questions(&a.questions)?;
    qs.truncate(a.limit.unwrap_or(usize::MAX));
    let answers = judge::read_answers(&a.answers)?;
    let (model, tok) = a.model.load()?;
    let settings = serde_json::json!({
        "judge": a.model.model, "adapter": a.model.adapter, "mode": a.mode.name(), "questions": a.questions, "answers": a.answers,
        "against": a.against, "with_reference": a.with_reference, "template": a.template, "max_new_tokens": a.max_new_tokens, "limit": a.limit,
    });
    let opts = JudgeOptions { settings, template: a.template.clone(), batch_size: a.batch_size, max_new_tokens: a.max_new_tokens, progress: true };
    let judged = match a.mode {
        Mode::Single => judge::single(&model, &tok, &qs, &answers, a.with_reference, &a.out, &opts)?,
        Mode::Pairwise => {
            let against = match a.against.as_deref() {
                None => bail!("--mode pairwise needs --against (a report, a JSONL of answers, or `reference`)"),
                Some("reference") => qs.iter().filter_map(|q| q.reference.clone().map(|r| (q.id.clone(), r))).collect(),
                Some(p) => judge::read_answers(std::path::Path::new(p))?,
            };
            judge::pairwise(&model, &tok, &qs, &answers, &against, &a.out, &opts)?
        }
    };
    let s = judge::summarize(&judged);
    judge::write_report(&a.out, &judged, &s)?;
    println!("{} judged, {} unparseable (shown in {})", s.judged, s.unparsed, a.out.join("report.md").display());
    if let Some(m) = s.mean_rating {
        println!("mean rating {m:.2} / 10");
    }
    if let Some(w) = s.win_rate {
        println!("win rate {:.1} %  {:?}", 100.0 * w, s.outcomes);
    }
    Ok(())
}
