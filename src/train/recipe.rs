//! Training recipes: one YAML file with the model, data, method and hyper-parameters.
//! Unknown keys are errors (a typo must not silently train something else), `--set
//! a.b=value` overrides any key, and the resolved recipe is saved beside the run.
use super::optim::AdamWConfig;
use super::schedule::Schedule;
use crate::data::render::{LossOn, Truncation};
use crate::peft::full::FullConfig;
use crate::peft::lora::LoraConfig;
use crate::peft::prompt::PromptConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Run name: the run lives in `runs/<name>` unless `output_dir` says otherwise.
    pub name: String,
    #[serde(default = "default_model")]
    pub model: String,
    /// Dequantize the GGUF base to f32. Off (the default) keeps the base quantized:
    /// LoRA on it is QLoRA.
    #[serde(default)]
    pub dequantize: bool,
    /// How the dequantized frozen weights are held: `f32`, or `bf16` for half their
    /// memory. Trainable tensors, optimizer state and activations are always f32.
    #[serde(default)]
    pub precision: Precision,
    /// Training data files (any layout `instill data` reads), or a mixture YAML.
    pub data: Vec<DataSource>,
    /// Held-out data for validation loss; or `val_fraction` of the training data.
    #[serde(default)]
    pub val_data: Vec<DataSource>,
    #[serde(default)]
    pub val_fraction: f64,
    /// Chat template name or file (default: the model's own).
    pub template: Option<String>,
    #[serde(default)]
    pub loss_on: LossOn,
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    #[serde(default)]
    pub truncation: Truncation,
    /// Pack several examples per row (positions restart, attention stays within each).
    #[serde(default = "yes")]
    pub packing: bool,
    pub method: Method,
    #[serde(default)]
    pub lora: LoraConfig,
    /// For `method: full`: which weights train, and Half Fine-Tuning.
    #[serde(default)]
    pub full: FullConfig,
    /// For `method: prompt`: soft-prompt length and initialisation.
    #[serde(default)]
    pub prompt: PromptConfig,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default)]
    pub warmup_steps: usize,
    /// Optimiser steps; default: `epochs` passes over the data.
    pub max_steps: Option<usize>,
    #[serde(default = "one")]
    pub epochs: usize,
    /// Rows per micro-batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "one")]
    pub grad_accum: usize,
    /// Recompute each block in the backward pass: far less memory, one more forward.
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// Clip the global gradient norm (0: off).
    #[serde(default = "one_f")]
    pub max_grad_norm: f64,
    #[serde(default)]
    pub adamw: AdamWConfig,
    #[serde(default)]
    pub seed: u64,
    /// Checkpoint every this many steps (0: only at the end and on Ctrl-C).
    #[serde(default = "default_save_every")]
    pub save_every: usize,
    #[serde(default = "two")]
    pub keep_checkpoints: usize,
    /// Validation loss every this many steps (0: only at the end).
    #[serde(default)]
    pub eval_every: usize,
    pub output_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    pub path: PathBuf,
    pub format: Option<String>,
    #[serde(default)]
    pub skip_invalid: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Precision::F32 => candle_core::DType::F32,
            Precision::Bf16 => candle_core::DType::BF16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// LoRA adapters; on a quantized base this is QLoRA.
    Lora,
    /// The model's own weights: all, or those `full.train` / `full.freeze` pick; with
    /// `full.hft_stage_steps`, Half Fine-Tuning.
    Full,
    /// Prompt tuning: trainable soft-prompt vectors before every sequence.
    Prompt,
}

fn default_model() -> String {
    crate::hub::DEFAULT_MODEL.into()
}
fn default_max_len() -> usize {
    512
}
fn default_lr() -> f64 {
    2e-4
}
fn default_batch() -> usize {
    4
}
fn default_save_every() -> usize {
    100
}
fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn one_f() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

