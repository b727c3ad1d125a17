//! One file per architecture family. Each turns file metadata into a [`ModelConfig`]
//! and maps Hugging Face tensor names and layouts onto the GGUF names we use inside.
mod gemma3;
mod llama;
mod qwen2;

use super::config::ModelConfig;
use super::gguf::Metadata;
use crate::{Error, Result};
use candle_core::Tensor;

pub trait Architecture: Sync {
    /// GGUF `general.architecture` / our name.
    fn name(&self) -> &'static str;
    /// HF `model_type` values this family reads.
    fn hf_model_types(&self) -> &'static [&'static str];
    fn config_from_gguf(&self, md: &Metadata) -> Result<ModelConfig>;
    fn config_from_hf(&self, cfg: &serde_json::Value) -> Result<ModelConfig>;
    /// HF `config.json` for a model of this family (used when writing a HF dir).
    fn hf_config(&self, cfg: &ModelConfig) -> serde_json::Value;
    /// Per-layer HF -> GGUF suffix pairs, e.g. ("self_attn.q_proj", "attn_q").
    fn layer_names(&self) -> &'static [(&'static str, &'static str)];
    /// Turn a HF tensor into the layout GGUF uses (and back with `to_hf = true`).
    fn convert(&self, _gguf_name: &str, t: Tensor, _cfg: &ModelConfig, _to_hf: bool) -> Result<Tensor> {
        Ok(t)
    }
}

pub static ARCHITECTURES: &[&dyn Architecture] = &[&llama::Llama, &qwen2::Qwen2, &gemma3::Gemma3];

pub fn by_name(name: &str) -> Result<&'static dyn Architecture> {
    ARCHITECTURES.iter().copied().find(|a| a.name() == name).ok_or_else(|| unknown(name))
}

pub fn by_hf_model_type(model_type: &str) -> Result<&'static dyn Architecture> {
    ARCHITECTURES.iter().copied().find(|a| a.hf_model_types().contains(&model_type)).ok_or_else(|| unknown(model_type))
}

fn unknown(name: &str) -> Error {
    let known: Vec<&str> = ARCHITECTURES.iter().map(|a| a.name()).collect();
    Error::Unsupported(format!("unknown architecture {name:?}: instill runs {}", known.join(", ")))
}

/// Names shared by every family outside the layers.
pub const GLOBAL_NAMES: &[(&str, &str)] = &[("model.embed_tokens.weight", "token_embd.weight"), ("model.norm.weight", "output_norm.weight"), ("lm_head.weight", "output.weight")];

/// Map a HF tensor name to its GGUF name under `arch`.
pub fn hf_to_gguf(arch: &dyn Architecture, hf: &str) -> Option<String> {
    if let Some((_, g)) = GLOBAL_NAMES.iter().find(|(h, _)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (idx, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let (_, g) = arch.layer_names().iter().find(|(h, _)| *h == module)?;
    Some(format!("blk.{idx}.{g}.{kind}"))
}

/// Map a GGUF tensor name back to HF.
pub fn gguf_to_hf(arch: &dyn Architecture, gguf: &str) -> Option<String> {
    if let Some((h, _)) = GLOBAL_NAMES.iter().find(|(_, g)| *g == gguf) {
        return Some(h.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (idx, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let (h, _) = arch.layer_names().iter().find(|(_, g)| *g == module)?;
    Some(format!("model.layers.{idx}.{h}.{kind}"))
}

/// Helpers for reading HF config.json values with errors naming the key.
pub(crate) fn hf_usize(cfg: &serde_json::Value, key: &str) -> Result<usize> {
    cfg.get(key).and_then(|v| v.as_u64()).map(|v| v as usize).ok_or_else(|| Error::Input(format!("config.json: missing or non-integer {key:?}")))
}

pub(crate) fn hf_f64(cfg: &serde_json::Value, key: &str, default: f64) -> f64 {
    cfg.get(key).and_then(|v| v.as_f64()).unwrap_or(default)
}

/// The llama-style names (llama and qwen2 share them).
pub const LLAMA_LAYER_NAMES: &[(&str, &str)] = &[
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
    ("input_layernorm", "attn_norm"),
    ("post_attention_layernorm", "ffn_norm"),
];
