//! candle glue: `matmul(a, b)` over our GEMM, differentiable, reading any strides (a
//! transposed view costs no copy) and a bf16 `b` as it is.
use super::{run, MatRef, Precision};
use crate::Result;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Storage, Tensor};
use half::bf16;

/// `a (..., m, k) @ b (k, n) or (..., k, n)`: our GEMM on the CPU for an f32 `a` and an
/// f32 or bf16 `b`, whatever m (a row's result never depends on how many rows share the
/// product: batch-invariant); candle's matmul otherwise. `precision` picks the kernel (see
/// [`Precision`]; a bf16 one the CPU lacks falls back to f32).
pub fn matmul_with(a: &Tensor, b: &Tensor, precision: Precision) -> Result<Tensor> {
    let (ra, rb) = (a.rank(), b.rank());
    let ours = enabled()
        && a.device().is_cpu()
        && a.dtype() == DType::F32
        && matches!(b.dtype(), DType::F32 | DType::BF16)
        && ra >= 2
        && (rb == 2 || (rb == ra && a.dims()[..ra - 2] == b.dims()[..rb - 2]))
        && a.dim(ra - 1)? == b.dim(rb - 2)?;
    if !ours {
        let b = if b.dtype() != a.dtype() { &b.to_dtype(a.dtype())? } else { b };
        return Ok(if rb == ra { a.matmul(b)? } else { a.broadcast_matmul(b)? });
    }
    let op = MatMul { precision };
    Ok(if a.track_op() || b.track_op() { a.apply_op2(b, op)? } else { a.apply_op2_no_bwd(b, &op)? })
}

/// `INSTILL_GEMM=candle` sends every product to candle's matmul instead (to compare the
/// two in one build).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("INSTILL_GEMM").as_deref() != Ok("candle"))
}

/// [`matmul_with`] in f32.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_with(a, b, Precision::F32)
}

/// [`matmul`] of two matrices, as the row-major data of the product: for callers that
/// rework the product in place (the loss's softmax), without copying it out of a tensor.
pub fn matmul_vec(a: &Tensor, b: &Tensor) -> Result<Vec<f32>> {
    let ours = enabled() && a.device().is_cpu() && b.device().is_cpu() && a.dtype() == DType::F32 && a.rank() == 2 && b.rank() == 2 && a.dim(1)? == b.dim(0)?;
    if ours {
        let ((sa, la), (sb, lb)) = (a.storage_and_layout(), b.storage_and_layout());
        let op = MatMul { precision: Precision::F32 };
        match (&*sa, &*sb) {
            (Storage::Cpu(CpuStorage::F32(x)), Storage::Cpu(CpuStorage::F32(y))) => return Ok(op.gemm(x, la, y, lb)),
            (Storage::Cpu(CpuStorage::F32(x)), Storage::Cpu(CpuStorage::BF16(y))) => return Ok(op.gemm::<bf16>(x, la, y, lb)),
            _ => {}
        }
    }
    Ok(matmul(a, b)?.flatten_all()?.to_vec1::<f32>()?)
}

struct MatMul {
    precision: Precision,
}

/// A matrix operand inside its storage: the offset of each batch's first element, and the
/// strides of its last two dims.
struct Operand {
    offsets: Vec<usize>,
    rs: usize,
    cs: usize,
}

/// Batch offsets of every index over `dims[..rank-2]` (empty batch: one offset).
fn operand(l: &Layout) -> Operand {
    let (dims, st) = (l.dims(), l.stride());
    let r = dims.len();
    let mut offsets = vec![l.start_offset()];
    for d in 0..r - 2 {
        offsets = offsets.iter().flat_map(|&o| (0..dims[d]).map(move |i| o + i * st[d])).collect();
    }
    Operand { offsets, rs: st[r - 2], cs: st[r - 1] }
}

impl MatMul {
    fn gemm<B: super::Elem>(&self, a: &[f32], la: &Layout, b: &[B], lb: &Layout) -> Vec<f32> {
        let (da, db) = (la.dims(), lb.dims());
        let (m, k, n) = (da[da.len() - 2], da[da.len() - 1], db[db.len() - 1]);
        let (oa, ob) = (operand(la), operand(lb));
        let batches = oa.offsets.len();
        let mut out = vec![0f32; batches * m * n];
        let go = |m: usize, a: MatRef<f32>, b: MatRef<B>, c: &mut [f32]| run(m, n, k, a, b, c, n, false, super::isa(), self.precision);
        // A 2-D `b` against batched rows that are evenly spaced: one tall GEMM.
        let evenly = ob.offsets.len() == 1 && oa.offsets.windows(2).all(|w| w[1] - w[0] == m * oa.rs);
        if evenly {
            let a = MatRef::new(&a[oa.offsets[0]..], oa.rs, oa.cs);
            go(batches * m, a, MatRef::new(&b[ob.offsets[0]..], ob.rs, ob.cs), &mut out);
            return out;
        }
        for (i, c) in out.chunks_mut(m * n).enumerate() {
            let bo = ob.offsets[if ob.offsets.len() == 1 { 0 } else { i }];
            go(m, MatRef::new(&a[oa.offsets[i]..], oa.rs, oa.cs), MatRef::new(&b[bo..], ob.rs, ob.cs), c);
        }
        out
    }
}

