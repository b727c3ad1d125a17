//! Robustness to the wording of instructions ("Evaluating the Zero-shot Robustness of
//! Instruction-tuned Language Models"): the SuperNI suite is run once with the original
//! task definitions and once per alternative wording, and the spread of each task's
//! score is reported. Alternatives come from a file (`{"task": ["wording", ...]}`) or
//! are written by a local model ([`paraphrase`]).
use super::report::Report;
use super::runner::{self, RunOptions};
use super::suites::superni::SuperNi;
use crate::decode::{generate, GenerateOptions, SamplingParams};
use crate::model::CausalLm;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

pub type Alternatives = BTreeMap<String, Vec<String>>;

pub fn read_alternatives(path: &Path) -> Result<Alternatives> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
    let a: Alternatives = serde_json::from_str(&text).map_err(|e| Error::file(path, format!("expected {{\"task\": [\"definition\", ...]}}: {e}")))?;
    if a.values().all(|v| v.is_empty()) {
        return Err(Error::file(path, "lists no alternative definitions"));
    }
    Ok(a)
}

/// `n` re-phrasings of each task definition by `model` (sampled, seeded), through its chat
/// template. Empty or unchanged outputs are dropped.
pub fn paraphrase(model: &CausalLm, tok: &Tokenizer, definitions: &BTreeMap<String, String>, n: usize, seed: u64, template: Option<&str>) -> Result<Alternatives> {
    let mut out = Alternatives::new();
    for (task, def) in definitions {
        let ask = format!("Rewrite the following task instruction in different words. Keep its full meaning and every requirement. Reply with the rewritten instruction only.\n\nInstruction: {def}");
        let ids = runner::encode(tok, &ask, Some(template.unwrap_or("model")))?;
        let prompts = vec![ids; n];
        let opts = GenerateOptions { max_new_tokens: 256, sampling: SamplingParams { temperature: 0.8, top_p: 0.95, seed, ..Default::default() }, ..Default::default() };
        let gens = generate(model, tok, &prompts, &opts, &mut |_, _| {})?;
        let alts: Vec<String> = gens.into_iter().map(|g| g.text.trim().to_string()).filter(|t| !t.is_empty() && t != def).collect();
        out.insert(task.clone(), alts);
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    /// Primary score with the original definition, then with each alternative.
    pub scores: Vec<f64>,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

fn spread(scores: Vec<f64>) -> Spread {
    let n = scores.len().max(1) as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
    let (min, max) = scores.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &s| (a.min(s), b.max(s)));
    Spread { scores, mean, std, min, max }
}

#[derive(Debug, Clone, Serialize)]
pub struct Robustness {
    /// Over the tasks that have alternatives: the overall primary score per wording.
    pub overall: Spread,
    pub tasks: BTreeMap<String, Spread>,
}

/// Run `suite` with the original definitions (`out/original`) and with alternative `v` of
/// every task that has one (`out/variant-v`), then write `robustness.md` and `.json`.
pub fn run(model: &CausalLm, tok: &Tokenizer, suite: &SuperNi, alts: &Alternatives, out: &Path, opts: &RunOptions) -> Result<Robustness> {
    let tasks: std::collections::HashSet<String> = alts.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| k.clone()).collect();
    let variants = alts.values().map(Vec::len).max().unwrap_or(0);
    let mut reports = vec![];
    for v in 0..=variants {
        let mut s = suite.clone();
        s.only_tasks = Some(tasks.clone());
        if v > 0 {
            s.definitions = alts.iter().filter_map(|(k, a)| a.get(v - 1).map(|d| (k.clone(), d.clone()))).collect::<HashMap<_, _>>();
            s.only_tasks = Some(s.definitions.keys().cloned().collect());
        }
        let dir = out.join(if v == 0 { "original".to_string() } else { format!("variant-{v}") });
        let mut o = opts.clone();
        o.settings["robustness_variant"] = serde_json::json!(v);
        eprintln!("wording {v} of {variants}: {}", dir.display());
        reports.push(runner::run(model, tok, &s, &dir, &o)?);
    }
    let r = summarize(&reports);
    super::write_json(&out.join("robustness.json"), &r)?;
    super::write_text(&out.join("robustness.md"), &r.markdown())?;
    Ok(r)
}

fn summarize(reports: &[Report]) -> Robustness {
    let mut tasks: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in reports {
        for (t, g) in &r.tasks {
            tasks.entry(t.clone()).or_default().push(g.primary_score);
        }
    }
    Robustness { overall: spread(reports.iter().map(|r| r.overall.primary_score).collect()), tasks: tasks.into_iter().map(|(k, v)| (k, spread(v))).collect() }
}

impl Robustness {
    pub fn markdown(&self) -> String {
        let mut s = String::from("# Robustness to instruction wording\n\nPrimary metric with the original definition, then each alternative wording.\n\n| | original | alternatives | mean | std | min | max |\n|---|---|---|---|---|---|---|\n");
        let row = |s: &mut String, k: &str, x: &Spread| {
            let alts: Vec<String> = x.scores.iter().skip(1).map(|v| format!("{v:.2}")).collect();
            let _ = writeln!(s, "| {k} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.2} |", x.scores.first().copied().unwrap_or(0.0), alts.join(", "), x.mean, x.std, x.min, x.max);
        };
        row(&mut s, "overall", &self.overall);
        for (k, x) in &self.tasks {
            row(&mut s, k, x);
        }
        s
    }
}
