//! One optimiser step's worth of work: forward and backward over micro-batches, with the
//! loss averaged over every target token of the whole step (as transformers does with
//! gradient accumulation and `num_items_in_batch`).
use super::loss::loss_sum;
use crate::data::pack::Rows;
use crate::model::CausalLm;
use crate::{Error, Result};
use candle_core::{Tensor, Var};

pub struct StepGrads {
    /// Mean loss per target token over the step.
    pub loss: f64,
    /// Target tokens in the step.
    pub targets: usize,
    /// Tokens processed (padding excluded).
    pub tokens: usize,
    /// Gradient of the mean loss for each parameter, in order.
    pub grads: Vec<Tensor>,
}

/// Loss and gradients of `params` over `micro` batches.
pub fn loss_and_grads(model: &CausalLm, micro: &[Rows], params: &[Var]) -> Result<StepGrads> {
    let total: usize = micro.iter().map(|r| r.targets.iter().flatten().filter(|&&t| t).count()).sum();
    if total == 0 {
        return Err(Error::Input("a training step has no target tokens (every loss mask is empty)".into()));
    }
    let mut grads: Vec<Option<Tensor>> = vec![None; params.len()];
    let (mut loss, mut tokens) = (0f64, 0usize);
    for rows in micro {
        tokens += rows.batch.valid.iter().flatten().filter(|&&v| v).count();
        let (sum, n) = loss_sum(model, rows)?;
        if n == 0 {
            continue;
        }
        let mean_part = (sum / total as f64)?;
        loss += mean_part.to_scalar::<f32>()? as f64;
        let g = crate::model::on_workers(|| mean_part.backward())?;
        // Gradients found inside recomputed blocks (gradient checkpointing).
        let mut extra = crate::model::recompute::take_extra_grads();
        for (acc, p) in grads.iter_mut().zip(params) {
            for gp in g.get(p.as_tensor()).cloned().into_iter().chain(extra.remove(&p.as_tensor().id())) {
                *acc = Some(match acc.take() {
                    Some(a) => (a + gp)?,
                    None => gp,
                });
            }
        }
    }
    let grads = grads.into_iter().zip(params).map(|(g, p)| g.map_or_else(|| Tensor::zeros_like(p.as_tensor()), Ok)).collect::<candle_core::Result<Vec<_>>>()?;
    Ok(StepGrads { loss, targets: total, tokens, grads })
}

/// Scale gradients so their global L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter() {
        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        // torch: clip_coef = max_norm / (total_norm + 1e-6)
        let coef = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}
