//! Prefix tuning (Li & Liang 2021), as PEFT's `PREFIX_TUNING` without the
//! reparametrising MLP (`prefix_projection: false`, PEFT's default): `P` trainable key and
//! value vectors per layer (`model::prefix`), the model frozen. Initialised as PEFT's
//! `nn.Embedding` is, standard normal. Saved like PEFT: `adapter_config.json` and
//! `adapter_model.safetensors` with `prompt_embeddings` `(P, layers x 2 x kv_heads x
//! head_dim)`; with grouped-query attention PEFT sizes the prefix by the key/value heads
//! (`token_dim = head_dim x kv_heads`, `num_attention_heads = kv_heads`), and so do we.
use super::{save_tensors, write_atomic, Adapter};
use crate::model::prefix::KvPrefix;
use crate::{CausalLm, Error, Result};
use candle_core::{DType, Tensor, Var};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixConfig {
    #[serde(default = "default_tokens")]
    pub num_virtual_tokens: usize,
}

fn default_tokens() -> usize {
    20
}

impl Default for PrefixConfig {
    fn default() -> Self {
        PrefixConfig { num_virtual_tokens: default_tokens() }
    }
}

pub struct PrefixTuning {
    pub config: PrefixConfig,
    pub embeddings: Var,
    enabled: Arc<AtomicBool>,
}

const KEY: &str = "prompt_embeddings";

/// Values per virtual token: keys and values of every layer.
fn width(model: &CausalLm) -> usize {
    let c = &model.config;
    c.num_layers * 2 * c.num_kv_heads * c.head_dim
}

impl PrefixTuning {
    pub fn attach(model: &mut CausalLm, config: &PrefixConfig, seed: u64) -> Result<Self> {
        let n = config.num_virtual_tokens;
        if n == 0 {
            return Err(Error::Input("prefix.num_virtual_tokens must be at least 1".into()));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        // Standard normal by Box-Muller (rand 0.8 has no normal distribution of its own).
        let mut normal = || -> f32 {
            let (u, v): (f64, f64) = (1.0 - rng.gen::<f64>(), rng.gen());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        };
        let w: Vec<f32> = (0..n * width(model)).map(|_| normal()).collect();
        Self::install(model, config.clone(), &Tensor::from_vec(w, (n, width(model)), &model.device)?)
    }

    /// Load a PEFT prefix-tuning adapter directory.
    pub fn load(model: &mut CausalLm, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::file(&cfg_path, e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&cfg_path, e.to_string()))?;
        if v["num_transformer_submodules"].as_u64().unwrap_or(1) != 1 {
            return Err(Error::file(&cfg_path, "num_transformer_submodules: only decoder-only models (1) are supported"));
        }
        let path = dir.join("adapter_model.safetensors");
        let t = candle_core::safetensors::load(&path, &model.device).map_err(|e| Error::file(&path, e.to_string()))?;
        let e = t.get(KEY).ok_or_else(|| Error::file(&path, format!("missing tensor {KEY}")))?;
        let (n, d) = e.dims2()?;
        if d != width(model) {
            let c = &model.config;
            return Err(Error::file(
                &path,
                format!("{KEY} has width {d}; this model needs layers x 2 x kv_heads x head_dim = {} x 2 x {} x {} = {}", c.num_layers, c.num_kv_heads, c.head_dim, width(model)),
            ));
        }
        Self::install(model, PrefixConfig { num_virtual_tokens: n }, &e.to_dtype(DType::F32)?)
    }

    fn install(model: &mut CausalLm, config: PrefixConfig, e: &Tensor) -> Result<Self> {
        let embeddings = Var::from_tensor(e)?;
        let enabled = Arc::new(AtomicBool::new(true));
        model.kv_prefix = Some(KvPrefix { weight: embeddings.as_tensor().clone(), enabled: enabled.clone() });
        Ok(PrefixTuning { config, embeddings, enabled })
    }
}

impl Adapter for PrefixTuning {
    fn method(&self) -> &'static str {
        "prefix"
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        vec![(KEY.to_string(), self.embeddings.clone())]
    }

    fn set_training(&self, _on: bool) {}

    fn begin_step(&self, _seed: u64, _step: u64) {}

    fn set_enabled(&self, on: bool) -> Result<()> {
        self.enabled.store(on, Ordering::Relaxed);
        Ok(())
    }

    fn save(&self, model: &CausalLm, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e.to_string()))?;
        save_tensors(&dir.join("adapter_model.safetensors"), &[(KEY.to_string(), self.embeddings.as_tensor().clone())])?;
        let c = &model.config;
        let token_dim = c.num_kv_heads * c.head_dim;
        let cfg = serde_json::json!({
            "peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": self.config.num_virtual_tokens,
            "token_dim": token_dim, "num_transformer_submodules": 1, "num_attention_heads": c.num_kv_heads,
            "num_layers": c.num_layers, "encoder_hidden_size": token_dim, "prefix_projection": false,
            "inference_mode": true, "base_model_name_or_path": null,
        });
        write_atomic(&dir.join("adapter_config.json"), serde_json::to_string_pretty(&cfg).expect("json").as_bytes())
    }
}
