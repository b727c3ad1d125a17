//! The cross-entropy of a frozen output weight over slices of the vocabulary. Each
//! slice's rows are made f32 once per call (a quantized or tied embedding is dequantized
//! slice by slice, never whole: gemma3's 262,144 x 640 would be 671 MB), every row's
//! logits against the slice are formed, and an online softmax (a running max and sum, as
//! flash attention keeps) accumulates the loss and the gradient `softmax(h W^T) W` as it
//! goes. One pass over the vocabulary, with the same two products per logit as the
//! row-chunked [`super::loss::cross_entropy`], which it equals to rounding.
use super::loss::{CrossEntropy, OnlyH};
use crate::model::kernels::gemm::{sgemm, MatRef};
use crate::model::linear::Linear;
use crate::Result;
use candle_core::Tensor;
use rayon::prelude::*;

/// Vocabulary rows per slice: 8,192 x 640 f32 is 21 MB.
const SLICE: usize = 8192;
/// Hidden rows per product: the logits of 256 x 8,192 are 8 MB.
const ROWS: usize = 256;

/// Per-row `-log softmax(h W^T)[target]`, `(N,)`, differentiable in `h` (W is frozen).
pub fn cross_entropy(h: &Tensor, w: &Linear, targets: &[u32]) -> Result<Tensor> {
    cross_entropy_by(h, w, targets, SLICE)
}

/// One row's running softmax: max logit so far, sum of `exp(logit - max)`, its target's
/// logit.
#[derive(Clone, Copy)]
struct Row {
    max: f32,
    sum: f64,
    target: f32,
}

/// [`cross_entropy`] with `slice` vocabulary rows per slice.
pub(crate) fn cross_entropy_by(h: &Tensor, w: &Linear, targets: &[u32], slice: usize) -> Result<Tensor> {
    let (vocab, d) = w.shape()?;
    let n = targets.len();
    if let Some(t) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(crate::Error::Input(format!("cross-entropy: target token {t} is outside the vocabulary of {vocab}")));
    }
    let hv = h.detach().contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let want_h = h.track_op();
    let mut rows = vec![Row { max: f32::NEG_INFINITY, sum: 0.0, target: 0.0 }; n];
    // Sum of exp(logit - max) W_v per row, and each row's target row of W.
    let (mut acc, mut wt) = (vec![0f32; n * d], vec![0f32; n * d]);
    for v0 in (0..vocab).step_by(slice) {
        let v1 = (v0 + slice).min(vocab);
        let ws = w.dense_rows(v0, v1)?;
        for r0 in (0..n).step_by(ROWS) {
            let r1 = (r0 + ROWS).min(n);
            let part = Part { h: &hv[r0 * d..r1 * d], w: &ws, v0, d, targets: &targets[r0..r1], want: want_h };
            part.run(&mut rows[r0..r1], &mut acc[r0 * d..r1 * d], &mut wt[r0 * d..r1 * d]);
        }
    }
    let losses: Vec<f32> = rows.iter().map(|r| (r.max as f64 + r.sum.ln() - r.target as f64) as f32).collect();
    let gh = if want_h {
        // d loss_i / d h_i = softmax_i W - W[target_i].
        acc.par_chunks_mut(d).zip(wt.par_chunks(d)).zip(rows.par_iter()).for_each(|((a, t), r)| {
            let inv = (1.0 / r.sum) as f32;
            a.iter_mut().zip(t).for_each(|(a, t)| *a = *a * inv - t);
        });
        Some(Tensor::from_vec(acc, (n, d), h.device())?)
    } else {
        None
    };
    Ok(h.apply_op1(OnlyH(CrossEntropy { losses, gh, gw: None, inputs: None }))?)
}

/// Some rows of h against one slice of W (`w` holds rows `v0..` of W).
struct Part<'a> {
    h: &'a [f32],
    w: &'a [f32],
    v0: usize,
    d: usize,
    targets: &'a [u32],
    /// Whether the gradient is wanted (else `acc` and `wt` are left as they are).
    want: bool,
}

