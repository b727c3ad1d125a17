//! Direct Preference Optimization and its loss variants, as TRL 1.16.0's `DPOTrainer`
//! computes them (reverse-KL scores, `f_divergence_type` left at its default): sequence
//! log-probs are summed over the completion tokens, `chosen_scores = logp_c - ref_c`,
//! `delta = chosen_scores - rejected_scores`, and each loss type gives a per-pair loss;
//! a list of types is combined as `sum_k loss_weights[k] * mean(loss_k)`. Defaults:
//! `beta` 0.1, `label_smoothing` 0, `loss_type` sigmoid. Implicit rewards (logged) are
//! `beta * (logp - ref)`. Where TRL departs from a paper:
//! - `ipo` and `sigmoid_norm` divide each side's score by its completion length (TRL
//!   confirmed this with the IPO authors; the paper's formula has no normalisation).
//! - `sft` as a loss type is the mean NLL per chosen token of the micro-batch.
use super::{log_sigmoid, sigmoid, Ctx, Data, Objective, Out, Pairs, Stats};
use crate::data::pack::Rows;
use crate::train::logps::sequence_logps;
use crate::train::recipe::Recipe;
use crate::{Error, Result};
use candle_core::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossType {
    Sigmoid,
    Hinge,
    Ipo,
    Robust,
    SigmoidNorm,
    BcoPair,
    ApoZero,
    ApoDown,
    NcaPair,
    ExoPair,
    SppoHard,
    Discopop,
    Sft,
}

pub const LOSS_TYPES: &[(&str, LossType)] = &[
    ("sigmoid", LossType::Sigmoid),
    ("hinge", LossType::Hinge),
    ("ipo", LossType::Ipo),
    ("robust", LossType::Robust),
    ("sigmoid_norm", LossType::SigmoidNorm),
    ("bco_pair", LossType::BcoPair),
    ("apo_zero", LossType::ApoZero),
    ("apo_down", LossType::ApoDown),
    ("nca_pair", LossType::NcaPair),
    ("exo_pair", LossType::ExoPair),
    ("sppo_hard", LossType::SppoHard),
    ("discopop", LossType::Discopop),
    ("sft", LossType::Sft),
];

pub fn loss_type(name: &str) -> Result<LossType> {
    LOSS_TYPES.iter().find(|(n, _)| *n == name).map(|x| x.1).ok_or_else(|| {
        let names: Vec<&str> = LOSS_TYPES.iter().map(|x| x.0).collect();
        Error::Input(format!("loss_type: {name:?} is not a DPO loss type; one of {}", names.join(", ")))
    })
}

pub struct Dpo {
    pub beta: f64,
    pub label_smoothing: f64,
    pub discopop_tau: f64,
    pub losses: Vec<(LossType, f64)>,
}

impl Dpo {
    /// From the recipe; `forced` is the loss type an alias objective (`ipo`) stands for.
    pub fn from_recipe(r: &Recipe, forced: Option<&str>) -> Result<Self> {
        let names: Vec<String> = match (forced, &r.loss_type) {
            (Some(f), _) => vec![f.to_string()],
            (None, Some(l)) => l.names(),
            (None, None) => vec!["sigmoid".into()],
        };
        let types = names.iter().map(|n| loss_type(n)).collect::<Result<Vec<_>>>()?;
        let weights = r.loss_weights.clone().unwrap_or_else(|| vec![1.0; types.len()]);
        if weights.len() != types.len() {
            return Err(Error::Input(format!("loss_weights: {} weights for {} loss types", weights.len(), types.len())));
        }
        let ls = r.label_smoothing;
        if types.contains(&LossType::Robust) && !(0.0..0.5).contains(&ls) {
            return Err(Error::Input(format!("label_smoothing: {ls} must lie in [0, 0.5) for the robust loss")));
        }
        if types.contains(&LossType::ExoPair) && ls == 0.0 {
            return Err(Error::Input("label_smoothing: exo_pair needs a label_smoothing above 0 (TRL suggests 1e-3)".into()));
        }
        Ok(Dpo { beta: r.beta.unwrap_or(0.1), label_smoothing: ls, discopop_tau: 0.05, losses: types.into_iter().zip(weights).collect() })
    }