impl Recipe {
    /// Read a recipe, apply `--set key=value` overrides (dotted keys reach into maps;
    /// values are YAML), resolve data paths against the recipe's directory and check it.
    pub fn load(path: &Path, sets: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| Error::file(path, e.to_string()))?;
        for s in sets {
            apply_set(&mut doc, s).map_err(|e| Error::file(path, e))?;
        }
        let mut r: Recipe = serde_yaml::from_value(doc).map_err(|e| Error::file(path, format!("{e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for d in r.data.iter_mut().chain(r.val_data.iter_mut()) {
            if d.path.is_relative() {
                d.path = base.join(&d.path);
            }
            // Absolute, so the recipe saved in the run directory reads the same files.
            d.path = std::fs::canonicalize(&d.path).map_err(|e| Error::file(path, format!("data: {}: {e}", d.path.display())))?;
        }
        r.check().map_err(|e| Error::file(path, e))?;
        Ok(r)
    }

    pub fn output_dir(&self) -> PathBuf {
        self.output_dir.clone().unwrap_or_else(|| PathBuf::from("runs").join(&self.name))
    }

    fn check(&self) -> std::result::Result<(), String> {
        let positive = [("batch_size", self.batch_size), ("grad_accum", self.grad_accum), ("max_len", self.max_len), ("epochs", self.epochs)];
        if let Some((k, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{k}: must be at least 1"));
        }
        if self.data.is_empty() {
            return Err("data: list at least one file".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("lr: {} is not a positive learning rate", self.lr));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(format!("val_fraction: {} is not in [0, 1)", self.val_fraction));
        }
        if self.method == Method::Prompt && self.packing {
            return Err("packing: prompt tuning puts the soft prompt before each example, so it needs `packing: false`".into());
        }
        if self.precision == Precision::Bf16 && !self.dequantize {
            return Err("precision: bf16 holds the dequantized base in bf16, so it needs `dequantize: true` (a quantized base is already smaller)".into());
        }
        if self.max_steps == Some(0) {
            return Err("max_steps: must be at least 1".into());
        }
        if self.name.is_empty() || self.name.contains('/') {
            return Err(format!("name: {:?} must be a plain, non-empty name", self.name));
        }
        for d in self.data.iter().chain(&self.val_data) {
            if !d.path.exists() {
                return Err(format!("data: {} does not exist", d.path.display()));
            }
        }
        Ok(())
    }
}

/// `a.b=value`: set key `b` of map `a` (maps are created as needed).
fn apply_set(doc: &mut serde_yaml::Value, set: &str) -> std::result::Result<(), String> {
    let (key, value) = set.split_once('=').ok_or_else(|| format!("--set {set:?}: expected KEY=VALUE"))?;
    let value: serde_yaml::Value = serde_yaml::from_str(value).map_err(|e| format!("--set {key}: {e}"))?;
    let mut at = doc;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        // A number indexes into an existing list (`data.0.path=...`).
        if at.is_sequence() {
            let list = at.as_sequence_mut().expect("a sequence");
            let n = list.len();
            let slot = p.parse::<usize>().ok().and_then(|j| list.get_mut(j));
            at = slot.ok_or_else(|| format!("--set {key}: {} is a list of {n}; {p:?} is not an index in it", parts[..i].join(".")))?;
            if last {
                *at = value;
                return Ok(());
            }
            continue;
        }
        let map = at.as_mapping_mut().ok_or_else(|| format!("--set {key}: {} is not a map", parts[..i].join(".")))?;
        let k = serde_yaml::Value::String(p.to_string());
        if last {
            map.insert(k, value);
            return Ok(());
        }
        if !map.contains_key(&k) {
            map.insert(k.clone(), serde_yaml::Value::Mapping(Default::default()));
        }
        at = map.get_mut(&k).expect("inserted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("instill-recipe-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("d.jsonl"), "{}\n").unwrap();
        let p = dir.join("r.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn sets_override_and_unknown_keys_fail() {
        let p = write("name: t\nmethod: lora\ndata: [{path: d.jsonl}]\nlora: {r: 4}\n");
        let r = Recipe::load(&p, &["lr=1e-4".into(), "lora.r=16".into(), "max_steps=7".into()]).unwrap();
        assert_eq!((r.lr, r.lora.r, r.max_steps), (1e-4, 16, Some(7)));
        assert!(r.data[0].path.ends_with("d.jsonl") && r.data[0].path.is_absolute());
        let e = Recipe::load(&p, &["lora.rank=16".into()]).unwrap_err().to_string();
        assert!(e.contains("rank"), "{e}");
        let e = Recipe::load(&p, &["learning_rate=1".into()]).unwrap_err().to_string();
        assert!(e.contains("learning_rate"), "{e}");
        let e = Recipe::load(&p, &["batch_size=0".into()]).unwrap_err().to_string();
        assert!(e.contains("batch_size"), "{e}");
        std::fs::write(p.with_file_name("e.jsonl"), "{}\n").unwrap();
        let r = Recipe::load(&p, &["data.0.path=e.jsonl".into()]).unwrap();
        assert!(r.data[0].path.ends_with("e.jsonl"));
        let e = Recipe::load(&p, &["data.3.path=e.jsonl".into()]).unwrap_err().to_string();
        assert!(e.contains("list of 1"), "{e}");
    }
}