impl CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        "instill-gemm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let a = s1.as_slice::<f32>()?;
        let out = match s2 {
            CpuStorage::F32(b) => self.gemm(a, l1, b, l2),
            CpuStorage::BF16(b) => self.gemm::<bf16>(a, l1, b, l2),
            _ => candle_core::bail!("gemm: b must be f32 or bf16"),
        };
        let mut shape = l1.dims().to_vec();
        *shape.last_mut().expect("rank >= 2") = l2.dims()[l2.dims().len() - 1];
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }

    /// `da = g b^T`, `db = a^T g` (summed over the batch for a 2-D `b`).
    fn bwd(&self, a: &Tensor, b: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let wrap = candle_core::Error::wrap;
        // Detached operands: a gradient must not carry a graph (one holding `g` would keep
        // the upstream gradient alive in a weight's gradient until the step ends).
        let (want_a, want_b) = (a.track_op(), b.track_op());
        let (a, b, g) = (&a.detach(), &b.detach(), &g.detach());
        let da = if want_a { Some(matmul_with(g, &b.t()?, self.precision).map_err(wrap)?) } else { None };
        let db = if want_b {
            let d = if b.rank() == 2 && a.rank() > 2 {
                let k = a.dim(a.rank() - 1)?;
                let (a2, g2) = (a.reshape(((), k))?, g.reshape(((), g.dim(g.rank() - 1)?))?);
                matmul_with(&a2.t()?, &g2, self.precision).map_err(wrap)?
            } else {
                matmul_with(&a.t()?, g, self.precision).map_err(wrap)?
            };
            Some(d.to_dtype(b.dtype())?)
        } else {
            None
        };
        Ok((da, db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn matches_candle_forward_and_backward() {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 19, 33), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (21, 33), &dev).unwrap()).unwrap();
        // Ours, with b a transposed view (no copy), then candle's.
        let y = matmul(a.as_tensor(), &w.as_tensor().t().unwrap()).unwrap();
        let want = a.as_tensor().broadcast_matmul(&w.as_tensor().t().unwrap()).unwrap();
        assert!(max_diff(&y, &want) < 1e-4);
        let gy = Tensor::randn(0f32, 1.0, y.shape(), &dev).unwrap();
        let grads = (&y * &gy).unwrap().sum_all().unwrap().backward().unwrap();
        let grads_want = (&want * &gy).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [a.as_tensor(), w.as_tensor()] {
            assert!(max_diff(grads.get(v).unwrap(), grads_want.get(v).unwrap()) < 1e-4);
            // A gradient is plain data: one carrying a graph would keep the upstream
            // gradient (and everything it was computed from) alive until the step ends.
            assert!(!grads.get(v).unwrap().track_op(), "a gradient carries a graph");
        }
    }

    #[test]
    fn batched_and_strided_operands() {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (3, 2, 17, 9), &dev).unwrap().transpose(1, 2).unwrap().transpose(1, 2).unwrap();
        let b = Tensor::randn(0f32, 1.0, (3, 2, 11, 9), &dev).unwrap();
        let got = matmul(&a, &b.t().unwrap()).unwrap();
        let want = a.contiguous().unwrap().matmul(&b.t().unwrap().contiguous().unwrap()).unwrap();
        assert!(max_diff(&got, &want) < 1e-4);
        // A bf16 b is read as it is.
        let a2 = Tensor::randn(0f32, 1.0, (40, 64), &dev).unwrap();
        let wb = Tensor::randn(0f32, 1.0, (30, 64), &dev).unwrap().to_dtype(DType::BF16).unwrap();
        let got = matmul(&a2, &wb.t().unwrap()).unwrap();
        let want = a2.matmul(&wb.to_dtype(DType::F32).unwrap().t().unwrap()).unwrap();
        assert!(max_diff(&got, &want) < 1e-4);
    }
}
