//! Next-token cross-entropy over the trained positions only, in row chunks, so the
//! full `(tokens, vocabulary)` logits never exist at once (SmolLM2's vocabulary is
//! 49,152: 4 x 256 tokens would be 200 MB of logits, twice that with their gradient).
//! Each chunk's gradient is formed while its logits exist, so the backward pass does not
//! go over the vocabulary again.
use crate::data::pack::Rows;
use crate::model::kernels::gemm::tensor::{matmul as gemm, matmul_vec as gemm_vec};
use crate::model::CausalLm;
use crate::Result;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Rows per chunk of logits (128 x 49,152 f32 is 25 MB; 32 and 256 measured no faster).
const CHUNK: usize = 128;

/// Sum of the negative log-likelihoods of every target token in `rows`, and how many
/// targets there were. Divide by the number of targets of the whole (accumulated)
/// batch to get the mean loss transformers reports.
pub fn loss_sum(model: &CausalLm, rows: &Rows) -> Result<(Tensor, usize)> {
    let (b, t) = rows.batch.dims();
    let h = model.final_hidden(&rows.batch)?; // (B, T, D)
                                              // Position i-1 predicts target token i.
    let mut at = vec![];
    let mut targets = vec![];
    for r in 0..b {
        for i in 1..t {
            if rows.targets[r][i] {
                at.push((r * t + i - 1) as u32);
                targets.push(rows.batch.tokens[r][i]);
            }
        }
    }
    let n = targets.len();
    if n == 0 {
        return Ok((Tensor::zeros((), candle_core::DType::F32, &model.device)?, 0));
    }
    let d = h.dim(2)?;
    let idx = Tensor::from_vec(at, n, &model.device)?;
    let h = h.reshape((b * t, d))?.index_select(&idx, 0)?;
    Ok((token_nll(model, &h, &targets)?.sum_all()?, n))
}

/// Per-row `-log softmax(h W^T)[target]` against the model's output projection. A frozen
/// weight stored other than as f32 (quantized, a tied embedding, bf16) goes by slices of
/// the vocabulary ([`super::loss_sliced`]), so its f32 copy never exists whole (gemma3's
/// 262,144 x 640 would be 671 MB); an f32 or trained one takes [`cross_entropy`].
pub fn token_nll(model: &CausalLm, h: &Tensor, targets: &[u32]) -> Result<Tensor> {
    use crate::model::linear::LinearWeight;
    let head = model.output_linear();
    let sliced = h.device().is_cpu()
        && match &head.weight {
            LinearWeight::Dense(w) => !w.track_op() && w.dtype() != candle_core::DType::F32,
            LinearWeight::Quant(..) => true,
        };
    if sliced {
        return super::loss_sliced::cross_entropy(h, head, targets);
    }
    cross_entropy(h, &model.output_weight()?, targets)
}

/// A row of logits becomes its softmax in place; returns the row's log-sum-exp. One f32
/// `exp` per logit, summed in f64.
fn softmax_in_place(row: &mut [f32]) -> f64 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0f64;
    for x in row.iter_mut() {
        *x = (*x - m).exp();
        s += *x as f64;
    }
    let inv = (1.0 / s) as f32;
    row.iter_mut().for_each(|x| *x *= inv);
    m as f64 + s.ln()
}

/// Per-row `-log softmax(h W^T)[target]`, `(N,)`, differentiable in `h` and in `w`
/// (when `w` is trained, e.g. full fine-tuning of tied embeddings).
pub fn cross_entropy(h: &Tensor, w: &Tensor, targets: &[u32]) -> Result<Tensor> {
    if !h.device().is_cpu() {
        // On a GPU the logits fit; candle differentiates the composed ops.
        let logp = candle_nn::ops::log_softmax(&h.matmul(&w.t()?)?, candle_core::D::Minus1)?;
        let idx = Tensor::from_slice(targets, (targets.len(), 1), h.device())?;
        return Ok(logp.gather(&idx, 1)?.squeeze(1)?.neg()?);
    }
    let hd = h.detach();
    let wd = w.detach();
    let (want_h, want_w) = (h.track_op(), w.track_op());
    let mut losses = Vec::with_capacity(targets.len());
    let (mut gh, mut gw): (Vec<Tensor>, Option<Tensor>) = (vec![], None);
    for (c, tg) in targets.chunks(CHUNK).enumerate() {
        let hc = hd.narrow(0, c * CHUNK, tg.len())?;
        let v = wd.dim(0)?;
        let mut p = gemm_vec(&hc, &wd.t()?)?;
        // Per row: the loss, then softmax - onehot in place (the gradient of the loss with
        // respect to the logits, before the upstream factor), all rows in parallel.
        let chunk_losses: Vec<f32> = p
            .par_chunks_mut(v)
            .zip(tg.par_iter())
            .map(|(row, &t)| {
                let target = row[t as usize] as f64;
                let loss = (softmax_in_place(row) - target) as f32;
                row[t as usize] -= 1.0;
                loss
            })
            .collect();
        losses.extend(chunk_losses);
        if want_h || want_w {
            let p = Tensor::from_vec(p, (tg.len(), v), hd.device())?;
            if want_h {
                gh.push(gemm(&p, &wd)?);
            }
            if want_w {
                let d = gemm(&p.t()?, &hc)?;
                gw = Some(match gw {
                    Some(acc) => (acc + d)?,
                    None => d,
                });
            }
        }
    }
    let gh = if gh.is_empty() { None } else { Some(Tensor::cat(&gh, 0)?) };
    let inputs = want_w.then(|| (hd.clone(), wd.clone(), targets.to_vec()));
    let op = CrossEntropy { losses, gh, gw, inputs };
    if !want_w {
        // A frozen output weight (LoRA, QLoRA) is not kept alive by the graph: on a quantized
        // or tied embedding it is a dequantized copy (671 MB for gemma3's vocabulary).
        return Ok(h.apply_op1(OnlyH(op))?);
    }
    Ok(h.apply_op2(w, op)?)
}

