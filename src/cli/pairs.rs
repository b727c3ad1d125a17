//! `instill pairs -m POLICY --reward-model RM --prompts p.jsonl --n 4 --out pairs.jsonl`:
//! sample n responses per prompt, score them, and write best vs worst as preference
//! pairs (TRL's prompt/chosen/rejected layout with the scores), which `instill train`
//! reads. Appends as it goes: a rerun continues after the prompts already written.
use super::generate::SamplingArgs;
use super::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use instill::data::Message;
use instill::decode::best_of::sample_and_score;
use instill::model::reward::RewardModel;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct PairsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The reward model that ranks the samples.
    #[arg(long)]
    reward_model: PathBuf,
    /// JSONL of prompts: {"prompt": "..."} or {"messages": [...]} per line.
    #[arg(long)]
    prompts: PathBuf,
    /// Samples per prompt.
    #[arg(long, default_value_t = 4)]
    n: usize,
    /// Output JSONL (appended; rerun to resume).
    #[arg(long)]
    out: PathBuf,
    /// Samples generated together.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Keep pairs only when best and worst differ by at least this reward.
    #[arg(long, default_value_t = 0.0)]
    min_margin: f32,
    #[command(flatten)]
    sampling: SamplingArgs,
}

fn read_prompts(path: &PathBuf) -> Result<Vec<Vec<Message>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut out = vec![];
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}:{}: invalid JSON", path.display(), n + 1))?;
        match (v.get("prompt").and_then(|p| p.as_str()), v.get("messages")) {
            (Some(p), _) => out.push(vec![Message::new("user", p)]),
            (None, Some(m)) => out.push(serde_json::from_value(m.clone()).with_context(|| format!("{}:{}: field \"messages\"", path.display(), n + 1))?),
            _ => bail!("{}:{}: expected a \"prompt\" string or a \"messages\" list", path.display(), n + 1),
        }
    }
    Ok(out)
}

pub fn run(a: PairsArgs) -> Result<()> {
    let mut opts = a.sampling.options();
    if opts.sampling.temperature <= 0.0 {
        opts.sampling.temperature = 1.0;
        eprintln!("sampling at temperature 1.0 (pairs need different samples; set --temperature to change)");
    }
    let prompts = read_prompts(&a.prompts)?;
    // Resume: one output line per prompt done (kept or skipped).
    let done = std::fs::read_to_string(&a.out).map(|t| t.lines().filter(|l| l.ends_with('}')).count()).unwrap_or(0);
    let (model, tok) = a.model.load()?;
    let rm = RewardModel::load(&a.reward_model)?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&a.out).with_context(|| format!("{}", a.out.display()))?;
    let bar = instill::progress::Progress::new("pairs", "prompt", prompts.len() as u64, "{bar:30} {pos}/{len} prompts  ETA {eta}", true);
    bar.start_at(done as u64);
    let (mut kept, mut skipped) = (0, 0);
    let per = (a.batch_size / a.n).max(1);
    for (k, chunk) in prompts[done.min(prompts.len())..].chunks(per).enumerate() {
        let ranked = sample_and_score(&model, &tok, a.sampling.template.as_deref(), &rm, chunk, a.n, &opts, a.batch_size.max(a.n))?;
        let mut text = String::new();
        for (p, s) in chunk.iter().zip(ranked) {
            let (best, worst) = (&s[0], &s[s.len() - 1]);
            let rewards: Vec<f32> = s.iter().map(|x| x.reward).collect();
            let line = if best.generation.text.trim() == worst.generation.text.trim() || best.reward - worst.reward < a.min_margin {
                skipped += 1;
                serde_json::json!({"prompt": p, "skipped": "best and worst samples do not differ enough", "rewards": rewards})
            } else {
                kept += 1;
                serde_json::json!({"prompt": p, "chosen": [{"role": "assistant", "content": best.generation.text.trim()}], "rejected": [{"role": "assistant", "content": worst.generation.text.trim()}], "chosen_reward": best.reward, "rejected_reward": worst.reward, "margin": best.reward - worst.reward, "rewards": rewards})
            };
            text.push_str(&serde_json::to_string(&line)?);
            text.push('\n');
        }
        f.write_all(text.as_bytes())?;
        f.flush()?;
        bar.set_position((done + (k + 1) * per).min(prompts.len()) as u64);
    }
    bar.finish();
    println!("{}: {kept} pairs written, {skipped} prompts skipped (best = worst){}", a.out.display(), if done > 0 { format!(", {done} done before") } else { String::new() });
    Ok(())
}
