//! Training recipes: one YAML file with the model, data, method and hyper-parameters.
//! Unknown keys are errors (a typo must not silently train something else), `--set
//! a.b=value` overrides any key, and the resolved recipe is saved beside the run.
use super::optim::AdamWConfig;
use super::reference::Reference;
use super::schedule::Schedule;
use crate::data::render::{LossOn, Truncation};
use crate::peft::bottleneck::BottleneckConfig;
use crate::peft::full::FullConfig;
use crate::peft::lora::LoraConfig;
use crate::peft::loramoe::LoramoeConfig;
use crate::peft::pat::PatConfig;
use crate::peft::prefix::PrefixConfig;
use crate::peft::prompt::PromptConfig;
use crate::peft::sparse::SparseConfig;
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
    /// What the loss is: `sft` (default), `dpo`, `ipo`, `robust`, `hinge`, `simpo`, `cpo`,
    /// `orpo`, `kto`, `reward`, `reward-regression` (see `train::objective`).
    #[serde(default = "default_objective")]
    pub objective: String,
    /// Preference objectives' temperature (TRL's default 0.1).
    pub beta: Option<f64>,
    /// DPO's `loss_type`: one name or a list (combined with `loss_weights`); CPO's and
    /// KTO's variants.
    pub loss_type: Option<OneOrMany>,
    pub loss_weights: Option<Vec<f64>>,
    #[serde(default)]
    pub label_smoothing: f64,
    /// SimPO's target margin.
    #[serde(alias = "gamma")]
    pub simpo_gamma: Option<f64>,
    /// CPO's weight of the NLL on chosen (1 for `cpo`, 0 for `simpo`).
    pub cpo_alpha: Option<f64>,
    #[serde(default = "one_f")]
    pub desirable_weight: f64,
    #[serde(default = "one_f")]
    pub undesirable_weight: f64,
    /// Reward models: weight of `mean((r_chosen + r_rejected)^2)`, which centres rewards on 0.
    pub center_rewards_coefficient: Option<f64>,
    /// The reference of DPO and KTO: the policy as training starts, or the bare base.
    #[serde(default)]
    pub reference: Reference,
    /// Start from this adapter (PEFT layout, e.g. an SFT run's `adapter/`) instead of a
    /// fresh one; with `reference: policy` it is also the reference model.
    pub init_adapter: Option<PathBuf>,
    #[serde(default)]
    pub lora: LoraConfig,
    /// For `method: full`: which weights train, and Half Fine-Tuning.
    #[serde(default)]
    pub full: FullConfig,
    /// For `method: prompt`: soft-prompt length and initialisation.
    #[serde(default)]
    pub prompt: PromptConfig,
    /// For `method: loramoe`: experts, rank, router, balancing constraint.
    #[serde(default)]
    pub loramoe: LoramoeConfig,
    /// For `method: prefix`: prefix length.
    #[serde(default)]
    pub prefix: PrefixConfig,
    /// For `method: adapter`: bottleneck width, placement, projections, scale.
    #[serde(default)]
    pub adapter: BottleneckConfig,
    /// For `method: sparse`: mask density, when the mask is picked, which weights.
    #[serde(default)]
    pub sparse: SparseConfig,
    /// For `method: pat`: target sparsity of the hidden channels, module rank, mask schedule
    /// (LoRA's settings come from `lora`).
    #[serde(default)]
    pub pat: PatConfig,
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

/// A name or a list of names (`loss_type: ipo` or `loss_type: [sigmoid, sft]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn names(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    pub path: PathBuf,
    pub format: Option<String>,
    #[serde(default)]
    pub skip_invalid: bool,
    /// LoRAMoE's data type for records of this file that carry none (1 or "world":
    /// world knowledge; 0 or "task").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<serde_json::Value>,
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
    /// LoRAMoE: LoRA experts mixed by a router, with the localized balancing constraint.
    Loramoe,
    /// Bottleneck adapters (parallel, sequential or before a projection).
    Adapter,
    /// Prefix tuning: trainable keys and values before every sequence, in every layer.
    Prefix,
    /// MAM (He et al. 2022): prefix tuning plus a parallel bottleneck adapter.
    Mam,
    /// Sparse fine-tuning: full tuning, a mask of the most-changed weights, then
    /// retraining only the mask (or grafting it); the result is a sparse delta.
    Sparse,
    /// PAT (pruning-aware tuning): LoRA plus hidden-channel sparsification modules under
    /// one trainable mask; `export --merge` writes the smaller model.
    Pat,
}

