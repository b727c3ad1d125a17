//! PAT's hybrid sparsification modules (Liu et al. 2024, "PAT: Pruning-Aware Tuning for
//! Large Language Models"; kriskrisliu/PAT_Pruning-Aware-Tuning's `DimDownLayer`): after
//! the token embeddings and on the attention's and the FFN's outputs before each residual
//! add, `y = g * s * (x + U D x)`, a low-rank operator `I + U D`, a per-channel scale `s`
//! and one gate `g` over the hidden channels that every module shares. When `g` is 0/1,
//! the residual stream lives in the kept channels only, so the model folds into one of
//! hidden size `|kept|` ([`CausalLm::prune_hidden`]): the operators go into the
//! projections that write the stream (o_proj, down_proj, the embeddings when untied),
//! the readers (q/k/v, gate/up, the output head) and the norms keep the kept columns, and
//! the norms' weights take `sqrt(hidden / kept)` and their epsilon `hidden / kept` (their
//! mean square now runs over fewer channels), so the result is exact.
use super::linear::Linear;
use super::{CausalLm, Embedding};
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use std::sync::{Arc, RwLock};

/// The shared gate's current values `(hidden,)`; None: no gating (all ones).
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<RwLock<Option<Tensor>>>);

impl Gate {
    pub fn set(&self, g: Option<Tensor>) {
        *self.0.write().expect("gate") = g;
    }

    pub fn get(&self) -> Option<Tensor> {
        self.0.read().expect("gate").clone()
    }
}

/// One module: `down (r, hidden)`, `up (hidden, r)`, `scale (hidden,)`, each optional
/// (the tied embeddings' module is the gate alone, so the output head stays theirs).
#[derive(Debug, Clone)]
pub struct Hsm {
    pub down: Option<Tensor>,
    pub up: Option<Tensor>,
    pub scale: Option<Tensor>,
    pub gate: Gate,
    /// The tensor the gate is computed from, listed with the trainable tensors so a
    /// recomputed block (gradient checkpointing) hands its gradient over.
    pub gate_source: Option<Tensor>,
}

/// A block's two modules: after attention, after the FFN.
#[derive(Debug, Clone)]
pub struct BlockHsm {
    pub attn: Hsm,
    pub mlp: Hsm,
}

impl Hsm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let h = *dims.last().expect("hidden");
        let mut y = match (&self.down, &self.up) {
            (Some(d), Some(u)) => {
                let flat = x.reshape(((), h))?;
                (x + flat.matmul(&d.t()?)?.matmul(&u.t()?)?.reshape(dims.as_slice())?)?
            }
            _ => x.clone(),
        };
        if let Some(s) = &self.scale {
            y = y.broadcast_mul(s)?;
        }
        if let Some(g) = self.gate.get() {
            y = y.broadcast_mul(&g)?;
        }
        Ok(y)
    }

    /// The module without its gate as a dense `(hidden, hidden)` map: `diag(s) (I + U D)`.
    pub fn matrix(&self, hidden: usize) -> Result<Tensor> {
        let dev = self.down.as_ref().or(self.scale.as_ref()).map(|t| t.device().clone()).unwrap_or(candle_core::Device::Cpu);
        let mut m = Tensor::eye(hidden, DType::F32, &dev)?;
        if let (Some(d), Some(u)) = (&self.down, &self.up) {
            m = (m + u.matmul(d)?)?;
        }
        if let Some(s) = &self.scale {
            m = m.broadcast_mul(&s.reshape((hidden, 1))?)?;
        }
        Ok(m)
    }

    /// The tensors a recomputed block must find gradients for.
    pub fn tensors(&self) -> Vec<Tensor> {
        [&self.down, &self.up, &self.scale, &self.gate_source].into_iter().flatten().cloned().collect()
    }
}

impl CausalLm {
    /// Attach (or with None, remove) the modules: one after the embeddings, two per block.
    pub fn set_hsm(&mut self, embed: Option<Hsm>, blocks: Option<Vec<BlockHsm>>) -> Result<()> {
        if let Some(b) = &blocks {
            if b.len() != self.blocks.len() {
                return Err(Error::Input(format!("{} block modules for {} blocks", b.len(), self.blocks.len())));
            }
        }
        self.hsm_embed = embed;
        let mut it = blocks.map(|b| b.into_iter());
        for blk in &mut self.blocks {
            blk.hsm = it.as_mut().and_then(|i| i.next()).map(Arc::new);
        }
        Ok(())
    }

