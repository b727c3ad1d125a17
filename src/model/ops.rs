//! Fused ops with hand-written backward passes, used by inference and training alike.
//!
//! candle's fused `rms_norm`, `softmax_last_dim` and `rope` return no gradient, and a
//! plain matmul against a frozen weight also computes (and keeps) that weight's gradient.
//! These custom ops run one pass over the data forward and give exactly the gradients
//! training needs. Off the CPU (CUDA) they fall back to candle's composed ops, which
//! autograd differentiates.
use super::config::{Activation, RopeStyle};
use super::linear::Linear;
use crate::Result;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Storage, Tensor, D};
use rayon::prelude::*;

/// The contiguous f32 data of an op's input.
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("fused op: input must be contiguous"),
    }
}

/// The contiguous f32 data of a tensor's storage (a backward pass's inputs).
pub(crate) fn cpu_data<'a>(s: &'a Storage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match s {
        Storage::Cpu(c) => slice(c, l),
        _ => candle_core::bail!("fused op: expected CPU storage"),
    }
}

/// Rows of `n` elements processed in parallel, `f(row_in, row_out)`.
fn rows(x: &[f32], n: usize, f: impl Fn(usize, &[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(n).zip(x.par_chunks(n)).enumerate().with_min_len(16).for_each(|(i, (o, r))| f(i, r, o));
    out
}

// ---------- RMSNorm ----------

struct RmsNormOp {
    eps: f32,
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "instill-rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1)?, slice(s2, l2)?);
        let n = w.len();
        let y = rows(x, n, |_, r, o| {
            let ms = r.iter().map(|v| v * v).sum::<f32>() / n as f32;
            let inv = 1.0 / (ms + self.eps).sqrt();
            for ((o, v), w) in o.iter_mut().zip(r).zip(w) {
                *o = v * inv * w;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (x, g) = (x.contiguous()?, g.contiguous()?);
        let guards = [&x, w, &g].map(|t| t.storage_and_layout());
        let [xs, ws, gs] = [0, 1, 2].map(|i| cpu_data(&guards[i].0, guards[i].1));
        let (dx, dw) = rms_norm_backward(xs?, ws?, gs?, self.eps, w.track_op());
        let dev = x.device();
        Ok((Some(Tensor::from_vec(dx, x.shape(), dev)?), dw.map(|d| Tensor::from_vec(d, w.shape(), dev)).transpose()?))
    }
}

/// RMSNorm's gradients in one pass over the rows: for `y = w * x * r`, `r = (mean(x^2) +
/// eps)^-1/2`, `dx = r * (g*w) - x * r^3 * mean(g*w*x)` and (when `want_dw`) `dw = sum over
/// rows of g * x * r`, summed per chunk of rows and then over the chunks.
fn rms_norm_backward(x: &[f32], w: &[f32], g: &[f32], eps: f32, want_dw: bool) -> (Vec<f32>, Option<Vec<f32>>) {
    let n = w.len();
    let mut dx = vec![0f32; x.len()];
    const ROWS: usize = 16;
    let partial: Vec<Vec<f32>> = dx
        .par_chunks_mut(n * ROWS)
        .zip(x.par_chunks(n * ROWS).zip(g.par_chunks(n * ROWS)))
        .map(|(dxc, (xc, gc))| {
            let mut dw = vec![0f32; if want_dw { n } else { 0 }];
            for ((d, xr), gr) in dxc.chunks_mut(n).zip(xc.chunks(n)).zip(gc.chunks(n)) {
                let r = 1.0 / (xr.iter().map(|v| v * v).sum::<f32>() / n as f32 + eps).sqrt();
                let dot = xr.iter().zip(gr).zip(w).map(|((x, g), w)| g * w * x).sum::<f32>() / n as f32;
                let c = r * r * r * dot;
                for (((d, x), g), w) in d.iter_mut().zip(xr).zip(gr).zip(w) {
                    *d = r * g * w - x * c;
                }
                for ((a, x), g) in dw.iter_mut().zip(xr).zip(gr) {
                    *a += g * x * r;
                }
            }
            dw
        })
        .collect();
    let dw = want_dw.then(|| {
        let mut acc = vec![0f32; n];
        for p in &partial {
            acc.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
        acc
    });
    (dx, dw)
}

/// `x * rsqrt(mean(x^2) + eps) * w` over the last dimension.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.contiguous()?;
    if !x.device().is_cpu() {
        return Ok(candle_nn::ops::rms_norm_slow(&x, w, eps as f32)?);
    }
    Ok(x.apply_op2_no_bwd_if(w, RmsNormOp { eps: eps as f32 })?)
}

// ---------- gated activation: act(gate) * up ----------

/// `act(gate) * up` (SwiGLU, GeGLU) in one pass forward, and both gradients in one pass
/// backward, where candle's composed ops make ten passes and keep `act(gate)`. The forward
/// computes exactly candle's `silu`/`gelu` then `*`, so inference is bit-for-bit unchanged.
struct GluOp {
    act: Activation,
}

/// Elements per parallel chunk of the elementwise ops.
const CHUNK: usize = 4096;

/// candle's `silu` and tanh-`gelu` of one value, with the same operations in the same order.
#[inline(always)]
fn act_f(act: Activation, v: f32) -> f32 {
    match act {
        Activation::Silu => v / (1.0 + (-v).exp()),
        Activation::GeluTanh => 0.5 * v * (1.0 + f32::tanh(GELU_C * v * (1.0 + 0.044715 * v * v))),
    }
}

/// sqrt(2 / pi), as candle's gelu has it.
const GELU_C: f32 = 0.797_884_6;

/// `(act(v), act'(v))`.
#[inline(always)]
fn act_and_grad(act: Activation, v: f32) -> (f32, f32) {
    match act {
        Activation::Silu => {
            let s = 1.0 / (1.0 + (-v).exp());
            (v * s, s * (1.0 + v * (1.0 - s)))
        }
        Activation::GeluTanh => {
            let t = f32::tanh(GELU_C * v * (1.0 + 0.044715 * v * v));
            (0.5 * v * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * 0.044715 * v * v))
        }
    }
}

impl CustomOp2 for GluOp {
    fn name(&self) -> &'static str {
        "instill-glu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, u) = (slice(s1, l1)?, slice(s2, l2)?);
        if l1.shape() != l2.shape() {
            candle_core::bail!("glu: gate {:?} and up {:?} differ in shape", l1.shape(), l2.shape());
        }
        let mut y = vec![0f32; g.len()];
        y.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK))).for_each(|(y, (g, u))| {
            for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
                *y = act_f(self.act, g) * u;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, g: &Tensor, u: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let guards = [g, u, &dy].map(|t| t.storage_and_layout());
        let [gs, us, ds] = [0, 1, 2].map(|i| cpu_data(&guards[i].0, guards[i].1));
        let (gs, us, ds) = (gs?, us?, ds?);
        let (mut dg, mut du) = (vec![0f32; gs.len()], vec![0f32; gs.len()]);
        let outs = dg.par_chunks_mut(CHUNK).zip(du.par_chunks_mut(CHUNK));
        outs.zip(gs.par_chunks(CHUNK).zip(us.par_chunks(CHUNK)).zip(ds.par_chunks(CHUNK))).for_each(|((dg, du), ((g, u), d))| {
            for i in 0..g.len() {
                let (a, da) = act_and_grad(self.act, g[i]);
                du[i] = d[i] * a;
                dg[i] = d[i] * u[i] * da;
            }
        });
        let dev = g.device();
        let grad = |x: &Tensor, d: Vec<f32>| x.track_op().then(|| Tensor::from_vec(d, x.shape(), dev)).transpose();
        Ok((grad(g, dg)?, grad(u, du)?))
    }
}

/// `act(gate) * up`: one fused op on the CPU, candle's ops elsewhere.
pub fn glu(gate: &Tensor, up: &Tensor, act: Activation) -> Result<Tensor> {
    if !gate.device().is_cpu() || gate.dtype() != candle_core::DType::F32 || up.dtype() != candle_core::DType::F32 {
        let a = match act {
            Activation::Silu => candle_nn::ops::silu(gate)?,
            Activation::GeluTanh => gate.gelu()?,
        };
        return Ok((a * up)?);
    }
    Ok(gate.contiguous()?.apply_op2_no_bwd_if(&up.contiguous()?, GluOp { act })?)
}

// ---------- softmax over the last dimension ----------

/// Softmax over the last dimension, optionally of the input plus an additive attention
/// mask (added in the same pass, so no masked copy is made or kept for backward).
struct SoftmaxOp {
    mask: Option<RowMask>,
}

/// A mask `(B, T, S)` (flattened) for score rows `(B, KV heads x R x T, S)`.
struct RowMask {
    mask: Vec<f32>,
    /// Score rows per batch row: `KV heads x R x T`.
    rows_per_batch: usize,
    t: usize,
}

impl RowMask {
    /// The mask row of score row `row`: query `row % t` of batch row `row / rows_per_batch`.
    fn row(&self, row: usize, n: usize) -> &[f32] {
        let at = ((row / self.rows_per_batch) * self.t + row % self.t) * n;
        &self.mask[at..at + n]
    }
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "instill-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let n = *l.dims().last().expect("rank >= 1");
        let y = rows(x, n, |row, r, o| {
            match &self.mask {
                Some(m) => o.iter_mut().zip(r).zip(m.row(row, n)).for_each(|((o, v), mv)| *o = v + mv),
                None => o.copy_from_slice(r),
            }
            let mx = o.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for o in o.iter_mut() {
                *o = (*o - mx).exp();
                sum += *o;
            }
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|v| *v *= inv);
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, p: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // dx = p * (g - sum(g * p)); the mask is a constant.
        let dot = (g * p)?.sum_keepdim(D::Minus1)?;
        Ok(Some((p * g.broadcast_sub(&dot)?)?))
    }
}

pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    if !x.device().is_cpu() {
        return Ok(candle_nn::ops::softmax(&x, D::Minus1)?);
    }
    Ok(x.apply_op1_no_bwd_if(SoftmaxOp { mask: None })?)
}

