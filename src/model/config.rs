//! The hyper-parameters a forward pass needs, whatever file they came from.
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Activation {
    Silu,
    /// `gelu_pytorch_tanh`.
    GeluTanh,
}

/// How RoPE pairs dimensions: GGUF llama weights are permuted for adjacent pairs,
/// qwen2/gemma3 (and HF layouts) rotate the two halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RopeStyle {
    Interleaved,
    Halves,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelConfig {
    pub arch: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
    /// RoPE base of sliding-window layers (gemma3), when it differs.
    pub rope_local_theta: Option<f64>,
    pub rope_style: RopeStyle,
    pub max_position: usize,
    pub activation: Activation,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    /// Norms after attention and MLP as well as before (gemma3).
    pub sandwich_norm: bool,
    /// Multiply token embeddings by this (gemma3: sqrt(hidden)).
    pub embed_scale: Option<f64>,
    /// Softmax scale of attention scores.
    pub attn_scale: f64,
    pub sliding_window: Option<usize>,
    /// Every `n`-th layer is global when a sliding window is set (gemma3: 6).
    pub global_every: usize,
    pub tie_embeddings: bool,
}

impl ModelConfig {
    /// Does layer `i` attend only within the sliding window?
    pub fn is_sliding(&self, layer: usize) -> bool {
        self.sliding_window.is_some() && !(layer + 1).is_multiple_of(self.global_every)
    }

    pub fn layer_rope_theta(&self, layer: usize) -> f64 {
        match self.rope_local_theta {
            Some(t) if self.is_sliding(layer) => t,
            _ => self.rope_theta,
        }
    }

    pub fn num_params_estimate(&self) -> usize {
        let d = self.hidden_size;
        let attn = d * self.head_dim * (self.num_heads * 2 + self.num_kv_heads * 2);
        let mlp = 3 * d * self.intermediate_size;
        let emb = self.vocab_size * d * if self.tie_embeddings { 1 } else { 2 };
        self.num_layers * (attn + mlp) + emb
    }
}
