//! Contrastive Preference Optimization and SimPO, as TRL 1.16.0's `CPOTrainer`: no
//! reference model; `logits = logp_c - logp_r` (for `simpo` and `ipo`, log-probs averaged
//! over the completion tokens), the loss of `loss_type` on them, plus `cpo_alpha` times
//! the mean NLL of the chosen completions. Defaults: `beta` 0.1, `label_smoothing` 0,
//! `cpo_alpha` 1 (CPO), `simpo_gamma` 0.5. `objective: simpo` is TRL's
//! `loss_type="simpo"` with `cpo_alpha: 0`, as TRL's docs prescribe for SimPO (TRL's
//! config default of cpo_alpha 1 with simpo would be CPO-SimPO; set it to get that).
//! Logged rewards are `beta * logp` (TRL's choice; the papers have no reward).
use super::{log_sigmoid, Ctx, Data, Objective, Out, Pairs, Stats};
use crate::data::pack::Rows;
use crate::train::logps::sequence_logps;
use crate::train::recipe::Recipe;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpoLoss {
    Sigmoid,
    Hinge,
    Ipo,
    Simpo,
}

pub struct Cpo {
    pub beta: f64,
    pub label_smoothing: f64,
    pub cpo_alpha: f64,
    pub gamma: f64,
    pub loss: CpoLoss,
    pub simpo_name: bool,
}

impl Cpo {
    pub fn from_recipe(r: &Recipe, simpo: bool) -> Result<Self> {
        let loss = if simpo {
            CpoLoss::Simpo
        } else {
            match r.loss_type.as_ref().map(|l| l.names()).as_deref() {
                None => CpoLoss::Sigmoid,
                Some([one]) => match one.as_str() {
                    "sigmoid" => CpoLoss::Sigmoid,
                    "hinge" => CpoLoss::Hinge,
                    "ipo" => CpoLoss::Ipo,
                    "simpo" => CpoLoss::Simpo,
                    other => return Err(Error::Input(format!("loss_type: {other:?} is not a CPO loss type; one of sigmoid, hinge, ipo, simpo"))),
                },
                Some(_) => return Err(Error::Input("loss_type: CPO takes one loss type".into())),
            }
        };
        let cpo_alpha = r.cpo_alpha.unwrap_or(if simpo { 0.0 } else { 1.0 });
        Ok(Cpo { beta: r.beta.unwrap_or(0.1), label_smoothing: r.label_smoothing, cpo_alpha, gamma: r.simpo_gamma.unwrap_or(0.5), loss, simpo_name: simpo })
    }
}

impl Objective for Cpo {
    fn name(&self) -> &'static str {
        if self.simpo_name {
            "simpo"
        } else {
            "cpo"
        }
    }
    fn data(&self) -> Data {
        Data::Pairs
    }
    fn loss(&self, ctx: &Ctx, rows: &Rows) -> Result<Out> {
        let s = sequence_logps(ctx.model, rows)?;
        let p = Pairs::of(ctx.set, rows, &s)?;
        let average = matches!(self.loss, CpoLoss::Ipo | CpoLoss::Simpo);
        let (c, r) = if average { ((&p.chosen / &p.len_chosen.clamp(1f32, f32::MAX)?)?, (&p.rejected / &p.len_rejected.clamp(1f32, f32::MAX)?)?) } else { (p.chosen.clone(), p.rejected.clone()) };
        let b = self.beta;
        let mut logits = (&c - &r)?;
        let ls = self.label_smoothing;
        let per_pair = match self.loss {
            CpoLoss::Simpo | CpoLoss::Sigmoid => {
                if self.loss == CpoLoss::Simpo {
                    logits = (logits - self.gamma / b)?;
                }
                let bl = (&logits * b)?;
                ((log_sigmoid(&bl)? * -(1.0 - ls))? - (log_sigmoid(&bl.neg()?)? * ls)?)?
            }
            CpoLoss::Hinge => (1.0 - (&logits * b)?)?.relu()?,
            CpoLoss::Ipo => (logits - 1.0 / (2.0 * b))?.sqr()?,
        };
        let mut loss = per_pair.sum_all()?;
        if self.cpo_alpha != 0.0 {
            loss = (loss + (p.chosen_nll_sum()? * self.cpo_alpha)?)?;
        }
        let mut stats = Stats::default();
        p.log(&mut stats, &(&c * b)?, &(&r * b)?)?;
        Ok(Out { loss, stats })
    }
}
