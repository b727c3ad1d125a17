//! Next-token cross-entropy over the trained positions only, in row chunks, so the
//! full `(tokens, vocabulary)` logits never exist at once (SmolLM2's vocabulary is
//! 49,152: 4 x 256 tokens would be 200 MB of logits, twice that with their gradient).
use crate::data::pack::Rows;
use crate::model::CausalLm;
use crate::Result;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

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
    let w = model.output_weight()?;
    Ok((cross_entropy(&h, &w, &targets)?.sum_all()?, n))
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
    let (mut losses, mut lse) = (Vec::with_capacity(targets.len()), Vec::with_capacity(targets.len()));
    for (c, tg) in targets.chunks(CHUNK).enumerate() {
        let logits = hd.narrow(0, c * CHUNK, tg.len())?.matmul(&wd.t()?)?;
        let rows = logits.to_vec2::<f32>()?;
        for (row, &t) in rows.iter().zip(tg) {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s: f64 = row.iter().map(|&v| ((v - m) as f64).exp()).sum();
            let l = m as f64 + s.ln();
            lse.push(l as f32);
            losses.push((l - row[t as usize] as f64) as f32);
        }
    }
    let op = CrossEntropy { targets: targets.to_vec(), lse, losses };
    Ok(h.apply_op2(w, op)?)
}

struct CrossEntropy {
    targets: Vec<u32>,
    lse: Vec<f32>,
    losses: Vec<f32>,
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "instill-chunked-cross-entropy"
    }

    /// The losses were computed (chunk by chunk) before the op was built.
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(self.losses.clone()), Shape::from(self.losses.len())))
    }

    /// d loss_i / d logits_i = softmax_i - onehot(target_i), recomputed chunk by chunk.
    fn bwd(&self, h: &Tensor, w: &Tensor, _out: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.to_vec1::<f32>()?;
        let (hd, wd) = (h.detach(), w.detach());
        let mut gh = vec![];
        let mut gw: Option<Tensor> = None;
        for (c, tg) in self.targets.chunks(CHUNK).enumerate() {
            let hc = hd.narrow(0, c * CHUNK, tg.len())?;
            let logits = hc.matmul(&wd.t()?)?;
            let v = logits.dim(1)?;
            let mut p = logits.flatten_all()?.to_vec1::<f32>()?;
            for (i, row) in p.chunks_mut(v).enumerate() {
                let k = c * CHUNK + i;
                let (lse, gi) = (self.lse[k], g[k]);
                row.iter_mut().for_each(|x| *x = (*x - lse).exp() * gi);
                row[tg[i] as usize] -= gi;
            }
            let p = Tensor::from_vec(p, (tg.len(), v), hd.device())?;
            gh.push(p.matmul(&wd)?);
            if w.track_op() {
                let d = p.t()?.matmul(&hc)?;
                gw = Some(match gw {
                    Some(acc) => (acc + d)?,
                    None => d,
                });
            }
        }
        Ok((Some(Tensor::cat(&gh, 0)?), gw))
    }
}
