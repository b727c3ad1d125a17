//! `instill eval ...` and `instill score`.
use super::ModelArgs;
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use instill::eval::compare::compare;
use instill::eval::metrics::{best, by_name};
use instill::eval::robustness;
use instill::eval::runner::{self, RunOptions};
use instill::eval::suites::{field, generic::Generic, gsm8k::Gsm8k, jsonl, references, superni::SuperNi, Suite};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum EvalCmd {
    /// SuperNI held-out instances: definition + k examples, ROUGE-L and exact match.
    Superni(SuperniArgs),
    /// GSM8K: final-answer accuracy (strict `#### N` and last number).
    Gsm8k(Gsm8kArgs),
    /// Any JSONL of {prompt, references}: the metrics you name.
    Generic(GenericArgs),
    /// Two or more reports: per-category/task deltas, negative and positive flips, a chart.
    Compare(CompareArgs),
    /// SuperNI with alternative task definitions: the spread of scores across wordings.
    Robustness(RobustnessArgs),
    /// Write alternative wordings of each SuperNI task definition with a local model.
    Paraphrase(ParaphraseArgs),
    /// Held-out preference pairs: how often the model gives the chosen response the
    /// higher log-prob (summed and per token), and the margins.
    Pairs(PairsArgs),
    /// A model judges answers (MT-bench's prompts): single 1-10 ratings, or pairwise in both orders.
    Judge(super::judge::JudgeArgs),
}

#[derive(Args)]
pub struct PairsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Preference pairs (any layout `instill data` reads).
    #[arg(long)]
    data: PathBuf,
    /// Chat template (default: the model's own).
    #[arg(long)]
    template: Option<String>,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Report directory: pairs.jsonl, summary.json, margins.png.
    #[arg(long)]
    out: PathBuf,
}

