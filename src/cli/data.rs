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
    /// Rewrite a file in another layout (messages, sharegpt, alpaca) as JSONL or Parquet.
    Convert(ConvertArgs),
    /// Draw a weighted / temperature-sampled mixture of datasets and SuperNI tasks (YAML).
    Mix(MixArgs),
    /// Remove exact and (with --near) MinHash near-duplicates; the first occurrence is kept.
    Dedup(DedupArgs),
    /// Report training records that share word n-grams with an evaluation set.
    Contamination(ContaminationArgs),
    /// Token-length statistics and histograms (PNG) under a model's tokenizer and template.
    Stats(StatsArgs),
    /// Score examples by quality indicators (length, MTLD, loss/perplexity under a model)
    /// and keep the best fraction.
    Select(SelectArgs),
}

#[derive(Args)]
pub struct StatsArgs {
    files: Vec<PathBuf>,
    #[command(flatten)]
    model: super::ModelArgs,
    #[command(flatten)]
    read: ReadArgs,
    /// Directory for <file>_tokens.png and stats.json.
    #[arg(long)]
    out: PathBuf,
    /// Context length for the truncation rate.
    #[arg(long, default_value_t = 2048)]
    max_len: usize,
    #[arg(long)]
    template: Option<String>,
}

#[derive(Args)]
pub struct SelectArgs {
    file: PathBuf,
    #[command(flatten)]
    model: super::ModelArgs,
    #[command(flatten)]
    read: ReadArgs,
    /// Keep by one indicator: perplexity and loss keep the lowest, the others the highest.
    #[arg(long, conflicts_with = "rule")]
    by: Option<String>,
    /// Keep the highest scores of a linear rule, e.g. "0.5*mtld - 1*loss".
    #[arg(long)]
    rule: Option<String>,
    /// Fraction to keep.
    #[arg(long, default_value_t = 0.5)]
    keep: f64,
    /// Output JSONL of the kept examples (messages layout).
    #[arg(long)]
    out: PathBuf,
    /// Also write every example's indicators here (JSONL).
    #[arg(long)]
    indicators: Option<PathBuf>,
    /// Examples per forward pass when computing loss.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long)]
    template: Option<String>,
    /// A reward model directory, for the `reward` indicator (`--by reward`).
    #[arg(long)]
    reward_model: Option<PathBuf>,
    /// A judge model (registry id, file or directory), for the `judge` indicator
    /// (`--by judge`): MT-bench's 1-10 single-answer rating of each response. Its
    /// judgments are kept in OUT.judge/, so a rerun resumes.
    #[arg(long)]
    judge_model: Option<String>,
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
    /// Output file, JSONL or .parquet (written atomically).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Clone)]
pub struct ReadArgs {
    /// Layout (default: detected): alpaca, sharegpt, messages, gsm8k, superni, superni-task,
    /// self-instruct, sharegpt-preference, messages-preference, trl-preference, hh-rlhf, kto.
    #[arg(long)]
    pub format: Option<String>,
    /// Rename a field before reading: FROM=TO (repeatable), e.g. --map prompt=instruction.
    #[arg(long = "map")]
    pub map: Vec<String>,
    /// SuperNI: positive examples in each prompt.
    #[arg(long, default_value_t = 2)]
    pub k_shot: usize,
    /// Go on without records that have problems (how many were skipped is reported).
    #[arg(long)]
    pub skip_invalid: bool,
}

impl ReadArgs {
    pub fn options(&self) -> Result<ReadOptions> {
        let mut columns = vec![];
        for m in &self.map {
            let Some((a, b)) = m.split_once('=') else { bail!("--map {m:?}: expected FROM=TO") };
            columns.push((a.to_string(), b.to_string()));
        }
        let mut o = ReadOptions { format: self.format.clone(), columns, skip_invalid: self.skip_invalid, ..Default::default() };
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
        DataCmd::Select(a) => select_cmd(a),
        DataCmd::Stats(a) => stats_cmd(a),
    }
}

fn check(a: CheckArgs) -> Result<()> {
    let opts = a.read.options()?;
    let mut bad = 0;
    for f in &a.files {
        // Streamed: a file larger than memory is checked record by record.
        let s = instill::data::read::stream(f, &opts)?;
        let format = s.format;
        let (mut sft, mut pref, mut lab, mut turns, mut problems) = (0, 0, 0, 0, vec![]);
        let mut n_problems = 0;
        for item in s {
            match item {
                Ok(r) => match &r.example {
                    Example::Sft(c) => {
                        sft += 1;
                        turns += c.messages.len();
                    }
                    Example::Preference(_) => pref += 1,
                    Example::Labelled(..) | Example::Scored(..) => lab += 1,
                },
                Err(p) => {
                    n_problems += 1;
                    if problems.len() < a.max_problems {
                        problems.push(p);
                    }
                }
            }
        }
        println!("{}: {format} layout, {} records ({sft} conversations with {turns} turns, {pref} preference pairs, {lab} labelled), {n_problems} problems", f.display(), sft + pref + lab,);
        for p in &problems {
            println!("  {p}");
        }
        if n_problems > problems.len() {
            println!("  ... and {} more", n_problems - problems.len());
        }
        bad += n_problems;
    }
    if bad > 0 {
        bail!("{bad} problems found");
    }
    Ok(())
}

/// A file's records as a stream: a problem ends it with an error, or is passed over with
/// --skip-invalid.
fn stream_clean(file: &std::path::Path, opts: &ReadOptions) -> Result<impl Iterator<Item = instill::Result<instill::data::Record>>> {
    let skip = opts.skip_invalid;
    Ok(instill::data::read::stream(file, opts)?.filter_map(move |item| match item {
        Ok(r) => Some(Ok(r)),
        Err(_) if skip => None,
        Err(p) => Some(Err(instill::Error::Input(format!("{p} (`instill data check` lists every problem; --skip-invalid goes on without them)")))),
    }))
}

/// Load a file; refuse it if it has problems unless --skip-invalid.
fn load_clean(file: &std::path::Path, read: &ReadArgs) -> Result<instill::data::read::Loaded> {
    let l = load(file, &read.options()?)?;
    if let Some(p) = l.problems.first() {
        if !read.skip_invalid {
            bail!("{p} (and {} more problems; run `instill data check` to see them all, or pass --skip-invalid)", l.problems.len() - 1);
        }
        let records: std::collections::HashSet<String> = l.problems.iter().map(|p| p.origin.to_string()).collect();
        eprintln!("{}: skipped {} invalid records (first problem: {p})", file.display(), records.len());
    }
    Ok(l)
}

fn render_cmd(a: RenderArgs) -> Result<()> {
    let (_, tok) = a.model.load_tokenizer()?;
    let tmpl = tok.template(a.template.as_deref())?;
    let color = std::io::stdout().is_terminal();
    let (mut total, mut trained, mut over, mut kept, mut n) = (0, 0, 0, 0, 0);
    for (i, rec) in stream_clean(&a.file, &a.read.options()?)?.enumerate() {
        let rec = rec?;
        // Preference pairs render as two conversations: prompt + chosen, prompt + rejected.
        let sides: Vec<(&str, instill::data::Conversation)> = match &rec.example {
            Example::Sft(c) | Example::Labelled(c, _) | Example::Scored(c, _) => vec![("", c.clone())],
            Example::Preference(p) => ["chosen", "rejected"]
                .into_iter()
                .zip([&p.chosen, &p.rejected])
                .map(|(name, side)| (name, instill::data::Conversation { messages: p.prompt.iter().chain(side.iter()).cloned().collect(), tools: None }))
                .collect(),
        };
        for (side, c) in sides {
            let r = render(&tok, &tmpl, &c, a.loss)?;
            n += 1;
            total += r.ids.len();
            trained += r.trained_tokens();
            over += usize::from(r.ids.len() > a.max_len);
            kept += usize::from(fit(r.clone(), a.max_len, a.truncation).is_some());
            if i < a.show {
                println!("--- {} {side} ({} tokens, {} trained)", rec.origin, r.ids.len(), r.trained_tokens());
                println!("{}", highlight(&tok, &r.ids, &r.mask, color)?);
            }
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
    // Streamed: JSONL in, JSONL out never holds the whole file.
    let opts = a.read.options()?;
    let mut skipped = 0;
    let records = instill::data::read::stream(&a.file, &opts)?.filter_map(|item| match item {
        Ok(r) => Some(Ok(r)),
        Err(_) if opts.skip_invalid => {
            skipped += 1;
            None
        }
        Err(p) => Some(Err(instill::Error::Input(format!("{p} (`instill data check` lists every problem; --skip-invalid goes on without them)")))),
    });
    let n = instill::data::write::write_stream(&a.out, records, a.to)?;
    if skipped > 0 {
        eprintln!("{}: skipped {skipped} problems", a.file.display());
    }
    println!("{}: {n} records as {:?}", a.out.display(), a.to);
    Ok(())
}

fn mix_cmd(a: MixArgs) -> Result<()> {
    use instill::data::mix::{plan, Mixture};
    let m = Mixture::from_file(&a.mixture)?;
    let base = a.mixture.parent().unwrap_or(std::path::Path::new("."));
    let out = plan(&m, base)?;
    if let Some(p) = out.problems.first() {
        bail!("{p} (and {} more problems; run `instill data check`)", out.problems.len() - 1);
    }
    let n = out.write(&a.out)?;
    for (src, avail, drawn) in &out.counts {
        println!("{drawn:>7} of {avail:>7}  {src}");
    }
    println!("{}: {n} examples", a.out.display());
    Ok(())
}

fn dedup_cmd(a: DedupArgs) -> Result<()> {
    use instill::data::dedup::{dedup_texts, record_text};
    if let Some(t) = a.near {
        if !(t > 0.0 && t <= 1.0) {
            bail!("--near {t}: expected a similarity in (0, 1]");
        }
    }
    // Two streamed passes: find what to keep, then write it; records are never all in memory.
    let opts = a.read.options()?;
    let records = |opts: &ReadOptions| stream_clean(&a.file, opts);
    let mut origins = vec![];
    let mut failed = None;
    let texts = records(&opts)?.map_while(|r| match r {
        Ok(r) => {
            origins.push(r.origin.to_string());
            Some(record_text(&r.example))
        }
        Err(e) => {
            failed = Some(e);
            None
        }
    });
    let (keep, rep) = dedup_texts(texts, a.near);
    if let Some(e) = failed {
        return Err(e.into());
    }
    let total = origins.len();
    let keep: std::collections::HashSet<usize> = keep.into_iter().collect();
    let kept = records(&opts)?.enumerate().filter(|(i, _)| keep.contains(i)).map(|(_, r)| r);
    let n = instill::data::write::write_stream(&a.out, kept, instill::data::write::Layout::Messages)?;
    println!("{}: kept {n} of {total}; removed {} exact and {} near duplicates", a.out.display(), rep.exact, rep.near);
    for (i, j) in rep.removed.iter().take(10) {
        println!("  {} duplicates {}", origins[*i], origins[*j]);
    }
    Ok(())
}

fn contamination_cmd(a: ContaminationArgs) -> Result<()> {
    let train = load_clean(&a.file, &a.read)?;
    let eval = load(&a.eval, &ReadOptions::default())?;
    let c = instill::data::dedup::contamination(&train.records, &eval.records, a.n);
    println!("{} of {} training records share {}-grams with {}; {} of {} evaluation records are touched", c.contaminated.len(), c.train_records, c.n, a.eval.display(), c.eval_touched, c.eval_records);
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

fn select_cmd(a: SelectArgs) -> Result<()> {
    use instill::data::select::{top_fraction, Rule, NAMES};
    use std::io::Write;
    if !(a.keep > 0.0 && a.keep <= 1.0) {
        bail!("--keep {}: expected a fraction in (0, 1]", a.keep);
    }
    let rule = match (&a.by, &a.rule) {
        (Some(name), None) => {
            if !NAMES.contains(&name.as_str()) {
                bail!("--by {name:?}: one of {}", NAMES.join(", "));
            }
            let sign = if name == "perplexity" || name == "loss" { -1.0 } else { 1.0 };
            Rule(vec![(sign, name.clone())])
        }
        (None, Some(r)) => Rule::parse(r)?,
        _ => bail!("give --by INDICATOR or --rule EXPRESSION"),
    };
    let needs_model = rule.0.iter().any(|(_, n)| n == "loss" || n == "perplexity");
    let rm = match (rule.0.iter().any(|(_, n)| n == "reward"), &a.reward_model) {
        (true, Some(p)) => Some(instill::model::reward::RewardModel::load(p)?),
        (true, None) => bail!("the reward indicator needs --reward-model DIR"),
        (false, _) => None,
    };
    let judge = match (rule.0.iter().any(|(_, n)| n == "judge"), &a.judge_model) {
        (true, Some(m)) => Some(super::ModelArgs::named(m, false, None).load()?),
        (true, None) => bail!("the judge indicator needs --judge-model MODEL"),
        (false, _) => None,
    };
    let (model, tok) = if needs_model {
        let (m, t) = a.model.load()?;
        (Some(m), t)
    } else {
        (None, a.model.load_tokenizer()?.1)
    };
    let tmpl = tok.template(a.template.as_deref())?;
    let opts = a.read.options()?;
    // Pass 1 scores the file in chunks (indicators streamed out, only scores kept);
    // pass 2 streams it again and writes the kept records.
    let mut ind_out = match &a.indicators {
        Some(p) => Some((std::io::BufWriter::new(std::fs::File::create(p.with_extension("jsonl.partial"))?), p)),
        None => None,
    };
    let bar = instill::progress::Progress::new("select", "example", 0, "{spinner} scoring {pos} examples ({per_sec})", true);
    let mut scores: Vec<Option<f64>> = vec![];
    let mut records = stream_clean(&a.file, &opts)?.peekable();
    while records.peek().is_some() {
        let chunk: Vec<instill::data::Record> = records.by_ref().take(a.batch_size.max(1) * 32).collect::<instill::Result<_>>()?;
        let mut scored = score_chunk(&chunk, &tok, &tmpl, model.as_ref(), a.batch_size)?;
        if let Some(rm) = &rm {
            let convs: Vec<instill::data::Conversation> = chunk.iter().filter_map(|r| if let Example::Sft(c) = &r.example { Some(c.clone()) } else { None }).collect();
            for (ind, r) in scored.iter_mut().zip(rm.score(&convs, a.batch_size)?) {
                ind.reward = Some(r[0] as f64);
            }
        }
        if let Some((jm, jt)) = &judge {
            for (ind, r) in scored.iter_mut().zip(judge_chunk(jm, jt, &chunk, scores.len(), &a)?) {
                ind.judge = r;
            }
        }
        for (r, ind) in chunk.iter().zip(&scored) {
            let s = rule.score(ind);
            if let Some((f, _)) = &mut ind_out {
                let mut v = serde_json::to_value(ind)?;
                v["origin"] = r.origin.to_string().into();
                v["score"] = serde_json::json!(s);
                serde_json::to_writer(&mut *f, &v)?;
                f.write_all(b"\n")?;
            }
            scores.push(s);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if let Some((mut f, p)) = ind_out {
        f.flush()?;
        std::fs::rename(p.with_extension("jsonl.partial"), p)?;
    }
    let keep: std::collections::HashSet<usize> = top_fraction(&scores, a.keep).into_iter().collect();
    let kept = stream_clean(&a.file, &opts)?.enumerate().filter(|(i, _)| keep.contains(i)).map(|(_, r)| r);
    let n = instill::data::write::write_stream(&a.out, kept, instill::data::write::Layout::Messages)?;
    println!("{}: kept {n} of {} by {:?}", a.out.display(), scores.len(), rule.0);
    let unscored = scores.iter().filter(|s| s.is_none()).count();
    if unscored > 0 {
        println!("  {unscored} examples have no score (an indicator missing, e.g. a judge verdict that did not parse) and are not kept");
    }
    Ok(())
}

/// The judge's ratings of a chunk's responses, resumable in OUT.judge/.
fn judge_chunk(model: &instill::CausalLm, tok: &instill::Tokenizer, chunk: &[instill::data::Record], first: usize, a: &SelectArgs) -> Result<Vec<Option<f64>>> {
    use instill::eval::judge;
    let convs: Vec<(String, &instill::data::Conversation)> = chunk
        .iter()
        .enumerate()
        .filter_map(|(k, r)| match &r.example {
            Example::Sft(c) => Some((format!("example-{}", first + k), c)),
            _ => None,
        })
        .collect();
    let mut dir = a.out.clone().into_os_string();
    dir.push(".judge");
    let settings = serde_json::json!({"judge": a.judge_model, "file": a.file, "mode": "single", "purpose": "data select"});
    let opts = judge::JudgeOptions { settings, template: None, batch_size: a.batch_size, max_new_tokens: 384, progress: false };
    let by_id = judge::rate_conversations(model, tok, &convs, std::path::Path::new(&dir), &opts)?;
    Ok((0..chunk.len()).map(|k| by_id.get(&format!("example-{}", first + k)).copied().flatten()).collect())
}

/// Indicators of a chunk of SFT records: rendered on all cores, losses in batches.
fn score_chunk(
    chunk: &[instill::data::Record],
    tok: &instill::Tokenizer,
    tmpl: &instill::tokenizer::ChatTemplate,
    model: Option<&instill::CausalLm>,
    batch: usize,
) -> Result<Vec<instill::data::select::Indicators>> {
    use instill::data::select::{response_losses, text_indicators};
    use rayon::prelude::*;
    let rendered: Vec<(instill::data::render::Rendered, instill::data::select::Indicators)> = chunk
        .par_iter()
        .map(|r| {
            let Example::Sft(c) = &r.example else { bail!("{}: select scores SFT conversations", r.origin) };
            let rd = render(tok, tmpl, c, LossOn::Assistant)?;
            let response: String = c.messages.iter().filter(|m| m.role == "assistant").map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n");
            let ind = text_indicators(&response, &rd);
            Ok((rd, ind))
        })
        .collect::<Result<_>>()?;
    let (rendered, mut inds): (Vec<_>, Vec<_>) = rendered.into_iter().unzip();
    if let Some(m) = model {
        let losses = response_losses(m, &rendered, tok.eos_id.unwrap_or(0), batch)?;
        for (ind, loss) in inds.iter_mut().zip(losses) {
            ind.loss = Some(loss);
            ind.perplexity = Some(loss.exp());
        }
    }
    Ok(inds)
}

fn stats_cmd(a: StatsArgs) -> Result<()> {
    use instill::data::cache::{default_dir, tokenized};
    use instill::data::stats::length_stats;
    let (_, tok) = a.model.load_tokenizer()?;
    let tmpl = tok.template(a.template.as_deref())?;
    std::fs::create_dir_all(&a.out)?;
    let mut all = serde_json::Map::new();
    for f in &a.files {
        let (examples, _) = tokenized(f, &tok, &tmpl, LossOn::Assistant, &a.read.options()?, &default_dir())?;
        let lens: Vec<(usize, usize)> = examples.iter().map(|e| (e.ids.len(), e.mask.iter().filter(|&&m| m).count())).collect();
        let s = length_stats(&lens, a.max_len);
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("data").trim_end_matches(".jsonl").to_string();
        let png = a.out.join(format!("{stem}_tokens.png"));
        let lens: Vec<f64> = lens.iter().map(|l| l.0 as f64).collect();
        instill::plot::histogram(&png, &format!("{stem}: tokens per example ({} examples)", s.examples), "tokens (template included)", &lens, 40)?;
        let pairs = examples.iter().filter(|e| e.side == instill::data::cache::Side::Chosen).count();
        let what = if pairs > 0 { format!("sequences ({pairs} preference pairs, chosen and rejected each counted)") } else { "examples".into() };
        println!(
            "{}: {} {what}, {} tokens ({} trained), mean {:.0}, p50 {} p90 {} p99 {} max {}; {:.1}% longer than {} -> {}",
            f.display(),
            s.examples,
            s.tokens,
            s.trained_tokens,
            s.mean,
            s.p50,
            s.p90,
            s.p99,
            s.max,
            s.truncated * 100.0,
            s.max_len,
            png.display()
        );
        all.insert(f.display().to_string(), serde_json::to_value(&s)?);
    }
    std::fs::write(a.out.join("stats.json"), serde_json::to_vec_pretty(&all)?)?;
    Ok(())
}
