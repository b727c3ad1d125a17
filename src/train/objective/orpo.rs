//! ORPO (Hong et al. 2024), as TRL 1.16.0's `ORPOTrainer`: reference-free; log-probs
//! averaged over the completion tokens; `log_odds = (c - r) - (log(1 - e^c) - log(1 - e^r))`;
//! `loss = NLL(chosen) - beta * mean(log sigmoid(log_odds))`, the NLL being the mean per
//! chosen completion token of the micro-batch. Default `beta` 0.1. Logged rewards are
//! `beta * averaged logp`, as TRL logs them.
use super::{log_sigmoid, Ctx, Data, Objective, Out, Pairs, Stats};
use crate::data::pack::Rows;
use crate::train::logps::sequence_logps;
use crate::train::recipe::Recipe;
use crate::Result;
use candle_core::Tensor;

pub struct Orpo {
    pub beta: f64,
}

impl Orpo {
    pub fn from_recipe(r: &Recipe) -> Self {
        Orpo { beta: r.beta.unwrap_or(0.1) }
    }
}

/// `log(1 - exp(x))` for `x < 0`: `log1p(-e^x)` below -ln 2, `log(-expm1(x))` above (a
/// short series for `expm1` near 0, where `1 - e^x` would cancel), as TRL's two branches.
pub fn log1mexp(x: &Tensor) -> Result<Tensor> {
    let far = (1.0 - x.exp()?)?.log()?;
    // -expm1(x) = -x (1 + x/2 + x^2/6 + x^3/24 + x^4/120) near 0, where 1 - e^x cancels
    // (relative error below 1e-9 above -0.05; the direct form is exact enough below).
    let t = ((x / 120.0)? + 1.0 / 24.0)?;
    let t = ((t * x)? + 1.0 / 6.0)?;
    let t = ((t * x)? + 0.5)?;
    let t = ((t * x)? + 1.0)?;
    let series = (x.neg()? * t)?.log()?;
    let near = x.ge(-0.05f32)?;
    Ok(near.where_cond(&series, &far)?)
}

impl Objective for Orpo {
    fn name(&self) -> &'static str {
        "orpo"
    }
    fn data(&self) -> Data {
        Data::Pairs
    }
    fn loss(&self, ctx: &Ctx, rows: &Rows) -> Result<Out> {
        let s = sequence_logps(ctx.model, rows)?;
        let p = Pairs::of(ctx.set, rows, &s)?;
        let c = (&p.chosen / &p.len_chosen.clamp(1f32, f32::MAX)?)?;
        let r = (&p.rejected / &p.len_rejected.clamp(1f32, f32::MAX)?)?;
        let log_odds = ((&c - &r)? - (log1mexp(&c)? - log1mexp(&r)?)?)?;
        let ratio = log_sigmoid(&log_odds)?;
        let nll = p.chosen_nll_sum()?;
        let loss = (&nll - (ratio.sum_all()? * self.beta)?)?;
        let mut stats = Stats::default();
        p.log(&mut stats, &(&c * self.beta)?, &(&r * self.beta)?)?;
        stats.add_all("log_odds_ratio", &ratio.detach())?;
        stats.add_all("log_odds_chosen", &log_odds.detach())?;
        stats.add("nll_loss", nll.to_scalar::<f32>()? as f64, p.n() as f64);
        Ok(Out { loss, stats })
    }
}
