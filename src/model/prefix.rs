//! Prefix tuning's keys and values (Li & Liang 2021; PEFT's `PREFIX_TUNING`): `P` learned
//! key/value vectors per layer, placed before the sequence's own in every attention, never
//! rotated (they enter the cache as they are, as PEFT's `past_key_values` do). The
//! sequence's positions start at `P`, as in transformers with a cache of `P` entries.
use super::CausalLm;
use crate::Result;
use candle_core::Tensor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct KvPrefix {
    /// `(P, layers * 2 * kv_heads * head_dim)`, PEFT's `prompt_embeddings` layout: per
    /// virtual token, layer `l`'s keys at slot `2l` and values at `2l + 1`, each
    /// `kv_heads x head_dim` in Hugging Face's feature order.
    pub weight: Tensor,
    pub enabled: Arc<AtomicBool>,
}

impl KvPrefix {
    pub fn len(&self) -> Result<usize> {
        Ok(self.weight.dim(0)?)
    }

    pub fn is_empty(&self) -> bool {
        self.weight.dims().first().is_none_or(|&n| n == 0)
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Layer `l`'s keys and values as `(B, kv_heads, P, head_dim)`, the keys in the
    /// model's own feature order (llama's GGUF k rows are permuted).
    pub fn layer(&self, model: &CausalLm, l: usize, b: usize) -> Result<(Tensor, Tensor)> {
        let c = &model.config;
        let (p, kv, d) = (self.len()?, c.num_kv_heads, c.head_dim);
        let w = self.weight.reshape((p, c.num_layers * 2, kv * d))?;
        let k = w.narrow(1, 2 * l, 1)?.squeeze(1)?;
        let v = w.narrow(1, 2 * l + 1, 1)?.squeeze(1)?;
        let k = model.rows_to_hf(&format!("blk.{l}.attn_k.weight"), k.t()?.contiguous()?, false)?.t()?;
        let heads = |t: Tensor| -> Result<Tensor> { Ok(t.reshape((p, kv, d))?.transpose(0, 1)?.unsqueeze(0)?.broadcast_as((b, kv, p, d))?.contiguous()?) };
        Ok((heads(k)?, heads(v)?))
    }
}