/// `softmax(scores + mask)` over the last dimension for attention scores
/// `(B, KV, R*T, S)` and a mask `(B, 1, T, S)` shared by every head.
pub fn masked_softmax(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, kv, rt, s) = scores.dims4()?;
    let t = mask.dim(2)?;
    if !scores.device().is_cpu() || rt % t != 0 {
        let x = scores.reshape((b, kv, rt / t.max(1), t, s))?.broadcast_add(&mask.unsqueeze(1)?)?.reshape((b, kv, rt, s))?;
        return softmax_last_dim(&x);
    }
    let mask = RowMask { mask: mask.flatten_all()?.to_vec1::<f32>()?, rows_per_batch: kv * rt, t };
    Ok(scores.contiguous()?.apply_op1_no_bwd_if(SoftmaxOp { mask: Some(mask) })?)
}

// ---------- rotary embeddings ----------

/// Rotation, scale and (optionally) the move to heads-first order in one pass.
struct RopeOp {
    cos: Tensor,
    sin: Tensor,
    style: RopeStyle,
    /// Rotate the other way (the backward pass of a rotation).
    inverse: bool,
    /// Multiplies the rotated values (the attention scale, folded into the queries).
    scale: f32,
    /// Forward: input `(B, T, H, D)`, output `(B, H, T, D)`; inverse: the other way round.
    /// Otherwise both are `(B, H, T, D)`.
    transpose: bool,
}

