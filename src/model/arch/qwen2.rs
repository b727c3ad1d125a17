//! Qwen2 / Qwen2.5: llama with q/k/v biases and half-split RoPE.
use super::llama::{gguf_base, hf_base, hf_config_base};
use super::{Architecture, LLAMA_LAYER_NAMES};
use crate::model::config::{ModelConfig, RopeStyle};
use crate::model::gguf::Metadata;
use crate::Result;

pub struct Qwen2;

fn adjust(mut c: ModelConfig) -> ModelConfig {
    c.qkv_bias = true;
    c.rope_style = RopeStyle::Halves;
    c
}

impl Architecture for Qwen2 {
    fn name(&self) -> &'static str {
        "qwen2"
    }
    fn hf_model_types(&self) -> &'static [&'static str] {
        &["qwen2"]
    }
    fn config_from_gguf(&self, md: &Metadata) -> Result<ModelConfig> {
        Ok(adjust(gguf_base(md, "qwen2")?))
    }
    fn config_from_hf(&self, cfg: &serde_json::Value) -> Result<ModelConfig> {
        Ok(adjust(hf_base(cfg, "qwen2")?))
    }
    fn hf_config(&self, cfg: &ModelConfig) -> serde_json::Value {
        hf_config_base(cfg, "qwen2", "Qwen2ForCausalLM")
    }
    fn layer_names(&self) -> &'static [(&'static str, &'static str)] {
        LLAMA_LAYER_NAMES
    }
}
