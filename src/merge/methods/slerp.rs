//! SLERP between the base and one other model, over each tensor flattened to one vector
//! (mergekit's `slerp`): `t = 0` is the base. Norms below 1e-8 count as 1; when the
//! normalized vectors' |dot| exceeds 0.9995 it falls back to linear interpolation.
use super::{float, BasePolicy, Contract, Group, MergeMethod, ParamSpec, Scope};
use crate::Result;
use rayon::prelude::*;

pub struct Slerp;

const DOT_THRESHOLD: f64 = 0.9995;
const EPS: f64 = 1e-8;

/// `(coef_a, coef_b)` so that the result is `coef_a * a + coef_b * b`.
pub fn coefficients(t: f64, a: &[f32], b: &[f32]) -> (f32, f32) {
    let norm = |v: &[f32]| v.par_iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
    let (na, nb) = (norm(a), norm(b));
    let na = if na > EPS { na } else { 1.0 };
    let nb = if nb > EPS { nb } else { 1.0 };
    let dot = a.par_iter().zip(b).map(|(x, y)| (*x as f64 / na) * (*y as f64 / nb)).sum::<f64>().clamp(-1.0, 1.0);
    if dot.abs() > DOT_THRESHOLD {
        return ((1.0 - t) as f32, t as f32);
    }
    let theta = dot.acos();
    let s = theta.sin();
    ((((1.0 - t) * theta).sin() / s) as f32, ((t * theta).sin() / s) as f32)
}

impl MergeMethod for Slerp {
    fn name(&self) -> &'static str {
        "slerp"
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![float("t", Scope::Shared, None)]
    }

    fn contract(&self) -> Contract {
        Contract::new(BasePolicy::Required, 2, Some(2))
    }

    fn merge(&self, g: Group) -> Result<Vec<f32>> {
        let (a, b) = (g.base(), g.full(0));
        let (ca, cb) = coefficients(g.params.f("t"), a, &b);
        Ok(a.par_iter().zip(b.par_iter()).map(|(x, y)| ca * x + cb * y).collect())
    }
}