impl RopeOp {
    /// `(B, H, T, D)` of the heads-first side, from the input's dims.
    fn heads_first_dims(&self, l: &Layout) -> candle_core::Result<(usize, usize, usize, usize)> {
        let (b, x1, x2, d) = l.shape().dims4()?;
        Ok(if self.transpose && !self.inverse { (b, x2, x1, d) } else { (b, x1, x2, d) })
    }
}

impl CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "instill-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let (_, h, t, d) = self.heads_first_dims(l)?;
        let cos = self.cos.flatten_all()?.to_vec1::<f32>()?;
        let sin = self.sin.flatten_all()?.to_vec1::<f32>()?;
        let half = d / 2;
        let sign = if self.inverse { -1.0 } else { 1.0 };
        // Row `(b, h, t)` of the heads-first side is row `(b, t, h)` of the other.
        let other = |bi: usize, hi: usize, ti: usize| if self.transpose { (bi * t + ti) * h + hi } else { (bi * h + hi) * t + ti };
        let heads_out = !(self.transpose && self.inverse);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d).enumerate().with_min_len(16).for_each(|(row, o)| {
            // The heads-first coordinates of this output row, and the input row it reads.
            let (bi, hi, ti) = if heads_out { (row / (h * t), (row / t) % h, row % t) } else { (row / (t * h), row % h, (row / h) % t) };
            let src = if heads_out { other(bi, hi, ti) } else { (bi * h + hi) * t + ti };
            let r = &x[src * d..(src + 1) * d];
            let at = (bi * t + ti) * half;
            let (c, s) = (&cos[at..at + half], &sin[at..at + half]);
            for i in 0..half {
                let (ia, ib) = match self.style {
                    RopeStyle::Halves => (i, i + half),
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                };
                let (x0, x1, sn) = (r[ia], r[ib], sign * s[i]);
                o[ia] = (x0 * c[i] - x1 * sn) * self.scale;
                o[ib] = (x0 * sn + x1 * c[i]) * self.scale;
            }
        });
        let dims = l.shape().dims();
        let shape = if self.transpose { Shape::from((dims[0], dims[2], dims[1], dims[3])) } else { l.shape().clone() };
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let inv = RopeOp { cos: self.cos.clone(), sin: self.sin.clone(), inverse: !self.inverse, ..*self };
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(&inv)?))
    }
}

