//! Prompt tuning (Lester et al. 2021; the first stage of ProMoT): `n` trainable vectors
//! placed before every sequence, the model itself frozen. Initialised from the embeddings
//! of a text (PEFT's TEXT init) or of tokens drawn from the vocabulary. Saved like PEFT:
//! `adapter_config.json` (peft_type PROMPT_TUNING) and `adapter_model.safetensors` with
//! `prompt_embeddings` `(n, hidden)`.
use super::{save_tensors, write_atomic, Adapter};
use crate::{CausalLm, Error, Result, Tokenizer};
use candle_core::{DType, Tensor, Var};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    #[serde(default = "default_tokens")]
    pub num_virtual_tokens: usize,
    /// Start from this text's token embeddings (repeated or cut to length); without it,
    /// from the embeddings of tokens drawn at random from the vocabulary.
    pub init_text: Option<String>,
}

fn default_tokens() -> usize {
    20
}

impl Default for PromptConfig {
    fn default() -> Self {
        PromptConfig { num_virtual_tokens: default_tokens(), init_text: None }
    }
}

pub struct PromptTuning {
    pub config: PromptConfig,
    pub embeddings: Var,
}

const KEY: &str = "prompt_embeddings";

impl PromptTuning {
    pub fn attach(model: &mut CausalLm, tok: &Tokenizer, config: &PromptConfig, seed: u64) -> Result<Self> {
        let n = config.num_virtual_tokens;
        if n == 0 {
            return Err(Error::Input("prompt.num_virtual_tokens must be at least 1".into()));
        }
        let ids: Vec<u32> = match &config.init_text {
            Some(text) => {
                let t = tok.encode(text, false)?;
                if t.is_empty() {
                    return Err(Error::Input("prompt.init_text encodes to no tokens".into()));
                }
                t.iter().cycle().take(n).copied().collect()
            }
            None => {
                let mut rng = StdRng::seed_from_u64(seed);
                (0..n).map(|_| rng.gen_range(0..model.config.vocab_size as u32)).collect()
            }
        };
        let e = model.embed(&Tensor::from_vec(ids, (1, n), &model.device)?)?.squeeze(0)?;
        Self::install(model, config.clone(), &e.to_dtype(DType::F32)?)
    }

    /// Load a PEFT prompt-tuning adapter directory.
    pub fn load(model: &mut CausalLm, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::file(&cfg_path, e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&cfg_path, e.to_string()))?;
        let path = dir.join("adapter_model.safetensors");
        let t = candle_core::safetensors::load(&path, &model.device).map_err(|e| Error::file(&path, e.to_string()))?;
        let e = t.get(KEY).ok_or_else(|| Error::file(&path, format!("missing tensor {KEY}")))?;
        let (n, d) = e.dims2()?;
        if d != model.config.hidden_size {
            return Err(Error::file(&path, format!("{KEY} has width {d}; this model's hidden size is {}", model.config.hidden_size)));
        }
        let init_text = v["prompt_tuning_init_text"].as_str().map(str::to_string);
        Self::install(model, PromptConfig { num_virtual_tokens: n, init_text }, &e.to_dtype(DType::F32)?)
    }

    fn install(model: &mut CausalLm, config: PromptConfig, e: &Tensor) -> Result<Self> {
        let embeddings = Var::from_tensor(e)?;
        model.prefix = Some(embeddings.as_tensor().clone());
        Ok(PromptTuning { config, embeddings })
    }
}

impl Adapter for PromptTuning {
    fn method(&self) -> &'static str {
        "prompt"
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        vec![(KEY.to_string(), self.embeddings.clone())]
    }

    fn set_training(&self, _on: bool) {}

    fn begin_step(&self, _seed: u64, _step: u64) {}

    fn save(&self, model: &CausalLm, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e.to_string()))?;
        save_tensors(&dir.join("adapter_model.safetensors"), &[(KEY.to_string(), self.embeddings.as_tensor().clone())])?;
        let c = &model.config;
        let cfg = serde_json::json!({
            "peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM",
            "num_virtual_tokens": self.config.num_virtual_tokens, "token_dim": c.hidden_size,
            "num_transformer_submodules": 1, "num_attention_heads": c.num_heads, "num_layers": c.num_layers,
            "prompt_tuning_init": if self.config.init_text.is_some() { "TEXT" } else { "RANDOM" },
            "prompt_tuning_init_text": self.config.init_text, "inference_mode": true, "base_model_name_or_path": null,
        });
        write_atomic(&dir.join("adapter_config.json"), serde_json::to_string_pretty(&cfg).expect("json").as_bytes())
    }
}
