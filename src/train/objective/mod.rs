//! Training objectives, one file each, behind [`Objective`]: what a micro-batch's loss is.
//! The trainer, data stream, adapters, checkpoints and metrics are shared; an objective
//! only turns one forward pass over its sequences into a summed loss and statistics.
//! Definitions and defaults follow TRL 1.16.0 (its DPO, CPO, ORPO, KTO and Reward
//! trainers); where TRL differs from a paper, the file says so.
pub mod cpo;
pub mod dpo;
pub mod kto;
pub mod orpo;
pub mod reward;
pub mod sft;

use super::data::Set;
use super::recipe::Recipe;
use crate::data::pack::Rows;
use crate::model::CausalLm;
use crate::{Error, Result};
use candle_core::Tensor;
use std::collections::BTreeMap;

/// What an objective trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// Conversations (supervised fine-tuning).
    Conversations,
    /// Preference pairs: prompt + chosen, prompt + rejected.
    Pairs,
    /// Single responses labelled desirable or undesirable (KTO).
    Labelled,
    /// Responses with numeric attribute scores (reward regression).
    Scored,
}

impl Data {
    pub fn describe(self) -> &'static str {
        match self {
            Data::Conversations => "conversations",
            Data::Pairs => "preference pairs (chosen/rejected)",
            Data::Labelled => "responses labelled desirable/undesirable (`label`)",
            Data::Scored => "responses with attribute scores",
        }
    }
}

/// Sums and counts of per-step statistics (`rewards/chosen`, `rewards/accuracies`, ...);
/// each is reported as sum / count over the step.
#[derive(Debug, Clone, Default)]
pub struct Stats(pub BTreeMap<String, (f64, f64)>);

impl Stats {
    pub fn add(&mut self, key: &str, sum: f64, count: f64) {
        let e = self.0.entry(key.to_string()).or_default();
        e.0 += sum;
        e.1 += count;
    }

    /// Add every value of a 1-d tensor (each counts once).
    pub fn add_all(&mut self, key: &str, t: &Tensor) -> Result<()> {
        let v = t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        self.add(key, v.iter().map(|&x| x as f64).sum(), v.len() as f64);
        Ok(())
    }

    pub fn merge(&mut self, other: Stats) {
        for (k, (s, n)) in other.0 {
            self.add(&k, s, n);
        }
    }

    /// Each statistic's mean; unpaired objectives (KTO) get `rewards/margins` as the
    /// difference of the chosen and rejected means, as TRL logs it.
    pub fn means(&self) -> BTreeMap<String, f64> {
        let mut m: BTreeMap<String, f64> = self.0.iter().filter(|(_, (_, n))| *n > 0.0).map(|(k, (s, n))| (k.clone(), s / n)).collect();
        if let (None, Some(c), Some(r)) = (m.get("rewards/margins"), m.get("rewards/chosen"), m.get("rewards/rejected")) {
            let d = c - r;
            m.insert("rewards/margins".into(), d);
        }
        m
    }
}

/// What an objective sees of a micro-batch: the model, the data set its sequences come
/// from (with reference log-probs when it needs them), and a reward head when it has one.
pub struct Ctx<'a> {
    pub model: &'a CausalLm,
    pub set: &'a Set,
    /// Reference log-prob of every sequence of `set` (the pre-pass).
    pub reference: Option<&'a [f32]>,
    /// `(outputs, hidden)` score head of a reward model.
    pub head: Option<&'a Tensor>,
    /// How rows are laid out, for objectives that run extra sequences (KTO's KL ones).
    pub layout: Layout,
    /// The method being trained, to switch off its training-only behaviour (and gradient
    /// tracking) for a forward pass that needs none.
    pub adapter: Option<&'a dyn crate::peft::Adapter>,
}

#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub pad: u32,
    pub max_len: usize,
    pub packing: bool,
}

impl Ctx<'_> {
    /// Reference log-probs of global sequences `ids`, as a tensor.
    pub fn reference_of(&self, ids: &[usize]) -> Result<Tensor> {
        let r = self.reference.ok_or_else(|| Error::Input("this objective needs reference log-probs, and none were computed".into()))?;
        Ok(Tensor::from_vec(ids.iter().map(|&i| r[i]).collect::<Vec<f32>>(), ids.len(), &self.model.device)?)
    }
}

/// One micro-batch's loss: the sum over its units (pairs, examples; target tokens for
/// SFT), which the step divides by the whole step's [`Objective::weight`].
pub struct Out {
    pub loss: Tensor,
    pub stats: Stats,
}

pub trait Objective: Send + Sync {
    /// The name in recipes (`objective: dpo`).
    fn name(&self) -> &'static str;
    fn data(&self) -> Data;
    /// Does it compare against reference log-probs (computed once, before training)?
    fn needs_reference(&self) -> bool {
        false
    }
    /// Outputs of a score head on the final hidden state (reward models); 0 for none.
    fn head_outputs(&self, _set: &Set) -> usize {
        0
    }
    /// Keep the data's order (KTO: its KL pairs are formed within consecutive batches).
    fn sequential(&self) -> bool {
        false
    }
    /// What the step's loss is averaged over: units (pairs, examples) by default.
    fn weight(&self, set: &Set, rows: &Rows) -> usize {
        set.units_in(rows).len()
    }
    fn loss(&self, ctx: &Ctx, rows: &Rows) -> Result<Out>;
}

