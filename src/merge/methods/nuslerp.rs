//! NuSLERP (mergekit's `nuslerp`): SLERP of two models (or, with a base, of their task
//! vectors, added back to the base) at `t = weight_2 / (weight_1 + weight_2)` (0.5 when
//! the weights sum to ~0). `nuslerp_flatten` (default) treats the tensor as one vector;
//! otherwise rows are interpolated separately, or columns with `nuslerp_row_wise`.
use super::{boolean, float, BasePolicy, Contract, Group, MergeMethod, ParamSpec, Scope};
use crate::Result;

pub struct NuSlerp;

/// SLERP of vectors `v0`, `v1` (strided views `at(k)`) as mergekit's `nuslerp` does.
fn slerp_vec(t: f64, v0: &[f64], v1: &[f64]) -> Vec<f64> {
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-7);
    let (n0, n1) = (norm(v0), norm(v1));
    let cos = v0.iter().zip(v1).map(|(a, b)| (a / n0) * (b / n1)).sum::<f64>().clamp(-1.0, 1.0);
    if 1.0 - cos * cos <= 1e-16 {
        return v0.iter().zip(v1).map(|(a, b)| (1.0 - t) * a + t * b).collect();
    }
    let theta = cos.acos();
    let s = theta.sin();
    let (c0, c1) = (((1.0 - t) * theta).sin(), (t * theta).sin());
    v0.iter().zip(v1).map(|(a, b)| (c0 * a + c1 * b) / s).collect()
}

impl MergeMethod for NuSlerp {
    fn name(&self) -> &'static str {
        "nuslerp"
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![float("weight", Scope::NonBase, None), boolean("nuslerp_row_wise", false), boolean("nuslerp_flatten", true)]
    }

    fn contract(&self) -> Contract {
        Contract { min_non_base: 2, max_non_base: Some(2), ..Contract::new(BasePolicy::Optional, 1, None) }
    }

    fn merge(&self, g: Group) -> Result<Vec<f32>> {
        let (w0, w1) = (g.params.input_f(0, "weight"), g.params.input_f(1, "weight"));
        let total = w0 + w1;
        let t = if total.abs() < 1e-6 { 0.5 } else { w1 / total };
        let vecs: Vec<Vec<f64>> = (0..2)
            .map(|i| match &g.base {
                Some(_) => g.delta(i).into_iter().map(f64::from).collect(),
                None => g.full(i).iter().map(|x| *x as f64).collect(),
            })
            .collect();
        let n = vecs[0].len();
        let (rows, cols) = if g.shape.len() >= 2 { (g.shape[0], n / g.shape[0]) } else { (1, n) };
        let mut out = vec![0f64; n];
        if g.params.b("nuslerp_flatten") {
            out = slerp_vec(t, &vecs[0], &vecs[1]);
        } else if g.params.b("nuslerp_row_wise") && g.shape.len() >= 2 {
            // dim 0: each column (for 2-D tensors) is one vector.
            for c in 0..cols {
                let col = |v: &Vec<f64>| (0..rows).map(|r| v[r * cols + c]).collect::<Vec<f64>>();
                for (r, x) in slerp_vec(t, &col(&vecs[0]), &col(&vecs[1])).into_iter().enumerate() {
                    out[r * cols + c] = x;
                }
            }
        } else {
            for r in 0..rows {
                let s = r * cols..(r + 1) * cols;
                out[s.clone()].copy_from_slice(&slerp_vec(t, &vecs[0][s.clone()], &vecs[1][s]));
            }
        }
        Ok(match &g.base {
            Some(b) => out.iter().zip(b).map(|(x, b)| b + *x as f32).collect(),
            None => out.into_iter().map(|x| x as f32).collect(),
        })
    }
}
