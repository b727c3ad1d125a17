//! LoRA fused with its frozen projection: `y = x W^T + s (x A^T) B^T` as one op.
//!
//! Composed from candle ops, a LoRA projection kept four output-sized tensors alive for
//! the backward pass (the base output, `(x A^T) B^T`, its scaled copy and the sum) and
//! made two extra passes over them; this op keeps only `x A^T` (`rows x r`) and writes the
//! adapter's product into the base output in place (the GEMM accumulates). The backward:
//! `dB = s g^T (x A^T)`, `dA = s (g B)^T x`, `dx = g W + s (g B) A`.
use crate::model::kernels::gemm::{self, tensor::matmul, MatRef};
use crate::model::linear::{Linear, LinearWeight};
use crate::Result;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use std::sync::Mutex;

/// `base(x) + s (x A^T) B^T` for `x (rows, in)`; None where the fused op does not apply
/// (off the CPU, a trained base weight, a bias, non-f32 activations).
pub fn fused(base: &Linear, a: &Tensor, b: &Tensor, scale: f64, x: &Tensor) -> Result<Option<Tensor>> {
    let frozen = !matches!(&base.weight, LinearWeight::Dense(w) if w.track_op());
    if !x.device().is_cpu() || !frozen || base.bias.is_some() || x.dtype() != candle_core::DType::F32 || a.dtype() != candle_core::DType::F32 {
        return Ok(None);
    }
    let dims = x.dims().to_vec();
    let in_f = dims[dims.len() - 1];
    let x2 = x.reshape(((), in_f))?.contiguous()?;
    let op = LoraLinear { base: Linear { weight: base.weight.clone(), bias: None, adapter: None }, scale: scale as f32, xa: Mutex::new(None) };
    let y = x2.apply_op3(&a.contiguous()?, &b.contiguous()?, op)?;
    let mut shape = dims;
    *shape.last_mut().expect("rank >= 1") = b.dim(0)?;
    Ok(Some(y.reshape(shape)?))
}

struct LoraLinear {
    base: Linear,
    scale: f32,
    /// `x A^T` from the forward pass, for the backward.
    xa: Mutex<Option<Tensor>>,
}

fn f32s<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("lora: inputs must be contiguous"),
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "instill-lora-linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let wrap = candle_core::Error::wrap;
        let (x, a, b) = (f32s(s1, l1)?, f32s(s2, l2)?, f32s(s3, l3)?);
        let (rows, in_f) = l1.shape().dims2()?;
        let (r, out_f) = (l2.dims()[0], l3.dims()[0]);
        let xt = Tensor::from_slice(x, (rows, in_f), &candle_core::Device::Cpu)?;
        let y = self.base.forward_plain(&xt).map_err(wrap)?;
        let mut y = y.flatten_all()?.to_vec1::<f32>()?;
        // xa = x A^T, then y += (s xa) B^T.
        let mut xa = vec![0f32; rows * r];
        gemm::sgemm(rows, r, in_f, MatRef::new(x, in_f, 1), MatRef::new(a, 1, in_f), &mut xa, r, false);
        let xs: Vec<f32> = xa.iter().map(|v| v * self.scale).collect();
        gemm::sgemm(rows, out_f, r, MatRef::new(&xs[..], r, 1), MatRef::new(b, 1, r), &mut y, out_f, true);
        *self.xa.lock().expect("lora xa") = Some(Tensor::from_vec(xa, (rows, r), &candle_core::Device::Cpu)?);
        Ok((CpuStorage::F32(y), Shape::from((rows, out_f))))
    }

    fn bwd(&self, x: &Tensor, a: &Tensor, b: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let wrap = candle_core::Error::wrap;
        let s = self.scale as f64;
        let xa = self.xa.lock().expect("lora xa").clone().ok_or_else(|| candle_core::Error::Msg("lora: backward before forward".into()))?;
        // The products below must not build a graph: one holding `g` would keep every
        // projection's upstream gradient alive in A's and B's gradients until the step ends.
        let want_x = x.track_op();
        let (x, a, b, g) = (x.detach(), a.detach(), b.detach(), g.detach().contiguous()?);
        let gb = (matmul(&g.t()?, &xa).map_err(wrap)? * s)?;
        let gxa = (matmul(&g, &b).map_err(wrap)? * s)?; // (rows, r), scaled
        let ga = matmul(&gxa.t()?, &x).map_err(wrap)?;
        let gx = if want_x {
            let w = match &self.base.weight {
                LinearWeight::Dense(w) => w.clone(),
                LinearWeight::Quant(..) => self.base.dense_weight().map_err(wrap)?,
            };
            let p = crate::model::linear::precision(w.dtype());
            let base = gemm::tensor::matmul_with(&g, &w, p).map_err(wrap)?;
            Some((base + matmul(&gxa, &a).map_err(wrap)?)?)
        } else {
            None
        };
        Ok((gx, Some(ga), Some(gb)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn gradients_match_the_composed_ops_and_carry_no_graph() {
        let dev = Device::Cpu;
        let randn = |shape: (usize, usize)| Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
        let base = Linear::dense(randn((24, 40)), None);
        let (a, b) = (Var::from_tensor(&randn((4, 40))).unwrap(), Var::from_tensor(&randn((24, 4))).unwrap());
        let x = Var::from_tensor(&randn((13, 40))).unwrap();
        let y = fused(&base, a.as_tensor(), b.as_tensor(), 0.5, x.as_tensor()).unwrap().expect("the fused op applies");
        let w = match &base.weight {
            LinearWeight::Dense(w) => w.clone(),
            _ => unreachable!(),
        };
        let want = (x.as_tensor().matmul(&w.t().unwrap()).unwrap() + (x.as_tensor().matmul(&a.as_tensor().t().unwrap()).unwrap().matmul(&b.as_tensor().t().unwrap()).unwrap() * 0.5).unwrap()).unwrap();
        let gy = randn((13, 24));
        let grads = (&y * &gy).unwrap().sum_all().unwrap().backward().unwrap();
        let grads_want = (&want * &gy).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [x.as_tensor(), a.as_tensor(), b.as_tensor()] {
            let (g, gw) = (grads.get(v).unwrap(), grads_want.get(v).unwrap());
            let diff = (g - gw).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "gradient differs by {diff}");
            // A gradient holding a graph kept every projection's upstream gradient alive
            // until the step ended (640 MB for SmolLM2 at 4 x 256 tokens).
            assert!(!g.track_op(), "a gradient carries a graph");
        }
    }
}