/// Rotate `x (B, H, T, D)` by `cos, sin (B, T, D/2)`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, style: RopeStyle) -> Result<Tensor> {
    let x = x.contiguous()?;
    if !x.device().is_cpu() {
        return rope_slow(&x, cos, sin, style);
    }
    let op = RopeOp { cos: cos.clone(), sin: sin.clone(), style, inverse: false, scale: 1.0, transpose: false };
    Ok(x.apply_op1_no_bwd_if(op)?)
}

/// `x (B, T, H, D)` rotated by `cos, sin (B, T, D/2)`, times `scale`, as `(B, H, T, D)`:
/// the queries' and keys' way into attention, one pass forward and one backward.
pub fn rope_heads_first(x: &Tensor, cos: &Tensor, sin: &Tensor, style: RopeStyle, scale: f64) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        return Ok((rope_slow(&x.transpose(1, 2)?.contiguous()?, cos, sin, style)? * scale)?);
    }
    let op = RopeOp { cos: cos.clone(), sin: sin.clone(), style, inverse: false, scale: scale as f32, transpose: true };
    Ok(x.contiguous()?.apply_op1_no_bwd_if(op)?)
}

fn rope_slow(x: &Tensor, cos: &Tensor, sin: &Tensor, style: RopeStyle) -> Result<Tensor> {
    Ok(match style {
        RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i_slow(x, cos, sin)?,
        RopeStyle::Halves => candle_nn::rotary_emb::rope_slow(x, cos, sin)?,
    })
}

// ---------- projection through a frozen weight ----------

/// `x -> x W^T` where W is frozen: backward gives the input's gradient only (no GEMM
/// and no buffer for the weight's gradient). W may stay quantized (QLoRA).
struct FrozenLinearOp {
    linear: Linear,
}

impl CustomOp1 for FrozenLinearOp {
    fn name(&self) -> &'static str {
        "instill-frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = Tensor::from_slice(slice(s, l)?, l.shape(), &candle_core::Device::Cpu)?;
        let y = self.linear.forward_plain(&x).map_err(candle_core::Error::wrap)?;
        let shape = y.shape().clone();
        let (storage, _) = y.storage_and_layout();
        match &*storage {
            candle_core::Storage::Cpu(c) => Ok((c.clone(), shape)),
            _ => candle_core::bail!("frozen linear: expected CPU storage"),
        }
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // A dense weight is read as it is (bf16 too: then the upstream gradient enters as
        // two bf16 parts, as in the forward pass); a quantized one is dequantized (f32).
        use super::kernels::gemm::{tensor::matmul_with, Precision};
        let (w, p) = match &self.linear.weight {
            super::linear::LinearWeight::Dense(w) => (w.clone(), super::linear::precision(w.dtype())),
            _ => (self.linear.dense_weight().map_err(candle_core::Error::wrap)?, Precision::F32),
        };
        let dims = g.dims().to_vec();
        let out_f = dims[dims.len() - 1];
        let gx = matmul_with(&g.reshape(((), out_f))?, &w, p).map_err(candle_core::Error::wrap)?;
        let mut shape = dims;
        *shape.last_mut().expect("rank >= 1") = w.dim(1)?;
        Ok(Some(gx.reshape(shape)?))
    }
}

