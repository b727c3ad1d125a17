//! Instruction-data synthesis. Each method is one file behind [`Method`], listed in
//! [`METHODS`]; every method generates through the resumable batched runner that
//! evaluation uses ([`crate::decode::jobs`]), keeping each stage's generations in a work
//! directory beside the output, so a killed run resumes where it stopped. The output is
//! JSONL in Alpaca's layout (`instruction`, `input`, `output`) with each record's
//! provenance, readable by `instill data check` and every recipe.
pub mod curate;
pub mod ensemble;
pub mod evol;
pub mod halves;
pub mod magpie;
pub mod refusal;
pub mod rouge_filter;
pub mod self_instruct;

use crate::decode::jobs::Record;
use crate::model::CausalLm;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Where a record came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    pub method: String,
    pub model: String,
    pub seed: u64,
    /// The prompt (or prompt chain) it was generated from, unique within a run.
    pub prompt_id: String,
    /// With `--ensemble`: the model whose output the ensemble kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_model: Option<String>,
}

/// One synthesized training example.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Example {
    pub instruction: String,
    #[serde(default)]
    pub input: String,
    pub output: String,
    pub provenance: Provenance,
}

/// What a method needs: the generating model, how many examples, and its inputs.
pub struct Context<'a> {
    pub model: &'a CausalLm,
    pub tok: &'a Tokenizer,
    /// The model as the user named it (for provenance).
    pub model_name: String,
    /// How many examples to aim for (methods stop there or when their input runs out).
    pub n: usize,
    pub seed: u64,
    pub batch_size: usize,
    /// Chat template name or file (None: the model's own).
    pub template: Option<String>,
    /// Tokens for each response (instructions have the method's own limit).
    pub max_new_tokens: usize,
    /// The method's input file: seed tasks (self-instruct), text (halves), instruction
    /// data (evol).
    pub input: Option<PathBuf>,
    /// Evolution rounds (evol; 1 for every other method).
    pub rounds: usize,
    /// Curation applied to every method's examples.
    pub curation: curate::Curation,
    /// Models that also answer every example, the output kept by their agreement
    /// (Ensemble-Instruct); empty: the method's own outputs.
    pub ensemble: Vec<ensemble::Member<'a>>,
    pub progress: bool,
}

impl Context<'_> {
    pub fn provenance(&self, method: &str, prompt_id: String) -> Provenance {
        Provenance { method: method.to_string(), model: self.model_name.clone(), seed: self.seed, prompt_id, output_model: None }
    }

    /// The input file, which this method requires.
    pub fn input(&self, method: &str, what: &str) -> Result<&Path> {
        self.input.as_deref().ok_or_else(|| Error::Input(format!("synth {method} needs --input: {what}")))
    }

    /// Runs one stage's jobs into `file` (resumable) and returns the generations by id.
    pub fn generate(&self, stage: &str, file: &Path, jobs: &[crate::decode::jobs::Job], gen: crate::decode::GenerateOptions) -> Result<HashMap<String, Generated>> {
        let got = self.runner(gen, stage).run(jobs, file, |j, g| Ok(Some(Generated::from(j, g))))?;
        Ok(got.into_iter().map(|g| (g.id.clone(), g)).collect())
    }

    /// A runner over this context's model for one stage of a method.
    pub fn runner(&self, gen: crate::decode::GenerateOptions, stage: &str) -> crate::decode::jobs::Runner<'_> {
        crate::decode::jobs::Runner { model: self.model, tok: self.tok, gen, batch_size: self.batch_size, label: self.progress.then(|| stage.to_string()) }
    }
}

/// A method's result: the examples kept, and how many candidates each filter dropped.
#[derive(Debug, Default)]
pub struct Outcome {
    pub examples: Vec<Example>,
    pub dropped: BTreeMap<String, usize>,
    /// Up to three dropped candidates per filter, to show in the report.
    pub dropped_examples: BTreeMap<String, Vec<String>>,
    /// Kept examples by kind, where a method sorts them (R-Tuning: certain / uncertain).
    pub counts: BTreeMap<String, usize>,
}

impl Outcome {
    pub fn drop(&mut self, filter: &str, candidate: &str) {
        *self.dropped.entry(filter.to_string()).or_default() += 1;
        let shown = self.dropped_examples.entry(filter.to_string()).or_default();
        if shown.len() < 3 {
            shown.push(candidate.chars().take(200).collect());
        }
    }
}