/// `objective:` names, with what each is.
pub const NAMES: &[(&str, &str)] = &[
    ("sft", "supervised fine-tuning: next-token cross-entropy on the trained tokens"),
    ("dpo", "Direct Preference Optimization; `loss_type` picks sigmoid, hinge, ipo, robust, sigmoid_norm, bco_pair, apo_zero, ... or a list with `loss_weights`"),
    ("ipo", "DPO with loss_type ipo"),
    ("robust", "DPO with loss_type robust (label_smoothing)"),
    ("hinge", "DPO with loss_type hinge"),
    ("simpo", "SimPO: reference-free, length-normalised, margin simpo_gamma"),
    ("cpo", "Contrastive Preference Optimization: reference-free DPO + cpo_alpha x NLL on chosen"),
    ("orpo", "ORPO: NLL on chosen + beta x log odds ratio (reference-free)"),
    ("kto", "KTO: unpaired desirable/undesirable responses, KL from mismatched pairs in the batch"),
    ("reward", "reward model: scalar head, Bradley-Terry loss (margin, center_rewards_coefficient)"),
    ("reward-regression", "reward model: one head output per attribute score, mean squared error"),
];

/// The objective a recipe names, configured from its keys.
pub fn build(r: &Recipe) -> Result<Box<dyn Objective>> {
    let dpo_as = |t: &str| -> Result<Box<dyn Objective>> { Ok(Box::new(dpo::Dpo::from_recipe(r, Some(t))?)) };
    Ok(match r.objective.as_str() {
        "sft" => Box::new(sft::Sft),
        "dpo" => Box::new(dpo::Dpo::from_recipe(r, None)?),
        "ipo" | "robust" | "hinge" => dpo_as(&r.objective)?,
        "simpo" => Box::new(cpo::Cpo::from_recipe(r, true)?),
        "cpo" => Box::new(cpo::Cpo::from_recipe(r, false)?),
        "orpo" => Box::new(orpo::Orpo::from_recipe(r)),
        "kto" => Box::new(kto::Kto::from_recipe(r)?),
        "reward" => Box::new(reward::Reward::from_recipe(r)),
        "reward-regression" => Box::new(reward::Regression::from_recipe(r)),
        other => {
            let names: Vec<&str> = NAMES.iter().map(|n| n.0).collect();
            return Err(Error::Input(format!("objective: unknown objective {other:?}; one of {}", names.join(", "))));
        }
    })
}

/// `log(sigmoid(x))`, stable for large |x|: `-(relu(-x) + log(1 + exp(-|x|)))`.
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let soft = (x.neg()?.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    Ok(soft.neg()?)
}

pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::sigmoid(x)?)
}

/// Chosen and rejected quantities of the pairs in a micro-batch.
pub struct Pairs {
    pub chosen: Tensor,
    pub rejected: Tensor,
    pub len_chosen: Tensor,
    pub len_rejected: Tensor,
    /// Global sequence ids: (chosen, rejected) per pair.
    pub ids: Vec<(usize, usize)>,
}

impl Pairs {
    /// Split per-sequence values `(S,)` into the pairs of `set` that `rows` holds.
    pub fn of(set: &Set, rows: &Rows, s: &super::logps::SeqLogps) -> Result<Pairs> {
        let units = set.units_in(rows);
        let (mut ci, mut ri, mut ids, mut lc, mut lr) = (vec![], vec![], vec![], vec![], vec![]);
        for u in units {
            let (c, r) = (set.units[u].seqs[0], set.units[u].seqs[1]);
            let (a, b) = (s.at(c).expect("chosen in the rows"), s.at(r).expect("rejected in the rows"));
            ci.push(a as u32);
            ri.push(b as u32);
            lc.push(s.lens[a] as f32);
            lr.push(s.lens[b] as f32);
            ids.push((c, r));
        }
        let dev = s.logps.device();
        let n = ci.len();
        Ok(Pairs {
            chosen: s.logps.index_select(&Tensor::from_vec(ci, n, dev)?, 0)?,
            rejected: s.logps.index_select(&Tensor::from_vec(ri, n, dev)?, 0)?,
            len_chosen: Tensor::from_vec(lc, n, dev)?,
            len_rejected: Tensor::from_vec(lr, n, dev)?,
            ids,
        })
    }

    pub fn n(&self) -> usize {
        self.ids.len()
    }

    /// Reference log-probs of (chosen, rejected).
    pub fn reference(&self, ctx: &Ctx) -> Result<(Tensor, Tensor)> {
        let c: Vec<usize> = self.ids.iter().map(|p| p.0).collect();
        let r: Vec<usize> = self.ids.iter().map(|p| p.1).collect();
        Ok((ctx.reference_of(&c)?, ctx.reference_of(&r)?))
    }

    /// Mean NLL per chosen target token over the micro-batch (as CrossEntropyLoss on
    /// the chosen half of the batch), times the number of pairs: its share of the sum.
    pub fn chosen_nll_sum(&self) -> Result<Tensor> {
        let tokens = self.len_chosen.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
        Ok(((self.chosen.sum_all()?.neg()? / tokens)? * self.n() as f64)?)
    }

    /// The statistics every preference objective logs, from its implicit rewards.
    pub fn log(&self, stats: &mut Stats, rc: &Tensor, rr: &Tensor) -> Result<()> {
        let (rc, rr) = (rc.detach(), rr.detach());
        stats.add_all("rewards/chosen", &rc)?;
        stats.add_all("rewards/rejected", &rr)?;
        stats.add_all("rewards/margins", &(&rc - &rr)?)?;
        stats.add_all("rewards/accuracies", &rc.gt(&rr)?.to_dtype(candle_core::DType::F32)?)?;
        stats.add_all("logps/chosen", &self.chosen.detach())?;
        stats.add_all("logps/rejected", &self.rejected.detach())?;
        Ok(())
    }
}
