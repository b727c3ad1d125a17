//! The decoder block shared by every family; the differences are config switches.
use super::config::{Activation, ModelConfig, RopeStyle};
use super::kernels::attention;
use super::linear::Linear;
use super::rope::RopeTable;
use crate::Result;
use candle_core::{DType, Tensor};

#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        super::ops::rms_norm(x, &self.weight, self.eps)
    }
}

#[derive(Debug, Clone)]
pub struct Mlp {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    pub act: Activation,
}

impl Mlp {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = super::ops::glu(&self.gate.forward(x)?, &self.up.forward(x)?, self.act)?;
        self.down.forward(&h)
    }
}

#[derive(Debug, Clone)]
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f64,
    pub rope_style: RopeStyle,
}

impl Attention {
    /// `(B, T, n x D)` -> `(B, T, n, D)`, through the per-head norm where there is one.
    fn split_heads(&self, x: &Tensor, n: usize, norm: &Option<RmsNorm>) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let x = x.reshape((b, t, n, self.head_dim))?;
        match norm {
            Some(nm) => nm.forward(&x),
            None => Ok(x),
        }
    }

    /// `x (B, T, hidden)`; `mask (B, 1, T, S)` or None; the cache grows by `T`.
    /// `starts`: for one-token decode steps, each row's first real key; attention then
    /// runs row by row over the real keys only, so a row computes exactly what it would
    /// alone, whatever padding the others' lengths put in the batch (the server's
    /// batch-invariant decoding).
    /// `prefix_kv`: prefix tuning's keys and values `(B, KV, P, D)`, which replace those of
    /// the first `P` positions (placeholders) as they are, unrotated.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTable,
        mask: Option<&Tensor>,
        cache: Option<&mut candle_nn::kv_cache::KvCache>,
        starts: Option<&[usize]>,
        prefix_kv: Option<(&Tensor, &Tensor)>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        // Queries and keys go heads-first in their rotation's pass; the queries carry the scale.
        let q = rope.apply_heads_first(&self.split_heads(&self.q.forward(x)?, self.heads, &self.q_norm)?, self.rope_style, self.scale)?;
        let k = rope.apply_heads_first(&self.split_heads(&self.k.forward(x)?, self.kv_heads, &self.k_norm)?, self.rope_style, 1.0)?;
        let v = self.split_heads(&self.v.forward(x)?, self.kv_heads, &None)?.transpose(1, 2)?.contiguous()?;
        let (k, v) = match prefix_kv {
            Some((pk, pv)) => {
                let n = pk.dim(2)?;
                (Tensor::cat(&[pk, &k.narrow(2, n, t - n)?], 2)?, Tensor::cat(&[pv, &v.narrow(2, n, t - n)?], 2)?)
            }
            None => (k, v),
        };
        let (k, v) = match cache {
            Some(c) => c.append(&k, &v)?,
            None => (k, v),
        };
        // Grouped-query attention without copying K/V: fold each KV head's query
        // heads into the row dimension, (B, H, T, D) -> (B, KV, R*T, D).
        let rep = self.heads / self.kv_heads;
        let q = q.reshape((b, self.kv_heads, rep * t, self.head_dim))?;
        let y = match starts {
            Some(st) if t == 1 => {
                let mut rows = Vec::with_capacity(b);
                for (r, &s0) in st.iter().enumerate() {
                    let n = k.dim(2)? - s0;
                    let (kr, vr) = (k.narrow(0, r, 1)?.narrow(2, s0, n)?, v.narrow(0, r, 1)?.narrow(2, s0, n)?);
                    let mr = match mask {
                        Some(m) => Some(m.narrow(0, r, 1)?.narrow(3, s0, n)?.contiguous()?),
                        None => None,
                    };
                    rows.push(attend(&q.narrow(0, r, 1)?.contiguous()?, &kr, &vr, mr.as_ref(), t)?);
                }
                Tensor::cat(&rows, 0)?
            }
            _ => attend(&q, &k, &v, mask, t)?,
        }; // (B, KV, R*T, D)
        let y = y.reshape((b, self.heads, t, self.head_dim))?.transpose(1, 2)?;
        self.o.forward(&y.reshape((b, t, self.heads * self.head_dim))?)
    }
}

/// `softmax(q k^T + mask) v` for `q (B, KV, R*T, D)` holding `t` queries per head.
/// Several queries (prefill, scoring, training) on the CPU take the fused kernel, which
/// keeps no score matrix for backward; decode steps read the KV cache where it lies.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, t: usize) -> Result<Tensor> {
    if t > 1 && attention::applies(q, k, v, mask, t) {
        return attention::attention(q, k, v, mask, t);
    }
    if attention::decode_applies(q, k, v, mask, t) {
        return attention::decode(q, k, v, mask);
    }
    attend_unfused(q, k, &v.contiguous()?, mask)
}

