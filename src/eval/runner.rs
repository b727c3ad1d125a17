//! Running a suite: prompts are encoded (raw, or as a user turn of a chat template),
//! generated in batches of similar length, scored, and appended to `predictions.jsonl`
//! batch by batch. A rerun into the same directory skips what is already there, so an
//! interrupted evaluation resumes without regenerating finished examples.
use super::report::{self, Report};
use super::suites::Suite;
use super::{Item, Scored};
use crate::decode::jobs::{read_records, Job, Record, Runner};
use crate::decode::GenerateOptions;
use crate::model::CausalLm;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use std::collections::HashMap;
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
    let preds = out.join("predictions.jsonl");
    let jobs: Vec<Job> = items.iter().enumerate().map(|(i, it)| Ok(Job { id: it.id.clone(), prompt: encode(tok, &it.prompt, opts.template.as_deref())?, stream: i as u64 })).collect::<Result<_>>()?;
    let by_id: HashMap<&str, &Item> = items.iter().map(|i| (i.id.as_str(), i)).collect();
    let before = read_scored(&preds)?.iter().filter(|s| by_id.contains_key(s.id.as_str())).count();
    let gen = GenerateOptions { max_new_tokens: opts.max_new_tokens.unwrap_or(suite.max_new_tokens()), stop_strings: suite.stop_strings(), steer: opts.steer.clone(), ..Default::default() };
    let runner = Runner { model, tok, gen, batch_size: opts.batch_size, label: opts.progress.then(|| "eval".to_string()) };
    let mut done = runner.run(&jobs, &preds, |job, g| Ok(Some(suite.score(by_id[job.id.as_str()], g.text.trim(), g.prompt_tokens, g.tokens.len()))))?;
    let order: HashMap<&str, usize> = items.iter().enumerate().map(|(i, it)| (it.id.as_str(), i)).collect();
    done.sort_by_key(|s| order[s.id.as_str()]);
    let fresh = done.len().saturating_sub(before);
    let report = Report::new(suite.name(), opts.settings.clone(), &done, start.elapsed().as_secs_f64(), fresh);
    report::write(out, &report)?;
    Ok(report)
}

impl Record for Scored {
    fn id(&self) -> &str {
        &self.id
    }
}

/// The settings of an earlier, interrupted run in `out` must be these.
pub fn check_settings(out: &Path, settings: &serde_json::Value) -> Result<()> {
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

/// Scored lines already written (see [`read_records`]).
pub fn read_scored(path: &Path) -> Result<Vec<Scored>> {
    read_records(path)
}
