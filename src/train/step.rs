//! One optimiser step's worth of work: forward and backward over micro-batches, with the
//! objective's loss averaged over the whole step (every target token for SFT, as
//! transformers does with gradient accumulation and `num_items_in_batch`; every pair or
//! example for the preference and reward objectives).
use super::objective::{Ctx, Objective, Stats};
use crate::data::pack::Rows;
use crate::{Error, Result};
use candle_core::{Tensor, Var};

pub struct StepGrads {
    /// Mean loss over the step.
    pub loss: f64,
    /// What the loss is averaged over (target tokens, pairs, examples).
    pub targets: usize,
    /// Tokens processed (padding excluded).
    pub tokens: usize,
    /// Gradient of the mean loss for each parameter, in order.
    pub grads: Vec<Tensor>,
    pub stats: Stats,
}

/// Supervised fine-tuning's loss and gradients of `params` over `micro` batches.
pub fn loss_and_grads(model: &crate::CausalLm, micro: &[Rows], params: &[Var]) -> Result<StepGrads> {
    let set = super::data::Set::default();
    let layout = super::objective::Layout { pad: 0, max_len: usize::MAX, packing: false };
    let ctx = Ctx { model, set: &set, reference: None, head: None, layout, adapter: None };
    objective_step(&super::objective::sft::Sft, &ctx, micro, params)
}

/// The objective's loss and gradients of `params` over `micro` batches.
pub fn objective_step(obj: &dyn Objective, ctx: &Ctx, micro: &[Rows], params: &[Var]) -> Result<StepGrads> {
    let weights: Vec<usize> = micro.iter().map(|r| obj.weight(ctx.set, r)).collect();
    let total: usize = weights.iter().sum();
    if total == 0 {
        return Err(Error::Input("a training step has no target tokens (every loss mask is empty)".into()));
    }
    let mut grads: Vec<Option<Tensor>> = vec![None; params.len()];
    let (mut loss, mut tokens, mut stats) = (0f64, 0usize, Stats::default());
    let busy = weights.iter().filter(|&&w| w > 0).count();
    for (rows, &w) in micro.iter().zip(&weights) {
        tokens += rows.batch.valid.iter().flatten().filter(|&&v| v).count();
        if w == 0 {
            continue;
        }
        ctx.adapter.inspect(|a| a.clear_aux());
        let out = obj.loss(ctx, rows)?;
        stats.merge(out.stats);
        let mut mean_part = (out.loss / total as f64)?;
        let part = mean_part.to_scalar::<f32>()? as f64;
        loss += part;
        // The method's own term (LoRAMoE's balancing), averaged over the micro-batches;
        // reported in the statistics, not in `loss` (which stays the objective's).
        if let Some(aux) = ctx.adapter.map(|a| a.aux_loss(&ctx.set.token_groups(rows))).transpose()?.flatten() {
            aux.stats.iter().for_each(|(k, s, n)| stats.add(k, *s, *n));
            mean_part = (mean_part + (aux.loss / busy as f64)?)?;
        }
        if !part.is_finite() {
            // No backward pass: the caller stops the run before anything is updated.
            continue;
        }
        let g = crate::model::on_workers(|| mean_part.backward())?;
        // Gradients found inside recomputed blocks (gradient checkpointing).
        let mut extra = crate::model::recompute::take_extra_grads();
        for (acc, p) in grads.iter_mut().zip(params) {
            // Detached, so the activations a gradient was computed from are freed with the graph.
            for gp in g.get(p.as_tensor()).map(Tensor::detach).into_iter().chain(extra.remove(&p.as_tensor().id())) {
                *acc = Some(match acc.take() {
                    Some(a) => (a + gp)?,
                    None => gp,
                });
            }
        }
    }
    let grads = grads.into_iter().zip(params).map(|(g, p)| g.map_or_else(|| Tensor::zeros_like(p.as_tensor()), Ok)).collect::<candle_core::Result<Vec<_>>>()?;
    Ok(StepGrads { loss, targets: total, tokens, grads, stats })
}

/// The objective's mean loss and statistics over `batches`, without gradients.
pub fn evaluate(obj: &dyn Objective, ctx: &Ctx, batches: &[Rows]) -> Result<(f64, Stats)> {
    let (mut sum, mut n, mut stats) = (0f64, 0usize, Stats::default());
    for b in batches {
        let w = obj.weight(ctx.set, b);
        if w == 0 {
            continue;
        }
        let out = obj.loss(ctx, b)?;
        sum += out.loss.to_scalar::<f32>()? as f64;
        n += w;
        stats.merge(out.stats);
    }
    Ok((if n == 0 { f64::NAN } else { sum / n as f64 }, stats))
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
