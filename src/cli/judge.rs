//! `instill eval judge`: a model grades answers (MT-bench's judge prompts), single 1-10
//! or pairwise in both orders; writes judged.jsonl, summary.json and report.md.
use super::ModelArgs;
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use instill::eval::judge::{self, JudgeOptions};
use std::collections::HashMap;
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
    /// A reward model directory: its scores of the same answers are compared with the
    /// judge's verdicts (pairwise agreement, or rank correlation with the ratings).
    #[arg(long)]
    reward_model: Option<PathBuf>,
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
    let against: Option<HashMap<String, String>> = match (a.mode, a.against.as_deref()) {
        (Mode::Single, _) => None,
        (Mode::Pairwise, None) => bail!("--mode pairwise needs --against (a report, a JSONL of answers, or `reference`)"),
        (Mode::Pairwise, Some("reference")) => Some(qs.iter().filter_map(|q| q.reference.clone().map(|r| (q.id.clone(), r))).collect()),
        (Mode::Pairwise, Some(p)) => Some(judge::read_answers(std::path::Path::new(p))?),
    };
    let judged = match &against {
        None => judge::single(&model, &tok, &qs, &answers, a.with_reference, &a.out, &opts)?,
        Some(b) => judge::pairwise(&model, &tok, &qs, &answers, b, &a.out, &opts)?,
    };
    let mut s = judge::summarize(&judged);
    if let Some(dir) = &a.reward_model {
        let rm = instill::model::reward::RewardModel::load(dir)?;
        let theirs = match &against {
            Some(b) => Some(rewards(&rm, &qs, b, a.batch_size)?),
            None => None,
        };
        s.reward = Some(judge::reward_agreement(&judged, &rewards(&rm, &qs, &answers, a.batch_size)?, theirs.as_ref()));
    }
    judge::write_report(&a.out, &judged, &s)?;
    println!("{} judged, {} unparseable (shown in {})", s.judged, s.unparsed, a.out.join("report.md").display());
    if let Some(m) = s.mean_rating {
        println!("mean rating {m:.2} / 10");
    }
    if let Some(w) = s.win_rate {
        println!("win rate {:.1} %  {:?}", 100.0 * w, s.outcomes);
    }
    if let Some(r) = &s.reward {
        println!("reward model: {}", serde_json::to_string(r)?);
    }
    Ok(())
}

/// The reward model's score of each question's answer (as a user / assistant exchange).
fn rewards(rm: &instill::model::reward::RewardModel, qs: &[judge::Question], answers: &HashMap<String, String>, batch: usize) -> Result<HashMap<String, f64>> {
    use instill::data::{Conversation, Message};
    let have: Vec<&judge::Question> = qs.iter().filter(|q| answers.contains_key(&q.id)).collect();
    let convs: Vec<Conversation> = have.iter().map(|q| Conversation { messages: vec![Message::new("user", q.text.clone()), Message::new("assistant", answers[&q.id].clone())], tools: None }).collect();
    let scores = rm.score(&convs, batch)?;
    Ok(have.iter().zip(scores).map(|(q, s)| (q.id.clone(), s[0] as f64)).collect())
}
