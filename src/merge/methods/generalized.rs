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

    /// Signs elected per entry, inputs of the other sign dropped; returns (mixed, divisor).
    /// `deltas` are sparsified but not yet weighted.
    fn consensus(&self, deltas: &[Vec<f32>], weights: &[f32], paper: bool, n: usize) -> (Vec<f32>, Vec<f32>) {
        let mut mixed = vec![0f32; n];
        let mut divisor = vec![0f32; n];
        mixed.par_iter_mut().zip(divisor.par_iter_mut()).enumerate().for_each(|(j, (m, d))| {
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
            *m = s;
            *d = if w_sum == 0.0 { 1.0 } else { w_sum };
        });
        (mixed, divisor)
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

    fn merge(&self, g: &Group) -> Result<Vec<f32>> {
        let base = g.base();
        if g.inputs.is_empty() {
            return Ok(base.to_vec());
        }
        let weights: Vec<f32> = (0..g.inputs.len()).map(|i| g.params.input_f(i, "weight") as f32).collect();
        let deltas = (0..g.inputs.len()).map(|i| self.sparse(g, i, g.delta(i))).collect::<Result<Vec<_>>>()?;
        let n = base.len();
        let (mut mixed, divisor) = match self.consensus {
            Some(Consensus::Sum) => {
                let (m, d) = self.consensus(&deltas, &weights, g.paper, n);
                (m, Some(d))
            }
            None => {
                let mut m = vec![0f32; n];
                for (d, w) in deltas.iter().zip(&weights) {
                    m.par_iter_mut().zip(d).for_each(|(a, b)| *a += b * w);
                }
                (m, None)
            }
        };
        if g.params.b("normalize") {
            match divisor {
                Some(d) => mixed.par_iter_mut().zip(&d).for_each(|(m, d)| *m /= d),
                None => {
                    let s: f32 = weights.iter().sum();
                    let s = if s.abs() < 1e-8 { 1.0 } else { s };
                    mixed.par_iter_mut().for_each(|m| *m /= s);
                }
            }
        }
        let lambda = g.params.f("lambda") as f32;
        if lambda != 1.0 {
            mixed.par_iter_mut().for_each(|m| *m *= lambda);
        }
        Ok(base.par_iter().zip(&mixed).map(|(b, m)| b + m).collect())
    }
}