fn pairs(a: PairsArgs) -> Result<()> {
    use instill::eval::pairs::{policy_pairs, summarize, write_report};
    let (model, tok) = a.model.load()?;
    let tmpl = tok.template(a.template.as_deref())?;
    let scores = policy_pairs(&model, &tok, &tmpl, &a.data, &Default::default(), a.batch_size)?;
    let who = match &a.model.adapter {
        Some(ad) => format!("{} + {}", a.model.model, ad.display()),
        None => a.model.model.clone(),
    };
    let s = summarize(&scores, &who);
    write_report(&a.out, &scores, &s)?;
    println!(
        "{} pairs: chosen more likely in {:.1}% (per token {:.1}%), mean log-prob margin {:.3} (per token {:.4}); {}/summary.json",
        s.pairs,
        100.0 * s.accuracy,
        100.0 * s.accuracy_per_token.unwrap_or(f64::NAN),
        s.mean_margin,
        s.mean_margin_per_token.unwrap_or(f64::NAN),
        a.out.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Report directory (predictions.jsonl, scores.json, report.md); rerun to resume.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Default: the suite's (SuperNI 128, GSM8K 256).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Render prompts as a user turn of this chat template (chatml|llama3|gemma|alpaca|FILE,
    /// or "model" for the model's own); default: plain text.
    #[arg(long)]
    template: Option<String>,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    steer: super::steer::SteerArgs,
}

impl RunArgs {
    fn options(&self, suite: serde_json::Value) -> RunOptions {
        let mut settings = serde_json::json!({
            "model": self.model.model, "adapter": self.model.adapter, "dequantize": self.model.dequantize,
            "template": self.template, "max_new_tokens": self.max_new_tokens, "suite": suite,
        });
        // Only when steering: reports made before it existed still resume.
        let steer = self.steer.settings();
        if !steer.is_null() {
            settings["steer"] = steer;
        }
        RunOptions { batch_size: self.batch_size, max_new_tokens: self.max_new_tokens, template: self.template.clone(), settings, progress: !self.quiet, steer: None }
    }

    /// The model, its tokenizer and the run options, with any decoding-time companions.
    fn load(&self, suite: serde_json::Value) -> Result<(instill::CausalLm, instill::Tokenizer, RunOptions)> {
        let (model, tok) = self.model.load()?;
        let mut opts = self.options(suite);
        opts.steer = self.steer.build(&model, &tok, self.model.dequantize)?;
        Ok((model, tok, opts))
    }
}

#[derive(Args)]
pub struct SuperniArgs {
    #[command(flatten)]
    run: RunArgs,
    /// eval_dev.jsonl-style file (task, categories, definition, positive_examples, id, input, references).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 2)]
    k_shot: usize,
    /// A seeded subset: this many instances per task.
    #[arg(long)]
    per_task: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl SuperniArgs {
    fn suite(&self) -> Result<SuperNi> {
        Ok(SuperNi::new(&self.data, self.k_shot, self.per_task, self.seed)?)
    }
    fn settings(&self) -> serde_json::Value {
        serde_json::json!({"name": "superni", "data": self.data, "k_shot": self.k_shot, "per_task": self.per_task, "seed": self.seed})
    }
}

#[derive(Args)]
pub struct Gsm8kArgs {
    #[command(flatten)]
    run: RunArgs,
    /// JSONL with question and answer ("... #### N").
    #[arg(long)]
    data: PathBuf,
    /// Evaluate the first N problems.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    k_shot: usize,
    /// Solved problems for the k-shot preamble (the first k lines).
    #[arg(long)]
    shots: Option<PathBuf>,
}

#[derive(Args)]
pub struct GenericArgs {
    #[command(flatten)]
    run: RunArgs,
    #[arg(long)]
    data: PathBuf,
    /// Metrics, the first being the primary one (rougeL, exact_match, cer, accuracy, ...).
    #[arg(long, value_delimiter = ',', default_value = "rougeL,exact_match")]
    metrics: Vec<String>,
    #[arg(long)]
    limit: Option<usize>,
    /// Stop generating at this text (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
}

#[derive(Args)]
pub struct CompareArgs {
    /// Report directories; the first is the baseline.
    #[arg(required = true, num_args = 2..)]
    reports: Vec<PathBuf>,
    /// Where compare.md, compare.json and categories.png go (default: beside the last report).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct RobustnessArgs {
    #[command(flatten)]
    superni: SuperniArgs,
    /// {"task": ["alternative definition", ...]} (e.g. from `instill eval paraphrase`).
    #[arg(long)]
    definitions: PathBuf,
}

#[derive(Args)]
pub struct ParaphraseArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// eval_dev.jsonl-style file: one definition per task is re-phrased.
    #[arg(long)]
    data: PathBuf,
    /// Wordings per task.
    #[arg(long, default_value_t = 3)]
    n: usize,
    /// Only these tasks (default: every task in the file).
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Chat template for the request (default: the model's own).
    #[arg(long)]
    template: Option<String>,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct ScoreArgs {
    /// Metric: rougeL, rougeL_xlingual, exact_match, cer, accuracy, gsm8k_strict, gsm8k_flexible.
    #[arg(long)]
    metric: String,
    /// JSONL with "prediction" and "references" (or "reference") per line.
    #[arg(long)]
    pred: PathBuf,
    /// Also write each line with its score here (JSONL).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn print_report(r: &instill::eval::report::Report, out: &std::path::Path) {
    println!(
        "{}: {} examples, {} {:.2} (correct {}); {:.2} examples/s; report in {}",
        r.suite,
        r.overall.n,
        r.overall.primary,
        r.overall.primary_score,
        r.overall.correct,
        r.examples_per_s,
        out.join("report.md").display()
    );
}

fn run_suite(run: &RunArgs, suite: &dyn Suite, settings: serde_json::Value) -> Result<()> {
    let (model, tok, opts) = run.load(settings)?;
    let r = runner::run(&model, &tok, suite, &run.out, &opts)?;
    print_report(&r, &run.out);
    Ok(())
}

pub fn run(cmd: EvalCmd) -> Result<()> {
    match cmd {
        EvalCmd::Superni(a) => run_suite(&a.run, &a.suite()?, a.settings()),
        EvalCmd::Gsm8k(a) => {
            let s = Gsm8k { path: a.data.clone(), k_shot: a.k_shot, shots: a.shots.clone(), limit: a.limit };
            run_suite(&a.run, &s, serde_json::json!({"name": "gsm8k", "data": a.data, "k_shot": a.k_shot, "shots": a.shots, "limit": a.limit}))
        }
        EvalCmd::Generic(a) => {
            let max = a.run.max_new_tokens.unwrap_or(256);
            let s = Generic { path: a.data.clone(), metrics: a.metrics.clone(), limit: a.limit, max_new_tokens: max, stop: a.stop.clone() };
            run_suite(&a.run, &s, serde_json::json!({"name": "generic", "data": a.data, "metrics": a.metrics, "limit": a.limit, "stop": a.stop}))
        }
        EvalCmd::Compare(a) => {
            let c = compare(&a.reports)?;
            let out = a.out.clone().unwrap_or_else(|| a.reports.last().expect("two or more").join("compare"));
            c.write(&out)?;
            print!("{}", c.markdown().split("\n## By category").next().unwrap_or_default());
            println!("\nwritten: {}/compare.md, compare.json, categories.png", out.display());
            Ok(())
        }
        EvalCmd::Robustness(a) => {
            let alts = robustness::read_alternatives(&a.definitions)?;
            let mut settings = a.superni.settings();
            settings["definitions"] = serde_json::json!(a.definitions);
            let (model, tok, opts) = a.superni.run.load(settings)?;
            let r = robustness::run(&model, &tok, &a.superni.suite()?, &alts, &a.superni.run.out, &opts)?;
            println!(
                "overall primary score across {} wordings: mean {:.2}, std {:.2}, min {:.2}, max {:.2}; {}",
                r.overall.scores.len(),
                r.overall.mean,
                r.overall.std,
                r.overall.min,
                r.overall.max,
                a.superni.run.out.join("robustness.md").display()
            );
            Ok(())
        }
        EvalCmd::Paraphrase(a) => paraphrase(a),
        EvalCmd::Pairs(a) => pairs(a),
        EvalCmd::Judge(a) => super::judge::run(a),
    }
}

fn paraphrase(a: ParaphraseArgs) -> Result<()> {
    let mut defs = std::collections::BTreeMap::new();
    for (n, v) in jsonl(&a.data)? {
        let (t, d) = (field(&v, "task", &a.data, n)?, field(&v, "definition", &a.data, n)?);
        if a.tasks.is_empty() || a.tasks.iter().any(|x| x == t) {
            defs.entry(t.to_string()).or_insert_with(|| d.to_string());
        }
    }
    if let Some(missing) = a.tasks.iter().find(|t| !defs.contains_key(*t)) {
        bail!("{}: no task {missing:?}", a.data.display());
    }
    let (model, tok) = a.model.load()?;
    let alts = robustness::paraphrase(&model, &tok, &defs, a.n, a.seed, a.template.as_deref())?;
    instill::eval::write_json(&a.out, &alts)?;
    println!("{} tasks, {} wordings -> {}", alts.len(), alts.values().map(Vec::len).sum::<usize>(), a.out.display());
    Ok(())
}

pub fn score(a: ScoreArgs) -> Result<()> {
    let m = by_name(&a.metric)?;
    let (mut sum, mut n, mut out) = (0.0, 0usize, String::new());
    for (line, mut v) in jsonl(&a.pred)? {
        let pred = field(&v, "prediction", &a.pred, line)?.to_string();
        let refs = references(&v, &a.pred, line)?;
        let s = best(m.as_ref(), &pred, &refs);
        sum += s;
        n += 1;
        v[m.name()] = serde_json::json!(s);
        out.push_str(&format!("{v}\n"));
    }
    if n == 0 {
        bail!("{}: no predictions", a.pred.display());
    }
    if let Some(o) = &a.out {
        instill::eval::write_text(o, &out)?;
    }
    println!("{}: {:.4} over {n} predictions", m.name(), sum / n as f64);
    Ok(())
}
