//! Full fine-tuning, partial tuning (weights picked or frozen by name pattern) and Half
//! Fine-Tuning (HFT, Hui et al. 2024: in every block half of the parameter groups are
//! frozen, and which half is re-drawn at every stage).
//!
//! The model's own weights become trainable variables (dequantized to f32). What is
//! saved is a complete Hugging Face model directory: config, safetensors, tokenizer.
use super::Adapter;
use crate::model::weights::save_hf_dir;
use crate::{CausalLm, Error, Result};
use candle_core::Var;
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullConfig {
    /// Regexes (searched in Hugging Face weight names, e.g. `model.layers.3.mlp.up_proj.weight`):
    /// only matching weights train. Empty: every weight.
    #[serde(default)]
    pub train: Vec<String>,
    /// Regexes of weights kept frozen (after `train`), e.g. `embed_tokens`, `layers\.[0-9]\.`.
    #[serde(default)]
    pub freeze: Vec<String>,
    /// Half Fine-Tuning: steps per stage (0: off). Each stage trains, in every block, a
    /// random half of its parameter groups (attention projections, MLP projections, norms);
    /// weights outside the blocks train throughout.
    #[serde(default)]
    pub hft_stage_steps: usize,
}

pub struct Full {
    vars: Vec<(String, Var)>,
    config: FullConfig,
    tokenizer_files: Vec<(&'static str, Vec<u8>)>,
    /// HFT: which variables train in the current stage (None: all).
    active: RefCell<Option<Vec<bool>>>,
    stage: RefCell<Option<usize>>,
}

/// Compile the weight-name regexes of recipe key `key` (`full.train`, `sparse.freeze`).
fn compile(patterns: &[String], key: &str) -> Result<Vec<Regex>> {
    patterns.iter().map(|p| Regex::new(p).map_err(|e| Error::Input(format!("{key}: {p:?} is not a valid regex: {e}")))).collect()
}

/// Which weights train under `train` / `freeze` patterns (empty `train`: every weight).
pub(crate) fn selector(train: &[String], freeze: &[String], prefix: &str) -> Result<impl Fn(&str) -> bool> {
    let (train, freeze) = (compile(train, &format!("{prefix}.train"))?, compile(freeze, &format!("{prefix}.freeze"))?);
    Ok(move |n: &str| (train.is_empty() || train.iter().any(|r| r.is_match(n))) && !freeze.iter().any(|r| r.is_match(n)))
}

/// A block weight's HFT category and unit: ("attention", "q_proj"), ("mlp", "up_proj"),
/// ("norm", "input_layernorm"); None outside the blocks.
fn hft_unit(name: &str) -> Option<(usize, &'static str, String)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (idx, rest) = rest.split_once('.')?;
    let unit = rest.trim_end_matches(".weight").trim_end_matches(".bias");
    let category = if unit.contains("norm") {
        "norm"
    } else if unit.starts_with("self_attn.") {
        "attention"
    } else {
        "mlp"
    };
    Some((idx.parse().ok()?, category, unit.to_string()))
}

impl Full {
    pub fn attach(model: &mut CausalLm, tok: &crate::Tokenizer, config: &FullConfig) -> Result<Self> {
        let select = selector(&config.train, &config.freeze, "full")?;
        let vars = model.make_trainable(&select)?;
        if vars.is_empty() {
            return Err(Error::Input("full: the train/freeze patterns leave no weight to train".into()));
        }
        Ok(Full { vars, config: config.clone(), tokenizer_files: tok.hf_files(), active: RefCell::new(None), stage: RefCell::new(None) })
    }

    /// HFT: at the first step of every stage, draw each block's trainable half and
    /// point the model at it. Deterministic in (seed, stage), so resuming redraws the same.
    pub fn hft_stage(&self, model: &mut CausalLm, seed: u64, step: usize) -> Result<()> {
        let every = self.config.hft_stage_steps;
        if every == 0 {
            return Ok(());
        }
        let stage = step / every;
        if *self.stage.borrow() == Some(stage) {
            return Ok(());
        }
        let mut rng = StdRng::seed_from_u64(seed ^ (stage as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        // Per block and category, half of the units train; with an odd count (three MLP
        // projections) blocks alternate between rounding down and up, so half overall.
        let mut units: std::collections::BTreeMap<(usize, &str), Vec<String>> = Default::default();
        for (n, _) in &self.vars {
            if let Some((b, c, u)) = hft_unit(n) {
                let list = units.entry((b, c)).or_default();
                if !list.contains(&u) {
                    list.push(u);
                }
            }
        }
        let mut on = std::collections::HashSet::new();
        for ((b, _), mut list) in units {
            list.shuffle(&mut rng);
            let k = (list.len() + b % 2) / 2;
            on.extend(list.into_iter().take(k).map(|u| (b, u)));
        }
        let active: Vec<bool> = self.vars.iter().map(|(n, _)| hft_unit(n).is_none_or(|(b, _, u)| on.contains(&(b, u)))).collect();
        model.set_trainable(&self.vars, &active)?;
        *self.active.borrow_mut() = Some(active);
        *self.stage.borrow_mut() = Some(stage);
        Ok(())
    }

    /// Which variables the optimiser may update now (all, outside HFT).
    pub fn active(&self) -> Option<Vec<bool>> {
        self.active.borrow().clone()
    }
}

impl Adapter for Full {
    fn method(&self) -> &'static str {
        "full"
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        self.vars.clone()
    }

    fn set_training(&self, _on: bool) {}

    fn begin_step(&self, _seed: u64, _step: u64) {}

    fn save(&self, model: &CausalLm, dir: &Path) -> Result<()> {
        save_hf_dir(dir, model.arch, &model.config, model.named_tensors()?, candle_core::DType::F32, 2_000_000_000, &self.tokenizer_files)
    }

    fn as_full(&self) -> Option<&Full> {
        Some(self)
    }
}
