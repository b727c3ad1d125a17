//! MAM, the "mix-and-match" adapter of He et al. 2022 ("Towards a Unified View of
//! Parameter-Efficient Transfer Learning"): prefix tuning on the attention plus a scaled
//! parallel bottleneck adapter on the FFN, trained together. Saved as a directory with
//! `adapter_config.json` (`peft_type: MAM`) and the two parts in their own layouts,
//! `prefix/` (PEFT's PREFIX_TUNING) and `adapter/` (BOTTLENECK), each loadable alone.
use super::bottleneck::{Bottleneck, BottleneckConfig};
use super::prefix::{PrefixConfig, PrefixTuning};
use super::{write_atomic, Adapter};
use crate::{CausalLm, Error, Result};
use candle_core::Var;
use std::path::Path;

pub struct Mam {
    pub prefix: PrefixTuning,
    pub adapter: Bottleneck,
}

impl Mam {
    pub fn attach(model: &mut CausalLm, prefix: &PrefixConfig, adapter: &BottleneckConfig, seed: u64) -> Result<Self> {
        let p = PrefixTuning::attach(model, prefix, seed)?;
        let a = Bottleneck::attach(model, adapter, seed ^ 0x5851_F42D_4C95_7F2D)?;
        Ok(Mam { prefix: p, adapter: a })
    }

    pub fn load(model: &mut CausalLm, dir: &Path) -> Result<Self> {
        if super::peft_type(dir)? != "MAM" {
            return Err(Error::file(dir.join("adapter_config.json"), "peft_type: expected \"MAM\""));
        }
        Ok(Mam { prefix: PrefixTuning::load(model, &dir.join("prefix"))?, adapter: Bottleneck::load(model, &dir.join("adapter"))? })
    }
}

impl Adapter for Mam {
    fn method(&self) -> &'static str {
        "mam"
    }

    /// Both parts' tensors, under `prefix/` and `adapter/` names.
    fn trainable(&self) -> Vec<(String, Var)> {
        let p = self.prefix.trainable().into_iter().map(|(n, v)| (format!("prefix/{n}"), v));
        p.chain(self.adapter.trainable().into_iter().map(|(n, v)| (format!("adapter/{n}"), v))).collect()
    }

    fn set_training(&self, on: bool) {
        self.prefix.set_training(on);
        self.adapter.set_training(on);
    }

    fn begin_step(&self, seed: u64, step: u64) {
        self.prefix.begin_step(seed, step);
        self.adapter.begin_step(seed, step);
    }

    fn set_enabled(&self, on: bool) -> Result<()> {
        self.prefix.set_enabled(on)?;
        self.adapter.set_enabled(on)
    }

    fn save(&self, model: &CausalLm, dir: &Path) -> Result<()> {
        self.prefix.save(model, &dir.join("prefix"))?;
        self.adapter.save(model, &dir.join("adapter"))?;
        let cfg = serde_json::json!({
            "peft_type": "MAM", "task_type": "CAUSAL_LM", "parts": {"prefix": "PREFIX_TUNING", "adapter": "BOTTLENECK"},
            "num_virtual_tokens": self.prefix.config.num_virtual_tokens, "bottleneck_size": self.adapter.config.bottleneck,
            "scaling": self.adapter.config.scale, "inference_mode": true, "base_model_name_or_path": null,
        });
        write_atomic(&dir.join("adapter_config.json"), serde_json::to_string_pretty(&cfg).expect("json").as_bytes())
    }
}
