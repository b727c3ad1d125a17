//! Gemma 3 (text): QK-norm, sandwich norms, GELU-tanh MLP, scaled embeddings,
//! sliding-window layers with their own RoPE base and a global layer every 6th.
use super::llama::{gguf_base, hf_base, hf_config_base, rope_theta};
use super::{hf_f64, Architecture};
use crate::model::config::{Activation, ModelConfig, RopeStyle};
use crate::model::gguf::Metadata;
use crate::Result;
use candle_core::Tensor;

pub struct Gemma3;

/// Gemma-3 settings GGUF does not carry (from the HF gemma3_text defaults).
const LOCAL_ROPE_THETA: f64 = 10_000.0;
const GLOBAL_EVERY: usize = 6;

fn adjust(mut c: ModelConfig, query_pre_attn_scalar: f64) -> ModelConfig {
    c.rope_style = RopeStyle::Halves;
    c.activation = Activation::GeluTanh;
    c.qk_norm = true;
    c.sandwich_norm = true;
    c.embed_scale = Some((c.hidden_size as f64).sqrt());
    c.attn_scale = 1.0 / query_pre_attn_scalar.sqrt();
    c.rope_local_theta = Some(LOCAL_ROPE_THETA);
    c.global_every = GLOBAL_EVERY;
    c
}

impl Architecture for Gemma3 {
    fn name(&self) -> &'static str {
        "gemma3"
    }
    fn hf_model_types(&self) -> &'static [&'static str] {
        &["gemma3_text", "gemma3"]
    }
    fn config_from_gguf(&self, md: &Metadata) -> Result<ModelConfig> {
        let mut c = gguf_base(md, "gemma3")?;
        c.sliding_window = md.opt_usize("gemma3.attention.sliding_window");
        let head_dim = c.head_dim as f64;
        Ok(adjust(c, head_dim))
    }
    fn config_from_hf(&self, cfg: &serde_json::Value) -> Result<ModelConfig> {
        let cfg = cfg.get("text_config").unwrap_or(cfg);
        let mut c = hf_base(cfg, "gemma3")?;
        c.sliding_window = cfg.get("sliding_window").and_then(|v| v.as_u64()).map(|v| v as usize);
        c.rope_theta = rope_theta(cfg).max(1.0);
        let scalar = hf_f64(cfg, "query_pre_attn_scalar", c.head_dim as f64);
        let mut c = adjust(c, scalar);
        c.rope_local_theta = Some(hf_f64(cfg, "rope_local_base_freq", LOCAL_ROPE_THETA));
        c.global_every = cfg.get("sliding_window_pattern").and_then(|v| v.as_u64()).unwrap_or(6) as usize;
        c.tie_embeddings = cfg.get("tie_word_embeddings").and_then(|v| v.as_bool()).unwrap_or(true);
        Ok(c)
    }
    fn hf_config(&self, c: &ModelConfig) -> serde_json::Value {
        let mut v = hf_config_base(c, "gemma3_text", "Gemma3ForCausalLM");
        let layer_types: Vec<&str> = (0..c.num_layers).map(|i| if c.is_sliding(i) { "sliding_attention" } else { "full_attention" }).collect();
        let o = v.as_object_mut().expect("object");
        o.insert("hidden_activation".into(), "gelu_pytorch_tanh".into());
        o.insert("query_pre_attn_scalar".into(), (1.0 / (c.attn_scale * c.attn_scale)).round().into());
        o.insert("sliding_window".into(), c.sliding_window.into());
        o.insert("sliding_window_pattern".into(), c.global_every.into());
        o.insert("rope_local_base_freq".into(), c.rope_local_theta.into());
        o.insert("layer_types".into(), serde_json::json!(layer_types));
        v
    }
    fn layer_names(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("self_attn.q_proj", "attn_q"),
            ("self_attn.k_proj", "attn_k"),
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("self_attn.q_norm", "attn_q_norm"),
            ("self_attn.k_norm", "attn_k_norm"),
            ("mlp.gate_proj", "ffn_gate"),
            ("mlp.up_proj", "ffn_up"),
            ("mlp.down_proj", "ffn_down"),
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "post_attention_norm"),
            ("pre_feedforward_layernorm", "ffn_norm"),
            ("post_feedforward_layernorm", "post_ffw_norm"),
        ]
    }
    /// HF Gemma norms compute `x * (1 + w)`; GGUF stores `1 + w` already.
    fn convert(&self, name: &str, t: Tensor, _cfg: &ModelConfig, to_hf: bool) -> Result<Tensor> {
        if name.contains("norm") {
            let shift = if to_hf { -1.0 } else { 1.0 };
            Ok((t + shift)?)
        } else {
            Ok(t)
        }
    }
}
