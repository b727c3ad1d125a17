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
    // One pass: |a|^2, |b|^2 and a.b, f64 sums of f32 chunks.
    let (aa, bb, ab) = a
        .par_chunks(4096)
        .zip(b.par_chunks(4096))
        .map(|(x, y)| {
            let (mut aa, mut bb, mut ab) = (0f64, 0f64, 0f64);
            for (p, q) in x.iter().zip(y) {
                let (p, q) = (*p as f64, *q as f64);
                aa += p * p;
                bb += q * q;
                ab += p * q;
            }
            (aa, bb, ab)
        })
        .reduce(|| (0.0, 0.0, 0.0), |x, y| (x.0 + y.0, x.1 + y.1, x.2 + y.2));
    let (na, nb) = (aa.sqrt(), bb.sqrt());
    let na = if na > EPS { na } else { 1.0 };
    let nb = if nb > EPS { nb } else { 1.0 };
    let dot = (ab / (na * nb)).clamp(-1.0, 1.0);
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
