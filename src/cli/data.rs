//! `instill data ...`: check, convert and render instruction data.
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use instill::data::read::{load, ReadOptions};
use instill::data::render::{fit, render, LossOn, Truncation};
use instill::data::Example;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DataCmd {
    /// Detect the layout, count records and report every problem with file:line and field.
    Check(CheckArgs),
    /// Show the exact text a model trains on and which tokens carry loss.
    Render(RenderArgs),
    /// Rewrite a file in another layout (messages, sharegpt, alpaca) as JSONL.
    Convert(ConvertArgs),
    /// Draw a weighted / temperature-sampled mixture of datasets and SuperNI tasks (YAML).
    Mix(MixArgs),
    /// Remove exact and (with --near) MinHash near-duplicates; the first occurrence is kept.
    Dedup(DedupArgs),
    /// Report training records that share word n-grams with an evaluation set.
    Contamination(ContaminationArgs),
}

#[derive(Args)]
pub struct DedupArgs {
    file: PathBuf,
    #[command(flatten)]
    read: ReadArgs,
    /// Jaccard similarity (0-1] from which two records count as near-duplicates.
    #[arg(long)]
    near: Option<f64>,
    /// Output JSONL (messages layout).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct ContaminationArgs {
    /// Training data.
    file: PathBuf,
    /// Evaluation data to check against.
    #[arg(long)]
    eval: PathBuf,
    /// n-gram length in words.
    #[arg(long, default_value_t = 13)]
    n: usize,
    #[command(flatten)]
    read: ReadArgs,
    /// Write the full report as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct MixArgs {
    /// Mixture YAML (paths in it are relative to its directory).
    mixture: PathBuf,
    /// Output JSONL (messages layout, with a "source" field).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct RenderArgs {
    file: PathBuf,
    #[command(flatten)]
    model: super::ModelArgs,
    #[command(flatten)]
    read: ReadArgs,
    /// How many examples to print.
    #[arg(long, default_value_t = 2)]
    show: usize,
    /// Which tokens are trained.
    #[arg(long, value_enum, default_value_t = LossOn::Assistant)]
    loss: LossOn,
    /// Chat template: chatml|llama3|gemma|alpaca|FILE (default: the model's own).
    #[arg(long)]
    template: Option<String>,
    /// Token limit; longer examples are counted and handled by --truncation.
    #[arg(long, default_value_t = 2048)]
    max_len: usize,
    #[arg(long, value_enum, default_value_t = Truncation::Drop)]
    truncation: Truncation,
}