    /// Fold the attached modules into the weights and keep only the hidden channels
    /// `keep` (ascending): the model becomes one of hidden size `keep.len()` that
    /// computes what the modules with their gate at 1 on `keep` and 0 elsewhere compute.
    /// Projections become dense f32; the modules are removed.
    pub fn prune_hidden(&mut self, keep: &[u32]) -> Result<()> {
        let h = self.config.hidden_size;
        if keep.is_empty() || keep.windows(2).any(|w| w[0] >= w[1]) || keep.iter().any(|&k| k as usize >= h) {
            return Err(Error::Input(format!("prune: the kept channels must be distinct, ascending and below {h} (got {} of them)", keep.len())));
        }
        if self.config.sandwich_norm || self.config.embed_scale.is_some() {
            return Err(Error::Unsupported(format!("pruning hidden channels: {} normalises the attention and FFN outputs over every channel before the residual add, so a pruned stream does not fold exactly; llama and qwen2 models prune", self.arch.name())));
        }
        let idx = Tensor::from_vec(keep.to_vec(), keep.len(), &self.device)?;
        let c = (h as f64 / keep.len() as f64).sqrt();
        let cols = |w: &Tensor| -> Result<Tensor> { Ok(w.index_select(&idx, 1)?.contiguous()?) };
        let norm_w = |w: &Tensor| -> Result<Tensor> { Ok((w.index_select(&idx, 0)? * c)?) };
        let eps = self.config.rms_eps * c * c;
        let mut emb = match &self.embed {
            Embedding::Dense(t) => t.to_dtype(DType::F32)?,
            Embedding::Quant(q) => q.dequantize(&self.device)?,
        };
        if let Some(m) = &self.hsm_embed {
            if m.down.is_some() || m.scale.is_some() {
                emb = emb.matmul(&m.matrix(h)?.t()?)?;
            }
        }
        let emb = cols(&emb)?;
        self.lm_head = if self.config.tie_embeddings { Linear::dense(emb.clone(), None) } else { Linear::dense(cols(&self.lm_head.dense_weight()?)?, None) };
        self.embed = Embedding::Dense(emb);
        self.norm.weight = norm_w(&self.norm.weight)?;
        self.norm.eps = eps;
        for blk in &mut self.blocks {
            let maps = match blk.hsm.take() {
                Some(b) => Some((b.attn.matrix(h)?, b.mlp.matrix(h)?)),
                None => None,
            };
            blk.attn_norm.weight = norm_w(&blk.attn_norm.weight)?;
            blk.mlp_norm.weight = norm_w(&blk.mlp_norm.weight)?;
            (blk.attn_norm.eps, blk.mlp_norm.eps) = (eps, eps);
            for l in [&mut blk.attn.q, &mut blk.attn.k, &mut blk.attn.v, &mut blk.mlp.gate, &mut blk.mlp.up] {
                *l = Linear::dense(cols(&l.dense_weight()?)?, l.bias.clone());
            }
            let writers = [(&mut blk.attn.o, maps.as_ref().map(|m| &m.0)), (&mut blk.mlp.down, maps.as_ref().map(|m| &m.1))];
            for (l, m) in writers {
                let (mut w, mut b) = (l.dense_weight()?, l.bias.clone());
                if let Some(m) = m {
                    w = m.matmul(&w)?;
                    b = b.map(|b| m.matmul(&b.reshape((h, 1))?)?.reshape(h)).transpose()?;
                }
                *l = Linear::dense(w.index_select(&idx, 0)?.contiguous()?, b.map(|b| b.index_select(&idx, 0)).transpose()?);
            }
        }
        self.hsm_embed = None;
        // Every norm reads the stream: its mean square over fewer channels, with eps
        // scaled alike, is the wide one's exactly (`w c / sqrt(ms c^2 + eps c^2)`).
        self.config.rms_eps = eps;
        self.config.hidden_size = keep.len();
        Ok(())
    }
}