/// A synthesis method.
pub trait Method: Sync {
    fn name(&self) -> &'static str;
    /// One line for `instill synth --help`.
    fn about(&self) -> &'static str;
    /// Generate into `work` (a directory of this run's resumable stage files).
    fn run(&self, cx: &Context, work: &Path) -> Result<Outcome>;
}

pub static METHODS: &[&dyn Method] = &[&magpie::Magpie, &self_instruct::SelfInstruct, &evol::Evol, &halves::Halves, &refusal::Refusal];

pub fn method(name: &str) -> Result<&'static dyn Method> {
    METHODS.iter().copied().find(|m| m.name() == name).ok_or_else(|| {
        let names: Vec<&str> = METHODS.iter().map(|m| m.name()).collect();
        Error::Input(format!("unknown synthesis method {name:?}: one of {}", names.join(", ")))
    })
}

/// The curation report written beside the output.
#[derive(Debug, Serialize)]
pub struct Report {
    pub method: String,
    pub model: String,
    pub seed: u64,
    pub requested: usize,
    pub kept: usize,
    pub dropped: BTreeMap<String, usize>,
    pub dropped_examples: BTreeMap<String, Vec<String>>,
    pub counts: BTreeMap<String, usize>,
    pub seconds: f64,
}

/// Run `method` and write its examples to `out` (JSONL, atomically) and the curation
/// report to `out` with `.report.json`; stage files go to `out` with `.work/`.
pub fn synthesize(method: &dyn Method, cx: &Context, out: &Path) -> Result<Report> {
    let start = std::time::Instant::now();
    if cx.rounds != 1 && method.name() != "evol" {
        return Err(Error::Input(format!("rounds are for evol; {} runs once", method.name())));
    }
    let work = with_suffix(out, ".work");
    std::fs::create_dir_all(&work).map_err(|e| Error::file(&work, e.to_string()))?;
    check_settings(cx, method, &work)?;
    let mut outcome = method.run(cx, &work)?;
    if !cx.ensemble.is_empty() {
        ensemble::vote(cx, &mut outcome, &work)?;
    }
    curate::curate(&mut outcome, &cx.curation)?;
    let text: String = outcome.examples.iter().map(|e| serde_json::to_string(e).expect("serializable") + "\n").collect();
    crate::peft::write_atomic(out, text.as_bytes())?;
    let report = Report {
        method: method.name().to_string(),
        model: cx.model_name.clone(),
        seed: cx.seed,
        requested: cx.n,
        kept: outcome.examples.len(),
        dropped: outcome.dropped,
        dropped_examples: outcome.dropped_examples,
        counts: outcome.counts,
        seconds: start.elapsed().as_secs_f64(),
    };
    crate::peft::write_atomic(&with_suffix(out, ".report.json"), serde_json::to_string_pretty(&report).expect("serializable").as_bytes())?;
    Ok(report)
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A work directory holds one run's stages: resuming it with other settings would mix
/// two runs, so that is an error.
fn check_settings(cx: &Context, method: &dyn Method, work: &Path) -> Result<()> {
    let mut settings = serde_json::json!({
        "method": method.name(), "model": cx.model_name, "seed": cx.seed, "template": cx.template,
        "max_new_tokens": cx.max_new_tokens, "input": cx.input, "rounds": cx.rounds,
        "curation": cx.curation,
    });
    if !cx.ensemble.is_empty() {
        settings["ensemble"] = cx.ensemble.iter().map(|m| m.name.clone()).collect::<Vec<_>>().into();
    }
    let path = work.join("settings.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let old: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, e.to_string()))?;
        if old != settings {
            return Err(Error::file(&path, format!("holds a run with other settings ({old}); use another --out, or delete {} to start over", work.display())));
        }
        return Ok(());
    }
    crate::peft::write_atomic(&path, serde_json::to_string_pretty(&settings).expect("serializable").as_bytes())
}

/// A stage's generation as kept in its work file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Generated {
    pub id: String,
    pub text: String,
    /// It ended on its own (end of turn or a stop string), not at the token limit.
    pub finished: bool,
    /// Tokens generated.
    #[serde(default)]
    pub tokens: usize,
}

impl Record for Generated {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Generated {
    pub fn from(job: &crate::decode::jobs::Job, g: crate::decode::Generation) -> Self {
        use crate::decode::FinishReason;
        Generated { id: job.id.clone(), tokens: g.tokens.len(), text: g.text, finished: matches!(g.finish, FinishReason::Eos | FinishReason::StopString) }
    }
}

/// Whitespace runs as one space, trimmed (for comparing and deduplicating).
pub fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
