//! Llama (SmolLM2, TinyLlama ...): pre-norm, SwiGLU, RoPE, grouped-query attention.
use super::{hf_f64, hf_usize, Architecture, LLAMA_LAYER_NAMES};
use crate::model::config::{Activation, ModelConfig, RopeStyle};
use crate::model::gguf::Metadata;
use crate::Result;
use candle_core::Tensor;

pub struct Llama;

/// Config from `<arch>.*` GGUF keys; shared by llama-like families.
pub(crate) fn gguf_base(md: &Metadata, arch: &str) -> Result<ModelConfig> {
    let k = |s: &str| format!("{arch}.{s}");
    let hidden = md.usize(&k("embedding_length"))?;
    let heads = md.usize(&k("attention.head_count"))?;
    let head_dim = md.opt_usize(&k("attention.key_length")).unwrap_or(hidden / heads);
    let vocab = match md.opt_usize(&k("vocab_size")) {
        Some(v) => v,
        None => md.str_array("tokenizer.ggml.tokens")?.len(),
    };
    Ok(ModelConfig {
        arch: arch.to_string(),
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: md.usize(&k("feed_forward_length"))?,
        num_layers: md.usize(&k("block_count"))?,
        num_heads: heads,
        num_kv_heads: md.opt_usize(&k("attention.head_count_kv")).unwrap_or(heads),
        head_dim,
        rms_eps: md.f64(&k("attention.layer_norm_rms_epsilon"))?,
        rope_theta: md.opt_f64(&k("rope.freq_base")).unwrap_or(10_000.0),
        rope_local_theta: None,
        rope_style: RopeStyle::Interleaved,
        max_position: md.opt_usize(&k("context_length")).unwrap_or(2048),
        activation: Activation::Silu,
        qkv_bias: false,
        qk_norm: false,
        sandwich_norm: false,
        embed_scale: None,
        attn_scale: 1.0 / (head_dim as f64).sqrt(),
        sliding_window: None,
        global_every: 1,
        tie_embeddings: !md.content.tensor_infos.contains_key("output.weight"),
    })
}

/// Config from a HF config.json; shared by llama-like families.
pub(crate) fn hf_base(cfg: &serde_json::Value, arch: &str) -> Result<ModelConfig> {
    let hidden = hf_usize(cfg, "hidden_size")?;
    let heads = hf_usize(cfg, "num_attention_heads")?;
    let head_dim = hf_usize(cfg, "head_dim").unwrap_or(hidden / heads);
    Ok(ModelConfig {
        arch: arch.to_string(),
        vocab_size: hf_usize(cfg, "vocab_size")?,
        hidden_size: hidden,
        intermediate_size: hf_usize(cfg, "intermediate_size")?,
        num_layers: hf_usize(cfg, "num_hidden_layers")?,
        num_heads: heads,
        num_kv_heads: hf_usize(cfg, "num_key_value_heads").unwrap_or(heads),
        head_dim,
        rms_eps: hf_f64(cfg, "rms_norm_eps", 1e-6),
        rope_theta: rope_theta(cfg),
        rope_local_theta: None,
        rope_style: RopeStyle::Interleaved,
        max_position: hf_usize(cfg, "max_position_embeddings").unwrap_or(2048),
        activation: Activation::Silu,
        qkv_bias: false,
        qk_norm: false,
        sandwich_norm: false,
        embed_scale: None,
        attn_scale: 1.0 / (head_dim as f64).sqrt(),
        sliding_window: None,
        global_every: 1,
        tie_embeddings: cfg.get("tie_word_embeddings").and_then(|v| v.as_bool()).unwrap_or(false),
    })
}

/// `rope_theta` moved into `rope_parameters` in newer transformers.
pub(crate) fn rope_theta(cfg: &serde_json::Value) -> f64 {
    cfg.get("rope_parameters").and_then(|r| r.get("rope_theta")).and_then(|v| v.as_f64()).unwrap_or_else(|| hf_f64(cfg, "rope_theta", 10_000.0))
}

pub(crate) fn hf_config_base(c: &ModelConfig, model_type: &str, arch_class: &str) -> serde_json::Value {
    serde_json::json!({
        "architectures": [arch_class],
        "model_type": model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "rms_norm_eps": c.rms_eps,
        "rope_theta": c.rope_theta,
        "max_position_embeddings": c.max_position,
        "tie_word_embeddings": c.tie_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    })
}

/// llama.cpp's converter permutes q/k rows so RoPE rotates adjacent pairs; undo/redo it.
fn permute(t: Tensor, heads: usize, to_hf: bool) -> Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    let half = rows / heads / 2;
    let t = if to_hf { t.reshape((heads, half, 2, cols))?.transpose(1, 2)? } else { t.reshape((heads, 2, half, cols))?.transpose(1, 2)? };
    Ok(t.contiguous()?.reshape((rows, cols))?)
}

impl Architecture for Llama {
    fn name(&self) -> &'static str {
        "llama"
    }
    fn hf_model_types(&self) -> &'static [&'static str] {
        &["llama", "mistral"]
    }
    fn config_from_gguf(&self, md: &Metadata) -> Result<ModelConfig> {
        gguf_base(md, "llama")
    }
    fn config_from_hf(&self, cfg: &serde_json::Value) -> Result<ModelConfig> {
        hf_base(cfg, "llama")
    }
    fn hf_config(&self, cfg: &ModelConfig) -> serde_json::Value {
        hf_config_base(cfg, "llama", "LlamaForCausalLM")
    }
    fn layer_names(&self) -> &'static [(&'static str, &'static str)] {
        LLAMA_LAYER_NAMES
    }
    fn convert(&self, name: &str, t: Tensor, cfg: &ModelConfig, to_hf: bool) -> Result<Tensor> {
        if name.ends_with("attn_q.weight") {
            permute(t, cfg.num_heads, to_hf)
        } else if name.ends_with("attn_k.weight") {
            permute(t, cfg.num_kv_heads, to_hf)
        } else {
            Ok(t)
        }
    }
}