impl Part<'_> {
    /// Updates the rows' running softmax; when the gradient is wanted, also rescales
    /// each row's sum of `exp(logit - max) W_v` to the new max and adds this slice's.
    fn run(&self, rows: &mut [Row], acc: &mut [f32], wt: &mut [f32]) {
        let (m, d, s) = (self.targets.len(), self.d, self.w.len() / self.d);
        let mut l = vec![0f32; m * s];
        sgemm(m, s, d, MatRef::new(self.h, d, 1), MatRef::new(self.w, 1, d), &mut l, s, false);
        let want = self.want;
        let scales: Vec<f32> = l
            .par_chunks_mut(s)
            .zip(wt.par_chunks_mut(d))
            .zip(rows.par_iter_mut().zip(self.targets.par_iter()))
            .map(|((row, wt), (r, &t))| {
                let new_max = row.iter().copied().fold(r.max, f32::max);
                let scale = (r.max - new_max).exp();
                if let Some(j) = (t as usize).checked_sub(self.v0).filter(|&j| j < s) {
                    r.target = row[j];
                    if want {
                        wt.copy_from_slice(&self.w[j * d..(j + 1) * d]);
                    }
                }
                let mut sum = 0f64;
                for x in row.iter_mut() {
                    *x = (*x - new_max).exp();
                    sum += *x as f64;
                }
                r.sum = r.sum * scale as f64 + sum;
                r.max = new_max;
                scale
            })
            .collect();
        if want {
            acc.par_chunks_mut(d).zip(scales.par_iter()).for_each(|(a, &c)| a.iter_mut().for_each(|x| *x *= c));
            sgemm(m, d, s, MatRef::new(&l, s, 1), MatRef::new(self.w, d, 1), acc, d, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{DType, Device, Var};

    fn random(shape: (usize, usize), seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let v: Vec<f32> = (0..shape.0 * shape.1).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Losses and gradients of the sliced path against the row-chunked one on the same
    /// f32 weight; several slices (with a partial last one) and several row chunks.
    fn check(w: &Linear, dense: &Tensor, n: usize, slice: usize) {
        let (vocab, d) = dense.dims2().unwrap();
        let targets: Vec<u32> = (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect();
        let h = Var::from_tensor(&(random((n, d), 5) * 2.0).unwrap()).unwrap();
        let a = cross_entropy_by(h.as_tensor(), w, &targets, slice).unwrap();
        let b = super::super::loss::cross_entropy(h.as_tensor(), dense, &targets).unwrap();
        let (la, lb) = (a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
        for (x, y) in la.iter().zip(&lb) {
            assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "loss {x} vs {y}");
        }
        // A non-uniform upstream gradient (as DPO's per-sequence weights give).
        let up = Tensor::from_vec((0..n).map(|i| 0.5 + i as f32 / n as f32).collect::<Vec<_>>(), n, &Device::Cpu).unwrap();
        let ga = (a * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (ga.get(h.as_tensor()).unwrap(), gb.get(h.as_tensor()).unwrap());
        let diff = (ga - gb).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "gradient differs by {diff}");
    }

    #[test]
    fn sliced_vocabulary_matches_row_chunks_on_bf16_and_quantized_weights() {
        let w32 = random((1000, 64), 1);
        // bf16: the dense reference is the bf16 values widened.
        let wb = w32.to_dtype(DType::BF16).unwrap();
        check(&Linear::dense(wb.clone(), None), &wb.to_dtype(DType::F32).unwrap(), 300, 96);
        // Q8_0: the reference is its full dequantization; slices dequantize row ranges.
        let q = std::sync::Arc::new(QTensor::quantize(&w32, GgmlDType::Q8_0).unwrap());
        let dq = crate::model::kernels::dequant::dequantize(&q).unwrap();
        let wq = Linear::quantized(q, None).unwrap();
        assert_eq!(wq.dense_rows(130, 517).unwrap(), dq.narrow(0, 130, 387).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
        check(&wq, &dq, 300, 96);
        check(&wq, &dq, 5, 1000);
    }

    #[test]
    fn a_target_outside_the_vocabulary_is_an_error() {
        let w = Linear::dense(random((10, 8), 2).to_dtype(DType::BF16).unwrap(), None);
        let err = cross_entropy(&random((2, 8), 3), &w, &[1, 10]).unwrap_err().to_string();
        assert!(err.contains("target token 10"), "{err}");
    }
}