    /// Per-pair loss `(K,)` of one loss type.
    fn per_pair(&self, t: LossType, p: &Pairs, cl: &Tensor, rl: &Tensor) -> Result<Tensor> {
        let b = self.beta;
        let delta = (cl - rl)?;
        let bd = (&delta * b)?;
        let ls = self.label_smoothing;
        Ok(match t {
            LossType::Sigmoid => log_sigmoid(&bd)?.neg()?,
            LossType::Hinge => (1.0 - &bd)?.relu()?,
            LossType::Ipo => {
                let d = ((cl / &p.len_chosen.clamp(1f32, f32::MAX)?)? - (rl / &p.len_rejected.clamp(1f32, f32::MAX)?)?)?;
                (d - 1.0 / (2.0 * b))?.sqr()?
            }
            LossType::Robust => {
                let clean = (log_sigmoid(&bd)? * -(1.0 - ls))?;
                let flipped = (log_sigmoid(&bd.neg()?)? * -ls)?;
                ((clean - flipped)? / (1.0 - 2.0 * ls))?
            }
            LossType::SigmoidNorm => {
                let d = ((cl / &p.len_chosen.clamp(1f32, f32::MAX)?)? - (rl / &p.len_rejected.clamp(1f32, f32::MAX)?)?)?;
                log_sigmoid(&(d * b)?)?.neg()?
            }
            LossType::BcoPair => (log_sigmoid(&(cl * b)?)?.neg()? - log_sigmoid(&(rl * -b)?)?)?,
            LossType::ApoZero => ((1.0 - sigmoid(&(cl * b)?)?)? + sigmoid(&(rl * b)?)?)?,
            LossType::ApoDown => (sigmoid(&(cl * b)?)? + (1.0 - sigmoid(&bd)?)?)?,
            LossType::NcaPair => {
                let (c, r) = ((cl * b)?, (rl * b)?);
                ((log_sigmoid(&c)?.neg()? - (log_sigmoid(&c.neg()?)? * 0.5)?)? - (log_sigmoid(&r.neg()?)? * 0.5)?)?
            }
            LossType::ExoPair => {
                let (qw, lqw) = (sigmoid(&bd)?, log_sigmoid(&bd)?);
                let (ql, lql) = (sigmoid(&bd.neg()?)?, log_sigmoid(&bd.neg()?)?);
                let (lpw, lpl) = ((-ls).ln_1p(), ls.ln());
                ((qw * (lqw - lpw)?)? + (ql * (lql - lpl)?)?)?
            }
            LossType::SppoHard => ((cl - 0.5 / b)?.sqr()? + (rl + 0.5 / b)?.sqr()?)?,
            LossType::Discopop => {
                let m = sigmoid(&(&bd / self.discopop_tau)?)?;
                ((log_sigmoid(&bd)?.neg()? * (1.0 - &m)?)? + (bd.neg()?.exp()? * m)?)?
            }
            LossType::Sft => {
                let k = p.n();
                (p.chosen_nll_sum()? / k as f64)?.broadcast_as(k)?.contiguous()?
            }
        })
    }
}

impl Objective for Dpo {
    fn name(&self) -> &'static str {
        "dpo"
    }
    fn data(&self) -> Data {
        Data::Pairs
    }
    fn needs_reference(&self) -> bool {
        true
    }
    fn loss(&self, ctx: &Ctx, rows: &Rows) -> Result<Out> {
        let s = sequence_logps(ctx.model, rows)?;
        let p = Pairs::of(ctx.set, rows, &s)?;
        let (ref_c, ref_r) = p.reference(ctx)?;
        let cl = (&p.chosen - &ref_c)?;
        let rl = (&p.rejected - &ref_r)?;
        let mut loss: Option<Tensor> = None;
        for &(t, w) in &self.losses {
            let part = (self.per_pair(t, &p, &cl, &rl)?.sum_all()? * w)?;
            loss = Some(match loss {
                Some(l) => (l + part)?,
                None => part,
            });
        }
        let mut stats = Stats::default();
        p.log(&mut stats, &(&cl * self.beta)?, &(&rl * self.beta)?)?;
        Ok(Out { loss: loss.expect("at least one loss type"), stats })
    }
}
