//! Sequence-level quantities of one forward pass over rows that hold several sequences
//! (padded one per row, or packed): each sequence's summed target log-probability
//! (preference objectives), or the final hidden state at its last token (reward models).
use super::loss::token_nll;
use crate::data::pack::Rows;
pub use crate::model::reward::last_hidden;
use crate::model::reward::owners;
use crate::model::CausalLm;
use crate::Result;
use candle_core::Tensor;

/// What [`sequence_logps`] gives, in the order sequences first appear in the rows.
pub struct SeqLogps {
    /// Global sequence index of each local one.
    pub ids: Vec<usize>,
    /// `(S,)`: the sum of `log p(token)` over each sequence's target tokens; differentiable.
    pub logps: Tensor,
    /// Target tokens per sequence (completion length).
    pub lens: Vec<usize>,
}

impl SeqLogps {
    /// Local position of global sequence `g`.
    pub fn at(&self, g: usize) -> Option<usize> {
        self.ids.iter().position(|&x| x == g)
    }
}

/// Summed target log-probs of every sequence in `rows` (targets as the rows mark them).
pub fn sequence_logps(model: &CausalLm, rows: &Rows) -> Result<SeqLogps> {
    let (b, t) = rows.batch.dims();
    let (ids, local) = owners(rows);
    let s = ids.len();
    let h = model.final_hidden(&rows.batch)?;
    let (mut at, mut targets, mut owner) = (vec![], vec![], vec![]);
    let mut lens = vec![0usize; s];
    for r in 0..b {
        for i in 1..t {
            if rows.targets[r][i] {
                let o = local[r][rows.batch.segments[r][i] as usize];
                at.push((r * t + i - 1) as u32);
                targets.push(rows.batch.tokens[r][i]);
                owner.push(o);
                lens[o] += 1;
            }
        }
    }
    let n = targets.len();
    if n == 0 {
        let logps = Tensor::zeros(s, candle_core::DType::F32, &model.device)?;
        return Ok(SeqLogps { ids, logps, lens });
    }
    let d = h.dim(2)?;
    let idx = Tensor::from_vec(at, n, &model.device)?;
    let hs = h.reshape((b * t, d))?.index_select(&idx, 0)?;
    let nll = token_nll(model, &hs, &targets)?; // (N,)
                                                // Sum per sequence: a (S, N) indicator times the per-token losses.
    let mut ind = vec![0f32; s * n];
    for (j, &o) in owner.iter().enumerate() {
        ind[o * n + j] = 1.0;
    }
    let ind = Tensor::from_vec(ind, (s, n), &model.device)?;
    let logps = ind.matmul(&nll.unsqueeze(1)?)?.squeeze(1)?.neg()?;
    Ok(SeqLogps { ids, logps, lens })
}
