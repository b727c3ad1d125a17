//! Running a suite: prompts are encoded (raw, or as a user turn of a chat template),
//! generated in batches of similar length, scored, and appended to `predictions.jsonl`
//! batch by batch. A rerun into the same directory skips what is already there, so an
//! interrupted evaluation resumes without regenerating finished examples.
use super::report::{self, Report};
use super::suites::Suite;
use super::{Item, Scored};
use crate::decode::{generate, GenerateOptions};
use crate::model::CausalLm;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub batch_size: usize,
    /// Overrides the suite's default.
    pub max_new_tokens: Option<usize>,
    /// Render each prompt as a user message with this chat template (a name or file;
    /// "model" for the model's own); None: the prompt is continued as plain text.
    pub template: Option<String>,
    /// What was evaluated, and how: saved in `settings.json` and checked on resume.
    pub settings: serde_json::Value,
    pub progress: bool,
    /// Decoding-time tuning (proxy-tuning, EFT, contrastive decoding).
    pub steer: Option<std::sync::Arc<crate::decode::steer::Steer>>,
}

/// Token ids of one prompt.
pub fn encode(tok: &Tokenizer, prompt: &str, template: Option<&str>) -> Result<Vec<u32>> {
    match template {
        None => tok.encode(prompt, true),
        Some(t) => tok.encode_chat((t != "model").then_some(t), &[serde_json::json!({"role": "user", "content": prompt})]),
    }
}

/// Evaluate `suite` into `out`; returns the report (also written as scores.json and report.md).
pub fn run(model: &CausalLm, tok: &Tokenizer, suite: &dyn Suite, out: &Path, opts: &RunOptions) -> Result<Report> {
    let start = std::time::Instant::now();
    std::fs::create_dir_all(out).map_err(|e| Error::file(out, e.to_string()))?;
    check_settings(out, &opts.settings)?;
    let items = suite.items()?;
    let mut seen = HashSet::new();
    if let Some(dup) = items.iter().find(|i| !seen.insert(i.id.as_str())) {
        return Err(Error::Input(format!("example id {:?} appears twice in the suite", dup.id)));
    }
    let preds = out.join("predictions.jsonl");
    let mut done = read_scored(&preds)?;
    let have: HashSet<String> = done.iter().map(|s| s.id.clone()).collect();
    let todo: Vec<&Item> = items.iter().filter(|i| !have.contains(&i.id)).collect();
    let gen = GenerateOptions { max_new_tokens: opts.max_new_tokens.unwrap_or(suite.max_new_tokens()), stop_strings: suite.stop_strings(), steer: opts.steer.clone(), ..Default::default() };
    let mut encoded: Vec<(&Item, Vec<u32>)> = todo.iter().map(|i| Ok((*i, encode(tok, &i.prompt, opts.template.as_deref())?))).collect::<Result<_>>()?;
    // Similar lengths share a batch (less left padding); longest first, so the memory
    // peak shows at once.
    encoded.sort_by_key(|(_, ids)| std::cmp::Reverse(ids.len()));
    let bar = progress(items.len(), done.len(), opts.progress);
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&preds).map_err(|e| Error::file(&preds, e.to_string()))?;
    for batch in encoded.chunks(opts.batch_size.max(1)) {
        let prompts: Vec<Vec<u32>> = batch.iter().map(|(_, ids)| ids.clone()).collect();
        let gens = generate(model, tok, &prompts, &gen, &mut |_, _| {})?;
        let mut lines = String::new();
        for ((item, _), g) in batch.iter().zip(gens) {
            let s = suite.score(item, g.text.trim(), g.prompt_tokens, g.tokens.len());
            lines.push_str(&serde_json::to_string(&s).expect("serializable"));
            lines.push('\n');
            done.push(s);
        }
        // One write per batch: a kill leaves at most one partial line, dropped on resume.
        file.write_all(lines.as_bytes()).and_then(|_| file.flush()).map_err(|e| Error::file(&preds, e.to_string()))?;
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    let order: std::collections::HashMap<&str, usize> = items.iter().enumerate().map(|(i, it)| (it.id.as_str(), i)).collect();
    done.retain(|s| order.contains_key(s.id.as_str()));
    done.sort_by_key(|s| order[s.id.as_str()]);
    let report = Report::new(suite.name(), opts.settings.clone(), &done, start.elapsed().as_secs_f64(), todo.len());
    report::write(out, &report)?;
    Ok(report)
}

/// The settings of an earlier, interrupted run in `out` must be these.
fn check_settings(out: &Path, settings: &serde_json::Value) -> Result<()> {
    let path = out.join("settings.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let old: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, e.to_string()))?;
        if &old != settings {
            return Err(Error::file(&path, format!("{} holds an evaluation with other settings ({old}); use another --out, or delete it to start over", out.display())));
        }
        return Ok(());
    }
    super::write_json(&path, settings)
}

/// Scored lines already written. A last line cut short by a kill is dropped (and the
/// file rewritten without it); a bad line elsewhere is an error.
pub fn read_scored(path: &Path) -> Result<Vec<Scored>> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(vec![]) };
    let lines: Vec<&str> = text.lines().collect();
    let mut out = vec![];
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Scored>(line) {
            Ok(s) => out.push(s),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {
                let kept: String = lines[..i].iter().map(|l| format!("{l}\n")).collect();
                super::write_text(path, &kept)?;
            }
            Err(e) => return Err(Error::file(path, format!("line {}: {e}", i + 1))),
        }
    }
    Ok(out)
}

fn progress(total: usize, done: usize, show: bool) -> crate::progress::Progress {
    let bar = crate::progress::Progress::new("eval", "example", total as u64, "{bar:30} {pos}/{len} examples  {per_sec}  ETA {eta}", show);
    bar.start_at(done as u64);
    bar
}