/// The losses, and their gradients for an upstream gradient of 1 per row, computed in
/// the forward pass while each chunk's logits exist: the backward pass only scales them
/// (no second pass over the vocabulary).
pub(super) struct CrossEntropy {
    pub(super) losses: Vec<f32>,
    pub(super) gh: Option<Tensor>,
    pub(super) gw: Option<Tensor>,
    /// (h, w, targets), kept when `w` is trained: rows weighted unequally (sequence-level
    /// objectives such as DPO) need the softmax again for `w`'s gradient.
    pub(super) inputs: Option<(Tensor, Tensor, Vec<u32>)>,
}

/// `sum_i g_i (softmax_i - onehot_i)^T h_i`, the logits recomputed chunk by chunk.
fn weighted_w_grad(h: &Tensor, w: &Tensor, targets: &[u32], g: &[f32]) -> candle_core::Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for (c, tg) in targets.chunks(CHUNK).enumerate() {
        let hc = h.narrow(0, c * CHUNK, tg.len())?;
        let v = w.dim(0)?;
        let mut p = gemm_vec(&hc, &w.t()?).map_err(candle_core::Error::wrap)?;
        let gc = &g[c * CHUNK..c * CHUNK + tg.len()];
        p.par_chunks_mut(v).zip(tg.par_iter().zip(gc.par_iter())).for_each(|(row, (&t, &gi))| {
            softmax_in_place(row);
            row[t as usize] -= 1.0;
            row.iter_mut().for_each(|x| *x *= gi);
        });
        let d = gemm(&Tensor::from_vec(p, (tg.len(), v), h.device())?.t()?, &hc).map_err(candle_core::Error::wrap)?;
        acc = Some(match acc {
            Some(a) => (a + d)?,
            None => d,
        });
    }
    acc.ok_or_else(|| candle_core::Error::Msg("cross-entropy: no rows".into()))
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "instill-chunked-cross-entropy"
    }

    /// The losses were computed (chunk by chunk) before the op was built.
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(self.losses.clone()), Shape::from(self.losses.len())))
    }

    /// d loss_i / d h_i = g_i (softmax_i - onehot_i) W; d loss / d W = sum_i g_i (softmax_i - onehot_i)^T h_i.
    fn bwd(&self, _h: &Tensor, _w: &Tensor, _out: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let gh = match &self.gh {
            Some(gh) => Some(gh.broadcast_mul(&g.unsqueeze(1)?)?),
            None => None,
        };
        let gw = match (&self.gw, &self.inputs) {
            (Some(gw), Some((h, w, targets))) => {
                // Rows share one upstream factor when the loss is a (scaled) sum of them
                // (supervised fine-tuning): the gradient formed in the forward pass, scaled.
                let gv = g.to_vec1::<f32>()?;
                if gv.iter().all(|&x| x == gv[0]) {
                    Some((gw * gv[0] as f64)?)
                } else {
                    Some(weighted_w_grad(h, w, targets, &gv)?)
                }
            }
            _ => None,
        };
        Ok((gh, gw))
    }
}

/// [`CrossEntropy`] with a frozen output weight: an op of `h` alone.
pub(super) struct OnlyH(pub(super) CrossEntropy);

impl candle_core::CustomOp1 for OnlyH {
    fn name(&self) -> &'static str {
        "instill-cross-entropy-h"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(self.0.losses.clone()), Shape::from(self.0.losses.len())))
    }

    fn bwd(&self, h: &Tensor, out: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(self.0.bwd(h, h, out, g)?.0)
    }
}