/// `linear(x)` where only `x` may need a gradient.
pub fn frozen_linear(linear: &Linear, x: &Tensor) -> Result<Tensor> {
    if !x.track_op() {
        return linear.forward_plain(x);
    }
    if !x.device().is_cpu() {
        let w = linear.dense_weight()?.detach();
        return Linear::dense(w, linear.bias.clone()).forward_plain(x);
    }
    let y = x.contiguous()?.apply_op1(FrozenLinearOp { linear: Linear { weight: linear.weight.clone(), bias: None, adapter: None } })?;
    Ok(match &linear.bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// Apply an op, recording it for backprop only when an input needs a gradient.
trait ApplyIf {
    fn apply_op1_no_bwd_if<C: 'static + CustomOp1 + Send + Sync>(&self, c: C) -> candle_core::Result<Tensor>;
    fn apply_op2_no_bwd_if<C: 'static + CustomOp2 + Send + Sync>(&self, rhs: &Tensor, c: C) -> candle_core::Result<Tensor>;
}

impl ApplyIf for Tensor {
    fn apply_op1_no_bwd_if<C: 'static + CustomOp1 + Send + Sync>(&self, c: C) -> candle_core::Result<Tensor> {
        if self.track_op() {
            self.apply_op1(c)
        } else {
            self.apply_op1_no_bwd(&c)
        }
    }

    fn apply_op2_no_bwd_if<C: 'static + CustomOp2 + Send + Sync>(&self, rhs: &Tensor, c: C) -> candle_core::Result<Tensor> {
        if self.track_op() || rhs.track_op() {
            self.apply_op2(rhs, c)
        } else {
            self.apply_op2_no_bwd(rhs, &c)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Numerical gradient of sum(f(x) * probe) against the op's backward.
    pub(crate) fn check_grad(f: impl Fn(&Tensor) -> Tensor, shape: &[usize]) {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1.0, shape, &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, f(x.as_tensor()).shape(), &dev).unwrap();
        let loss = (f(x.as_tensor()) * &probe).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        let gx = g.get(x.as_tensor()).expect("x has a gradient").flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let xs = x.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let eval = |v: &[f32]| -> f64 {
            let t = Tensor::from_slice(v, shape, &dev).unwrap();
            (f(&t) * &probe).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
        };
        for i in (0..xs.len()).step_by(7) {
            let (mut a, mut b) = (xs.clone(), xs.clone());
            a[i] += 1e-2;
            b[i] -= 1e-2;
            let num = (eval(&a) - eval(&b)) / 2e-2;
            assert!((num - gx[i] as f64).abs() < 2e-2 * (1.0 + num.abs()), "element {i}: numeric {num}, backward {}", gx[i]);
        }
    }

    #[test]
    fn fused_ops_match_candle_and_numeric_gradients() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 4, 8), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.1, 8, &dev).unwrap();
        let close = |a: &Tensor, b: &Tensor| assert!(max_abs(a, b) < 1e-5);
        close(&rms_norm(&x, &w, 1e-5).unwrap(), &candle_nn::ops::rms_norm(&x, &w, 1e-5).unwrap());
        close(&softmax_last_dim(&x).unwrap(), &candle_nn::ops::softmax_last_dim(&x).unwrap());
        let cos = Tensor::randn(0f32, 1.0, (2, 4, 4), &dev).unwrap();
        let sin = Tensor::randn(0f32, 1.0, (2, 4, 4), &dev).unwrap();
        close(&rope(&x, &cos, &sin, RopeStyle::Halves).unwrap(), &candle_nn::rotary_emb::rope(&x, &cos, &sin).unwrap());
        close(&rope(&x, &cos, &sin, RopeStyle::Interleaved).unwrap(), &candle_nn::rotary_emb::rope_i(&x, &cos, &sin).unwrap());
        check_grad(|t| rms_norm(t, &w, 1e-5).unwrap(), &[2, 3, 4, 8]);
        check_grad(|t| softmax_last_dim(t).unwrap(), &[2, 3, 4, 8]);
        let (c, s) = ((cos.sqr().unwrap() + sin.sqr().unwrap()).unwrap().sqrt().unwrap(), sin.clone());
        let (c, s) = ((&cos / &c).unwrap(), (&s / &c).unwrap());
        check_grad(|t| rope(t, &c, &s, RopeStyle::Halves).unwrap(), &[2, 3, 4, 8]);
        check_grad(|t| rope(t, &c, &s, RopeStyle::Interleaved).unwrap(), &[2, 3, 4, 8]);
        let lw = Tensor::randn(0f32, 1.0, (5, 8), &dev).unwrap();
        let lin = Linear::dense(lw, None);
        check_grad(|t| frozen_linear(&lin, t).unwrap(), &[2, 3, 4, 8]);
    }

    #[test]
    fn glu_matches_candle_bit_for_bit_and_numeric_gradients() {
        let dev = Device::Cpu;
        let g = Tensor::randn(0f32, 2.0, (3, 5, 7), &dev).unwrap();
        let u = Tensor::randn(0f32, 1.0, (3, 5, 7), &dev).unwrap();
        for act in [Activation::Silu, Activation::GeluTanh] {
            let slow = match act {
                Activation::Silu => candle_nn::ops::silu(&g).unwrap(),
                Activation::GeluTanh => g.gelu().unwrap(),
            };
            let slow = (slow * &u).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let ours = glu(&g, &u, act).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(ours.iter().zip(&slow).all(|(a, b)| a.to_bits() == b.to_bits()), "{act:?}: forward differs from candle's");
            check_grad(|t| glu(t, &u, act).unwrap(), &[3, 5, 7]);
            check_grad(|t| glu(&g, t, act).unwrap(), &[3, 5, 7]);
        }
        // Both gradients at once, against autograd through candle's ops.
        let (gv, uv) = (Var::from_tensor(&g).unwrap(), Var::from_tensor(&u).unwrap());
        let probe = Tensor::randn(0f32, 1.0, (3, 5, 7), &dev).unwrap();
        let ours = (glu(gv.as_tensor(), uv.as_tensor(), Activation::Silu).unwrap() * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let slow = (candle_nn::ops::silu(gv.as_tensor()).unwrap() * uv.as_tensor()).unwrap();
        let slow = (slow * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&gv, &uv] {
            assert!(max_abs(ours.get(v.as_tensor()).unwrap(), slow.get(v.as_tensor()).unwrap()) < 1e-5);
        }
    }

    #[test]
    fn rope_heads_first_is_transpose_rotate_scale() {
        let dev = Device::Cpu;
        let (b, t, h, d) = (2, 5, 3, 8);
        let x = Tensor::randn(0f32, 1.0, (b, t, h, d), &dev).unwrap();
        let cos = Tensor::randn(0f32, 1.0, (b, t, d / 2), &dev).unwrap();
        let sin = Tensor::randn(0f32, 1.0, (b, t, d / 2), &dev).unwrap();
        for style in [RopeStyle::Halves, RopeStyle::Interleaved] {
            let slow = (rope(&x.transpose(1, 2).unwrap(), &cos, &sin, style).unwrap() * 0.125).unwrap();
            let ours = rope_heads_first(&x, &cos, &sin, style, 0.125).unwrap();
            assert_eq!(ours.dims(), &[b, h, t, d]);
            assert_eq!(max_abs(&ours, &slow), 0.0, "{style:?}");
            let norm = (cos.sqr().unwrap() + sin.sqr().unwrap()).unwrap().sqrt().unwrap();
            let (c, s) = ((&cos / &norm).unwrap(), (&sin / &norm).unwrap());
            check_grad(|z| rope_heads_first(z, &c, &s, style, 0.5).unwrap(), &[b, t, h, d]);
        }
    }

    #[test]
    fn masked_softmax_matches_add_then_softmax() {
        let dev = Device::Cpu;
        let (b, kv, r, t, s) = (2, 3, 2, 4, 6);
        let scores = Tensor::randn(0f32, 1.0, (b, kv, r * t, s), &dev).unwrap();
        let m: Vec<f32> = (0..b * t * s).map(|i| if i % 5 == 0 { -1e30 } else { 0.0 }).collect();
        let mask = Tensor::from_vec(m, (b, 1, t, s), &dev).unwrap();
        let slow = |x: &Tensor| {
            let y = x.reshape((b, kv, r, t, s)).unwrap().broadcast_add(&mask.unsqueeze(1).unwrap()).unwrap().reshape((b, kv, r * t, s)).unwrap();
            candle_nn::ops::softmax_last_dim(&y).unwrap()
        };
        assert!(max_abs(&masked_softmax(&scores, &mask).unwrap(), &slow(&scores)) < 1e-6);
        check_grad(|x| masked_softmax(x, &mask).unwrap(), &[b, kv, r * t, s]);
    }

    #[test]
    fn rms_norm_weight_gradient() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 6), &dev).unwrap();
        let w = Var::randn(1f32, 0.1, 6, &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (3, 6), &dev).unwrap();
        let ours = (rms_norm(&x, w.as_tensor(), 1e-5).unwrap() * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let slow = (candle_nn::ops::rms_norm_slow(&x, w.as_tensor(), 1e-5).unwrap() * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_abs(ours.get(w.as_tensor()).unwrap(), slow.get(w.as_tensor()).unwrap()) < 1e-5);
    }
}