/// [`attend`] as matmuls and a softmax: the CUDA, non-f32 and decode path.
pub fn attend_unfused(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let scores = q.matmul(&k.t()?)?.to_dtype(DType::F32)?;
    let p = match mask {
        Some(m) => super::ops::masked_softmax(&scores, m)?,
        None => super::ops::softmax_last_dim(&scores)?,
    };
    Ok(p.matmul(v)?)
}

#[derive(Debug, Clone)]
pub struct Block {
    pub attn_norm: RmsNorm,
    pub attn: Attention,
    pub post_attn_norm: Option<RmsNorm>,
    pub mlp_norm: RmsNorm,
    pub mlp: Mlp,
    pub post_mlp_norm: Option<RmsNorm>,
    pub sliding: bool,
    /// PAT's sparsification modules on the attention's and the FFN's outputs.
    pub hsm: Option<std::sync::Arc<super::hsm::BlockHsm>>,
}

impl Block {
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTable,
        mask: Option<&Tensor>,
        cache: Option<&mut candle_nn::kv_cache::KvCache>,
        starts: Option<&[usize]>,
        prefix_kv: Option<(&Tensor, &Tensor)>,
    ) -> Result<Tensor> {
        let h = self.attn.forward(&self.attn_norm.forward(x)?, rope, mask, cache, starts, prefix_kv)?;
        let mut h = maybe_norm(&self.post_attn_norm, h)?;
        if let Some(s) = &self.hsm {
            h = s.attn.forward(&h)?;
        }
        let x = (x + h)?;
        let h = self.mlp.forward(&self.mlp_norm.forward(&x)?)?;
        let mut h = maybe_norm(&self.post_mlp_norm, h)?;
        if let Some(s) = &self.hsm {
            h = s.mlp.forward(&h)?;
        }
        Ok((x + h)?)
    }
}

/// GGUF stems (under `blk.N.`) of a block's projections, in [`Block::projections`]
/// order; each family's `layer_names` maps them to Hugging Face names.
pub const PROJECTIONS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

/// GGUF stems of a block's norms, in [`Block::norms`] order.
pub const NORMS: [&str; 6] = ["attn_norm", "ffn_norm", "post_attention_norm", "post_ffw_norm", "attn_q_norm", "attn_k_norm"];

impl Block {
    pub fn projections(&self) -> [&Linear; 7] {
        let (a, m) = (&self.attn, &self.mlp);
        [&a.q, &a.k, &a.v, &a.o, &m.gate, &m.up, &m.down]
    }

    pub fn projections_mut(&mut self) -> [&mut Linear; 7] {
        self.weights_mut().0
    }

    /// The norms this family has (None where it has not that one).
    pub fn norms(&self) -> [Option<&RmsNorm>; 6] {
        let a = &self.attn;
        [Some(&self.attn_norm), Some(&self.mlp_norm), self.post_attn_norm.as_ref(), self.post_mlp_norm.as_ref(), a.q_norm.as_ref(), a.k_norm.as_ref()]
    }

    /// Projections and norms, both mutable at once.
    pub fn weights_mut(&mut self) -> ([&mut Linear; 7], [Option<&mut RmsNorm>; 6]) {
        let (a, m) = (&mut self.attn, &mut self.mlp);
        let norms = [Some(&mut self.attn_norm), Some(&mut self.mlp_norm), self.post_attn_norm.as_mut(), self.post_mlp_norm.as_mut(), a.q_norm.as_mut(), a.k_norm.as_mut()];
        ([&mut a.q, &mut a.k, &mut a.v, &mut a.o, &mut m.gate, &mut m.up, &mut m.down], norms)
    }

    /// The trainable tensors of this block: its adapters', and its own weights when they
    /// are variables (full tuning).
    pub fn trainable_params(&self) -> Vec<Tensor> {
        let linears = self.projections();
        let mut out: Vec<Tensor> = linears.iter().filter_map(|l| l.adapter.as_ref()).flat_map(|d| d.params()).collect();
        for l in linears {
            if let super::linear::LinearWeight::Dense(w) = &l.weight {
                out.extend(w.track_op().then(|| w.clone()));
            }
        }
        out.extend(self.norms().into_iter().flatten().filter(|n| n.weight.track_op()).map(|n| n.weight.clone()));
        if let Some(s) = &self.hsm {
            // The shared mask once, though both modules read it.
            for t in s.attn.tensors().into_iter().chain(s.mlp.tensors()) {
                if !out.iter().any(|o| o.id() == t.id()) {
                    out.push(t);
                }
            }
        }
        out
    }
}

fn maybe_norm(n: &Option<RmsNorm>, x: Tensor) -> Result<Tensor> {
    match n {
        Some(n) => n.forward(&x),
        None => Ok(x),
    }
}

pub fn new_attention(c: &ModelConfig, q: Linear, k: Linear, v: Linear, o: Linear, qn: Option<RmsNorm>, kn: Option<RmsNorm>) -> Attention {
    Attention { q, k, v, o, q_norm: qn, k_norm: kn, heads: c.num_heads, kv_heads: c.num_kv_heads, head_dim: c.head_dim, scale: c.attn_scale, rope_style: c.rope_style }
}