#[derive(Args)]
pub struct ConvertArgs {
    file: PathBuf,
    #[command(flatten)]
    read: ReadArgs,
    /// Target layout.
    #[arg(long, value_enum)]
    to: instill::data::write::Layout,
    /// Output JSONL file (written atomically).
    #[arg(long)]
    out: PathBuf,
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
        DataCmd::Render(a) => render_cmd(a),
        DataCmd::Convert(a) => convert(a),
        DataCmd::Mix(a) => mix_cmd(a),
        DataCmd::Dedup(a) => dedup_cmd(a),
        DataCmd::Contamination(a) => contamination_cmd(a),
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

/// Load a file; refuse it if it has problems (the caller reports them all).
fn load_clean(file: &std::path::Path, read: &ReadArgs) -> Result<instill::data::read::Loaded> {
    let l = load(file, &read.options()?)?;
    if let Some(p) = l.problems.first() {
        bail!("{p} (and {} more problems; run `instill data check` to see them all)", l.problems.len() - 1);
    }
    Ok(l)
}

fn render_cmd(a: RenderArgs) -> Result<()> {
    let (_, tok) = a.model.load_tokenizer()?;
    let tmpl = tok.template(a.template.as_deref())?;
    let l = load_clean(&a.file, &a.read)?;
    let color = std::io::stdout().is_terminal();
    let (mut total, mut trained, mut over, mut kept, mut n) = (0, 0, 0, 0, 0);
    for (i, rec) in l.records.iter().enumerate() {
        let Example::Sft(c) = &rec.example else { bail!("{}: render shows SFT conversations; this is preference data", rec.origin) };
        let r = render(&tok, &tmpl, c, a.loss)?;
        n += 1;
        total += r.ids.len();
        trained += r.trained_tokens();
        over += usize::from(r.ids.len() > a.max_len);
        kept += usize::from(fit(r.clone(), a.max_len, a.truncation).is_some());
        if i < a.show {
            println!("--- {} ({} tokens, {} trained)", rec.origin, r.ids.len(), r.trained_tokens());
            println!("{}", highlight(&tok, &r.ids, &r.mask, color)?);
        }
    }
    println!(
        "--- {n} examples, {total} tokens ({:.1} per example), {trained} trained ({:.1}%); {over} longer than {} tokens, {} kept with --truncation {:?}",
        total as f64 / n.max(1) as f64,
        100.0 * trained as f64 / total.max(1) as f64,
        a.max_len,
        kept,
        a.truncation
    );
    Ok(())
}

/// The decoded text with trained tokens marked: green on a terminal, else between [[ ]].
fn highlight(tok: &instill::Tokenizer, ids: &[u32], mask: &[bool], color: bool) -> Result<String> {
    let (on, off) = if color { ("\x1b[32m", "\x1b[0m") } else { ("[[", "]]") };
    let mut out = String::new();
    let mut i = 0;
    while i < ids.len() {
        let j = (i..ids.len()).find(|&j| mask[j] != mask[i]).unwrap_or(ids.len());
        let text = tok.decode(&ids[i..j], false)?;
        if mask[i] {
            out.push_str(on);
            out.push_str(&text);
            out.push_str(off);
        } else {
            out.push_str(&text);
        }
        i = j;
    }
    Ok(out)
}

fn convert(a: ConvertArgs) -> Result<()> {
    let l = load_clean(&a.file, &a.read)?;
    let n = instill::data::write::write_jsonl(&a.out, &l.records, a.to)?;
    println!("{}: {n} records as {:?}", a.out.display(), a.to);
    Ok(())
}

fn mix_cmd(a: MixArgs) -> Result<()> {
    use instill::data::mix::{mix, Mixture};
    let m = Mixture::from_file(&a.mixture)?;
    let base = a.mixture.parent().unwrap_or(std::path::Path::new("."));
    let out = mix(&m, base)?;
    if let Some(p) = out.problems.first() {
        bail!("{p} (and {} more problems; run `instill data check`)", out.problems.len() - 1);
    }
    let rows = out.records.iter().map(|(src, r)| (r, Some(("source", serde_json::Value::String(src.clone())))));
    let n = instill::data::write::write_with(&a.out, rows, instill::data::write::Layout::Messages)?;
    for (src, avail, drawn) in &out.counts {
        println!("{drawn:>7} of {avail:>7}  {src}");
    }
    println!("{}: {n} examples", a.out.display());
    Ok(())
}

fn dedup_cmd(a: DedupArgs) -> Result<()> {
    if let Some(t) = a.near {
        if !(t > 0.0 && t <= 1.0) {
            bail!("--near {t}: expected a similarity in (0, 1]");
        }
    }
    let l = load_clean(&a.file, &a.read)?;
    let (keep, rep) = instill::data::dedup::dedup(&l.records, a.near);
    let kept: Vec<_> = keep.iter().map(|&i| l.records[i].clone()).collect();
    instill::data::write::write_jsonl(&a.out, &kept, instill::data::write::Layout::Messages)?;
    println!("{}: kept {} of {}; removed {} exact and {} near duplicates", a.out.display(), kept.len(), l.records.len(), rep.exact, rep.near);
    for (i, j) in rep.removed.iter().take(10) {
        println!("  {} duplicates {}", l.records[*i].origin, l.records[*j].origin);
    }
    Ok(())
}

fn contamination_cmd(a: ContaminationArgs) -> Result<()> {
    let train = load_clean(&a.file, &a.read)?;
    let eval = load(&a.eval, &ReadOptions::default())?;
    let c = instill::data::dedup::contamination(&train.records, &eval.records, a.n);
    println!(
        "{} of {} training records share {}-grams with {}; {} of {} evaluation records are touched",
        c.contaminated.len(),
        c.train_records,
        c.n,
        a.eval.display(),
        c.eval_touched,
        c.eval_records
    );
    let mut worst = c.contaminated.clone();
    worst.sort_by(|x, y| y.2.total_cmp(&x.2));
    for (origin, shared, frac) in worst.iter().take(10) {
        println!("  {origin}: {shared} shared n-grams ({:.1}% of its n-grams)", frac * 100.0);
    }
    if let Some(out) = &a.out {
        std::fs::write(out, serde_json::to_vec_pretty(&c)?)?;
    }
    Ok(())
}
