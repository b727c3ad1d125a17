//! mergekit's `GeneralizedTaskArithmeticMerge`: one method behind `task_arithmetic`,
//! `ties`, `dare_linear`, `dare_ties`, `breadcrumbs`, `breadcrumbs_ties`, `della` and
//! `della_linear`, which differ only in how deltas are sparsified, whether signs are
//! elected, and the defaults of `normalize` and `rescale`.
//!
//! For each non-base input: `delta = model - base`, sparsified (`density`, and `gamma` /
//! `epsilon`), then multiplied by its `weight`. With sign consensus (the `*ties` and
//! `della` names) the majority sign is elected per entry **on the weighted deltas**
//! (`sum >= 0` is positive), entries of the other sign (and zeros) are dropped, and
//! `normalize` divides by the sum of the weights of the inputs kept at that entry (the
//! TIES paper divides by their count and elects on unweighted trimmed vectors:
//! `--method-variant paper`). Without consensus `normalize` divides by the sum of all
//! weights (left alone when |sum| < 1e-8). The result is `base + lambda * mixed`.
//! DARE's `rescale` is mergekit's (match the L1 norm of the unpruned delta), not the
//! paper's `1 / density` (`--method-variant paper`).
use super::sparsify;
use super::{boolean, float, BasePolicy, Contract, Group, MergeMethod, ParamSpec, Scope};
use crate::Result;
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consensus {
    /// Elect the sign of the summed (weighted) deltas.
    Sum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sparsify {
    Magnitude,
    Random,
    MagnitudeOutliers,
    DellaMagprune,
}

pub struct Generalized {
    pub name: &'static str,
    pub consensus: Option<Consensus>,
    pub sparsify: Option<Sparsify>,
    pub normalize: bool,
    pub rescale: bool,
}

impl Generalized {
    fn sparse(&self, g: &Group, i: usize, delta: Vec<f32>) -> Result<Vec<f32>> {
        if self.sparsify.is_none() || g.params.input_f(i, "density") >= 1.0 {
            return Ok(delta);
        }
        let p = &g.params;
        let density = p.input_f(i, "density");
        let rescale = p.b("rescale");
        let seed = g.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Ok(match self.sparsify {
            None => delta,
            Some(Sparsify::Magnitude) => sparsify::magnitude(&delta, density, rescale),
            Some(Sparsify::MagnitudeOutliers) => sparsify::magnitude_outliers(&delta, density, p.input_f(i, "gamma"), rescale),
            Some(Sparsify::Random) => sparsify::bernoulli(&delta, density, rescale, seed, g.paper),
            Some(Sparsify::DellaMagprune) => {
                let cols = if g.shape.len() >= 2 { delta.len() / g.shape[0] } else { delta.len() };
                sparsify::della(&delta, cols, density, p.input_f(i, "epsilon"), rescale, seed, g.paper)?
            }
        })
    }

    /// Signs elected per entry, inputs of the other sign dropped, added to `out` (the base).
    /// `deltas` are sparsified but not yet weighted.
    fn consensus(&self, out: &mut [f32], deltas: &[Vec<f32>], weights: &[f32], paper: bool, normalize: bool, lambda: f32) {
        out.par_iter_mut().enumerate().for_each(|(j, b)| {
            let voter = |x: &Vec<f32>, w: &f32| if paper { x[j] } else { x[j] * w };
            let vote: f32 = deltas.iter().zip(weights).map(|(x, w)| voter(x, w)).sum();
            let majority = if vote >= 0.0 { 1.0 } else { -1.0 };
            let (mut s, mut w_sum) = (0f32, 0f32);
            for (x, w) in deltas.iter().zip(weights) {
                let v = voter(x, w);
                if v != 0.0 && v.signum() == majority {
                    s += x[j] * w;
                    w_sum += if paper { 1.0 } else { *w };
                }
            }
            if normalize {
                s /= if w_sum == 0.0 { 1.0 } else { w_sum };
            }
            if lambda != 1.0 {
                s *= lambda;
            }
            *b += s;
        });
    }
}

impl MergeMethod for Generalized {
    fn name(&self) -> &'static str {
        self.name
    }

    fn params(&self) -> Vec<ParamSpec> {
        let mut p = vec![
            boolean("int8_mask", false),
            boolean("normalize", self.normalize),
            boolean("rescale", self.rescale),
            float("lambda", Scope::Shared, Some(1.0)),
            float("weight", Scope::NonBase, None),
            float("density", Scope::NonBase, Some(1.0)),
        ];
        match self.sparsify {
            Some(Sparsify::MagnitudeOutliers) => p.push(float("gamma", Scope::NonBase, Some(0.01))),
            Some(Sparsify::DellaMagprune) => p.push(float("epsilon", Scope::NonBase, Some(0.15))),
            _ => {}
        }
        p
    }

    fn contract(&self) -> Contract {
        Contract::new(BasePolicy::Required, 1, None)
    }

    fn has_paper_variant(&self) -> bool {
        self.consensus.is_some() || matches!(self.sparsify, Some(Sparsify::Random | Sparsify::DellaMagprune))
    }

    fn merge(&self, mut g: Group) -> Result<Vec<f32>> {
        if g.inputs.is_empty() {
            return Ok(g.base.take().expect("the contract requires a base"));
        }
        let weights: Vec<f32> = (0..g.inputs.len()).map(|i| g.params.input_f(i, "weight") as f32).collect();
        let mut deltas = Vec::with_capacity(weights.len());
        for i in 0..weights.len() {
            let d = g.take_delta(i);
            deltas.push(self.sparse(&g, i, d)?);
        }
        let (normalize, lambda) = (g.params.b("normalize"), g.params.f("lambda") as f32);
        let mut out = g.base.take().expect("the contract requires a base");
        match self.consensus {
            Some(Consensus::Sum) => self.consensus(&mut out, &deltas, &weights, g.paper, normalize, lambda),
            None => {
                let s: f32 = weights.iter().sum();
                let s = if !normalize || s.abs() < 1e-8 { 1.0 } else { s };
                out.par_iter_mut().enumerate().for_each(|(j, b)| {
                    let mut m = 0f32;
                    for (d, w) in deltas.iter().zip(&weights) {
                        m += d[j] * w;
                    }
                    if normalize {
                        m /= s;
                    }
                    if lambda != 1.0 {
                        m *= lambda;
                    }
                    *b += m;
                });
            }
        }
        Ok(out)
    }
}
