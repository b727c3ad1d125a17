//! Reward models: a score head on the final hidden state at each sequence's last token
//! (transformers' `*ForSequenceClassification` pooling), trained with the base's adapter.
//! - `reward`: Bradley-Terry, as TRL 1.16.0's `RewardTrainer`:
//!   `-log sigmoid(r_c - r_r - margin)` averaged over pairs (`margin` from the record when
//!   it has one), plus `center_rewards_coefficient * mean((r_c + r_r)^2)` when set.
//! - `reward-regression`: one output per attribute score (HelpSteer2), mean squared error
//!   over every score of the batch (transformers' regression loss for `num_labels > 1`).
use super::{log_sigmoid, Ctx, Data, Objective, Out, Stats};
use crate::data::pack::Rows;
use crate::train::data::Set;
use crate::train::logps::last_hidden;
use crate::train::recipe::Recipe;
use crate::{Error, Result};
use candle_core::Tensor;

/// Scores `(S, outputs)` of the sequences in `rows`, with their global ids.
pub fn scores(ctx: &Ctx, rows: &Rows) -> Result<(Vec<usize>, Tensor)> {
    let head = ctx.head.ok_or_else(|| Error::Input("a reward objective needs a score head".into()))?;
    let (ids, h) = last_hidden(ctx.model, rows)?;
    Ok((ids, h.matmul(&head.t()?)?))
}

fn pick(ids: &[usize], scores: &Tensor, want: &[usize]) -> Result<Tensor> {
    let local: Vec<u32> = want.iter().map(|g| ids.iter().position(|x| x == g).expect("in the rows") as u32).collect();
    Ok(scores.index_select(&Tensor::from_vec(local, want.len(), scores.device())?, 0)?)
}

pub struct Reward {
    pub center_rewards_coefficient: Option<f64>,
}

impl Reward {
    pub fn from_recipe(r: &Recipe) -> Self {
        Reward { center_rewards_coefficient: r.center_rewards_coefficient }
    }
}

impl Objective for Reward {
    fn name(&self) -> &'static str {
        "reward"
    }
    fn data(&self) -> Data {
        Data::Pairs
    }
    fn head_outputs(&self, _: &Set) -> usize {
        1
    }
    fn loss(&self, ctx: &Ctx, rows: &Rows) -> Result<Out> {
        let (ids, s) = scores(ctx, rows)?;
        let units = ctx.set.units_in(rows);
        let c: Vec<usize> = units.iter().map(|&u| ctx.set.units[u].seqs[0]).collect();
        let r: Vec<usize> = units.iter().map(|&u| ctx.set.units[u].seqs[1]).collect();
        let rc = pick(&ids, &s, &c)?.squeeze(1)?;
        let rr = pick(&ids, &s, &r)?.squeeze(1)?;
        let margins: Vec<f32> = c.iter().map(|&g| ctx.set.seqs[g].scores.first().copied().unwrap_or(0.0)).collect();
        let margin = Tensor::from_vec(margins, c.len(), s.device())?;
        let mut loss = log_sigmoid(&((&rc - &rr)? - margin)?)?.neg()?.sum_all()?;
        if let Some(k) = self.center_rewards_coefficient {
            loss = (loss + ((&rc + &rr)?.sqr()?.sum_all()? * k)?)?;
        }
        let mut stats = Stats::default();
        let (dc, dr) = (rc.detach(), rr.detach());
        stats.add_all("rewards/chosen", &dc)?;
        stats.add_all("rewards/rejected", &dr)?;
        stats.add_all("rewards/margins", &(&dc - &dr)?)?;
        stats.add_all("rewards/accuracies", &dc.gt(&dr)?.to_dtype(candle_core::DType::F32)?)?;
        Ok(Out { loss, stats })
    }
}

pub struct Regression;

impl Regression {
    pub fn from_recipe(_: &Recipe) -> Self {
        Regression
    }
}

impl Objective for Regression {
    fn name(&self) -> &'static str {
        "reward-regression"
    }
    fn data(&self) -> Data {
        Data::Scored
    }
    fn head_outputs(&self, set: &Set) -> usize {
        set.seqs.first().map_or(1, |s| s.scores.len())
    }
    fn loss(&self, ctx: &Ctx, rows: &Rows) -> Result<Out> {
        let (ids, s) = scores(ctx, rows)?;
        let units = ctx.set.units_in(rows);
        let g: Vec<usize> = units.iter().map(|&u| ctx.set.units[u].seqs[0]).collect();
        let pred = pick(&ids, &s, &g)?;
        let k = pred.dim(1)?;
        let want: Vec<f32> = g.iter().flat_map(|&i| ctx.set.seqs[i].scores.iter().copied()).collect();
        let want = Tensor::from_vec(want, (g.len(), k), s.device())?;
        let sq = (&pred - &want)?.sqr()?;
        let loss = (sq.sum_all()? / k as f64)?;
        let mut stats = Stats::default();
        stats.add_all("mse", &(sq.detach().sum(1)? / k as f64)?)?;
        Ok(Out { loss, stats })
    }
}