fn default_objective() -> String {
    "sft".into()
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
        apply_aliases(&mut doc).map_err(|e| Error::file(path, e))?;
        let mut r: Recipe = serde_yaml::from_value(doc).map_err(|e| Error::file(path, did_you_mean(&e.to_string())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for d in r.data.iter_mut().chain(r.val_data.iter_mut()).filter(|d| !crate::hub::is_hub_data(&d.path)) {
            if d.path.is_relative() {
                d.path = base.join(&d.path);
            }
            // Absolute, so the recipe saved in the run directory reads the same files.
            d.path = std::fs::canonicalize(&d.path).map_err(|e| Error::file(path, format!("data: {}: {e}", d.path.display())))?;
        }
        if let Some(a) = r.init_adapter.as_mut() {
            if a.is_relative() {
                *a = base.join(&*a);
            }
            *a = std::fs::canonicalize(&*a).map_err(|e| Error::file(path, format!("init_adapter: {}: {e}", a.display())))?;
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
        super::objective::build(self).map_err(|e| e.to_string())?;
        if self.objective.starts_with("reward") && self.method == Method::Prompt {
            return Err("method: a reward model is saved as a sequence-classification model, which prompt tuning cannot be; use lora or full".into());
        }
        if self.init_adapter.is_some() && self.method == Method::Full {
            return Err("init_adapter: full tuning starts from `model`; an adapter starts LoRA or prompt tuning".into());
        }
        if self.method == Method::Loramoe {
            self.loramoe.check().map_err(|e| e.to_string())?;
        }
        if self.method == Method::Loramoe && self.loramoe.balance_weight > 0.0 && self.gradient_checkpointing {
            return Err("gradient_checkpointing: LoRAMoE's balancing constraint needs the router weights of the forward pass itself; turn one off".into());
        }
        if self.method == Method::Loramoe && self.objective.starts_with("reward") {
            return Err("method: a reward model is saved as a sequence-classification model, which LoRAMoE's router cannot be merged into; use lora or full".into());
        }
        if matches!(self.method, Method::Prefix | Method::Mam) {
            if self.packing {
                return Err("packing: prefix tuning puts its keys and values before each example, so it needs `packing: false`".into());
            }
            if self.gradient_checkpointing {
                return Err("gradient_checkpointing: prefix tuning does not run with it (the recomputed blocks would not see the prefix)".into());
            }
            if self.objective.starts_with("reward") {
                return Err("method: a reward model is saved as a sequence-classification model, which prefix tuning cannot be merged into; use lora or full".into());
            }
        }
        if matches!(self.method, Method::Adapter | Method::Mam) {
            self.adapter.check()?;
            if self.objective.starts_with("reward") {
                return Err("method: a reward model is saved as a sequence-classification model, which a bottleneck adapter cannot be merged into; use lora or full".into());
            }
        }
        if self.method == Method::Sparse {
            self.sparse.check()?;
            if self.init_adapter.is_some() {
                return Err("init_adapter: sparse fine-tuning starts from `model`".into());
            }
            if self.objective.starts_with("reward") {
                return Err("method: a reward model is saved as a sequence-classification model, not a sparse delta; use lora or full".into());
            }
            if let (Some(at), Some(total)) = (self.sparse.localize_steps, self.max_steps) {
                if at > total {
                    return Err(format!("sparse.localize_steps: {at} is past the run's max_steps {total}"));
                }
            }
        }
        if self.method == Method::Pat {
            self.pat.check()?;
            if self.objective.starts_with("reward") {
                return Err("method: a reward model is saved as a sequence-classification model; PAT's pruned model is exported with `export --merge`, so use lora or full".into());
            }
            if self.init_adapter.is_some() {
                return Err("init_adapter: PAT starts its mask and modules fresh".into());
            }
        }
        if self.max_steps == Some(0) {
            return Err("max_steps: must be at least 1".into());
        }
        if self.name.is_empty() || self.name.contains('/') {
            return Err(format!("name: {:?} must be a plain, non-empty name", self.name));
        }
        for d in self.data.iter().chain(&self.val_data) {
            if crate::hub::is_hub_data(&d.path) {
                crate::hub::data_files(&d.path).map_err(|e| format!("data: {e}"))?;
            } else if !d.path.exists() {
                return Err(format!("data: {} does not exist", d.path.display()));
            }
        }
        Ok(())
    }
}

/// Keys users of TRL / transformers / PEFT type, and ours: `learning_rate` is `lr`.
pub const ALIASES: &[(&str, &str)] = &[
    ("learning_rate", "lr"),
    ("num_train_epochs", "epochs"),
    ("per_device_train_batch_size", "batch_size"),
    ("train_batch_size", "batch_size"),
    ("gradient_accumulation_steps", "grad_accum"),
    ("lr_scheduler_type", "schedule"),
    ("max_length", "max_len"),
    ("max_seq_length", "max_len"),
    ("weight_decay", "adamw.weight_decay"),
    ("lora_r", "lora.r"),
    ("lora_alpha", "lora.alpha"),
    ("lora_dropout", "lora.dropout"),
    ("lora_target_modules", "lora.target_modules"),
    ("save_steps", "save_every"),
    ("save_total_limit", "keep_checkpoints"),
];

/// Rename alias keys at the top level (`lora_r: 16` becomes `lora: {r: 16}`); an alias
/// given beside its own key is an error rather than a silent choice.
fn apply_aliases(doc: &mut serde_yaml::Value) -> std::result::Result<(), String> {
    let Some(map) = doc.as_mapping_mut() else { return Ok(()) };
    for (alias, key) in ALIASES {
        let Some(v) = map.remove(*alias) else { continue };
        let (outer, inner) = match key.split_once('.') {
            Some((o, i)) => (o, Some(i)),
            None => (*key, None),
        };
        let ok = serde_yaml::Value::String(outer.to_string());
        match inner {
            None if map.contains_key(&ok) => return Err(format!("{alias} and {key} are the same key; give one")),
            None => {
                map.insert(ok, v);
            }
            Some(i) => {
                let sub = map.entry(ok).or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
                let sub = sub.as_mapping_mut().ok_or_else(|| format!("{outer}: expected a map"))?;
                let ik = serde_yaml::Value::String(i.to_string());
                if sub.contains_key(&ik) {
                    return Err(format!("{alias} and {key} are the same key; give one"));
                }
                sub.insert(ik, v);
            }
        }
    }
    Ok(())
}

/// serde's "unknown field `x`, expected one of ..." with the closest known key named.
fn did_you_mean(msg: &str) -> String {
    let Some(rest) = msg.split("unknown field `").nth(1) else { return msg.to_string() };
    let field = rest.split('`').next().unwrap_or("");
    let expected: Vec<&str> = rest.split('`').skip(2).step_by(2).filter(|s| !s.is_empty()).collect();
    let best = expected.iter().map(|k| (edit_distance(field, k), *k)).min();
    match best {
        Some((d, k)) if d <= field.len().max(2) / 2 => format!("{msg} (did you mean `{k}`?)"),
        _ => msg.to_string(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + usize::from(a[i - 1] != b[j - 1]));
        }
        prev = cur;
    }
    prev[b.len()]
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
        let r = Recipe::load(&p, &["learning_rate=1e-5".into(), "lora_alpha=64".into(), "num_train_epochs=3".into()]).unwrap();
        assert_eq!((r.lr, r.lora.alpha, r.epochs), (1e-5, 64.0, 3));
        let e = Recipe::load(&p, &["lora_r=32".into()]).unwrap_err().to_string();
        assert!(e.contains("same key"), "{e}");
        let e = Recipe::load(&p, &["learning_rate=1e-5".into(), "lr=1e-4".into()]).unwrap_err().to_string();
        assert!(e.contains("same key"), "{e}");
        let e = Recipe::load(&p, &["lerning_rat=1".into()]).unwrap_err().to_string();
        assert!(e.contains("lerning_rat"), "{e}");
        let e = Recipe::load(&p, &["bata=0.1".into()]).unwrap_err().to_string();
        assert!(e.contains("did you mean `beta`"), "{e}");
        let e = Recipe::load(&p, &["batch_size=0".into()]).unwrap_err().to_string();
        assert!(e.contains("batch_size"), "{e}");
        std::fs::write(p.with_file_name("e.jsonl"), "{}\n").unwrap();
        let r = Recipe::load(&p, &["data.0.path=e.jsonl".into()]).unwrap();
        assert!(r.data[0].path.ends_with("e.jsonl"));
        let e = Recipe::load(&p, &["data.3.path=e.jsonl".into()]).unwrap_err().to_string();
        assert!(e.contains("list of 1"), "{e}");
    }
}
