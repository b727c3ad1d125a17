//! KTO (Ethayarajh et al. 2024), as TRL 1.16.0's `KTOTrainer`: unpaired responses, each
//! labelled desirable or undesirable. The KL term is estimated from mismatched pairs:
//! within each batch of `batch_size` consecutive examples, prompt `i` is paired with the
//! completion of example `i - 1` (TRL's rotation by one, made when the data is loaded,
//! which is why KTO keeps the data's order, as TRL's sequential sampler does).
//! `kl = max(0, mean(logp_KL - ref_KL))`, detached; desirable examples lose
//! `1 - sigmoid(beta (logratio - kl))`, undesirable ones `1 - sigmoid(beta (kl - logratio))`,
//! weighted by `desirable_weight` / `undesirable_weight`, averaged over the examples.
//! `loss_type: apo_zero_unpaired` drops the KL term. Defaults: beta 0.1, weights 1.
//! The policy's KL log-probs come from a forward pass without dropout or gradients.
use super::{sigmoid, Ctx, Data, Objective, Out, Stats};
use crate::data::cache::Side;
use crate::data::pack::{rows_from, Rows};
use crate::train::data::pack_rows;
use crate::train::logps::sequence_logps;
use crate::train::recipe::Recipe;
use crate::{Error, Result};
use candle_core::Tensor;

pub struct Kto {
    pub beta: f64,
    pub desirable_weight: f64,
    pub undesirable_weight: f64,
    /// `apo_zero_unpaired` instead of `kto`: no KL term.
    pub apo: bool,
}

impl Kto {
    pub fn from_recipe(r: &Recipe) -> Result<Self> {
        let apo = match r.loss_type.as_ref().map(|l| l.names()).as_deref() {
            None => false,
            Some([t]) if t == "kto" => false,
            Some([t]) if t == "apo_zero_unpaired" => true,
            Some(other) => return Err(Error::Input(format!("loss_type: {other:?}: KTO takes kto or apo_zero_unpaired"))),
        };
        if !apo && r.batch_size < 2 {
            return Err(Error::Input("batch_size: KTO estimates its KL term from the other examples of a micro-batch, so it needs batch_size of at least 2".into()));
        }
        Ok(Kto { beta: r.beta.unwrap_or(0.1), desirable_weight: r.desirable_weight, undesirable_weight: r.undesirable_weight, apo })
    }

    /// `kl` of the micro-batch's mismatched pairs.
    fn kl(&self, ctx: &Ctx, units: &[usize]) -> Result<f64> {
        let ids: Vec<usize> = units.iter().filter_map(|&u| ctx.set.units[u].kl).collect();
        if self.apo || ids.is_empty() {
            return Ok(0.0);
        }
        let groups = pack_rows(&ids, |i| ctx.set.seqs[i].ids.len(), ctx.layout.max_len, ctx.layout.packing);
        let rows = rows_from(groups, ctx.layout.pad, |i| (&ctx.set.seqs[i].ids, &ctx.set.seqs[i].mask));
        if let Some(a) = ctx.adapter {
            a.set_training(false);
        }
        let s = sequence_logps(ctx.model, &rows);
        if let Some(a) = ctx.adapter {
            a.set_training(true);
        }
        let s = s?;
        let policy: Vec<f32> = s.logps.detach().to_vec1()?;
        let reference = ctx.reference.ok_or_else(|| Error::Input("KTO needs reference log-probs".into()))?;
        let d: f64 = s.ids.iter().zip(&policy).map(|(&g, &p)| (p - reference[g]) as f64).sum();
        Ok((d / s.ids.len() as f64).max(0.0))
    }
}

impl Objective for Kto {
    fn name(&self) -> &'static str {
        "kto"
    }
    fn data(&self) -> Data {
        Data::Labelled
    }
    fn needs_reference(&self) -> bool {
        true
    }
    fn sequential(&self) -> bool {
        true
    }
    fn loss(&self, ctx: &Ctx, rows: &Rows) -> Result<Out> {
        let s = sequence_logps(ctx.model, rows)?;
        let units = ctx.set.units_in(rows);
        let kl = self.kl(ctx, &units)?;
        let mut stats = Stats::default();
        stats.add("kl", kl, 1.0);
        let mut loss: Option<Tensor> = None;
        for (side, w) in [(Side::Desirable, self.desirable_weight), (Side::Undesirable, self.undesirable_weight)] {
            let ids: Vec<usize> = units.iter().map(|&u| ctx.set.units[u].seqs[0]).filter(|&g| ctx.set.seqs[g].side == side).collect();
            if ids.is_empty() {
                continue;
            }
            let local: Vec<u32> = ids.iter().map(|&g| s.at(g).expect("in the rows") as u32).collect();
            let logp = s.logps.index_select(&Tensor::from_vec(local, ids.len(), &ctx.model.device)?, 0)?;
            let ratio = (&logp - ctx.reference_of(&ids)?)?;
            let b = self.beta;
            let losses = match (side, self.apo) {
                (Side::Desirable, false) => (1.0 - sigmoid(&((&ratio - kl)? * b)?)?)?,
                (Side::Desirable, true) => (1.0 - sigmoid(&(&ratio * b)?)?)?,
                (_, false) => (1.0 - sigmoid(&((kl - &ratio)? * b)?)?)?,
                (_, true) => sigmoid(&(&ratio * b)?)?,
            };
            let part = (losses.sum_all()? * w)?;
            loss = Some(match loss {
                Some(l) => (l + part)?,
                None => part,
            });
            let name = if side == Side::Desirable { "chosen" } else { "rejected" };
            stats.add_all(&format!("rewards/{name}"), &(ratio.detach() * b)?)?;
            stats.add_all(&format!("logps/{name}"), &logp.detach())?;
        }
        let loss = loss.ok_or_else(|| Error::Input("a KTO micro-batch holds no examples".into()))?;
        Ok(Out { loss, stats })
    }
}
