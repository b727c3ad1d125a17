//! Model Stock (Jang et al. 2024), as mergekit's `model_stock`: with `N` fine-tuned
//! models and the base `w0`, `cos` is the mean pairwise cosine of their deltas (over the
//! flattened tensor, or per row with `filter_wise`), `t = N cos / (1 + (N - 1) cos)` (0 at
//! the singularity), and the result `t * mean(w_i) + (1 - t) * w0`.
use super::{boolean, BasePolicy, Contract, Group, MergeMethod, ParamSpec};
use crate::Result;

pub struct ModelStock;

/// The interpolation weight of one vector (a row, or the whole tensor).
fn ratio(offsets: &[Vec<f64>]) -> f64 {
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut cos = vec![];
    for i in 0..offsets.len() {
        for j in i + 1..offsets.len() {
            let dot: f64 = offsets[i].iter().zip(&offsets[j]).map(|(a, b)| a * b).sum();
            cos.push((dot / (norm(&offsets[i]) * norm(&offsets[j])).max(1e-6)).clamp(-1.0, 1.0));
        }
    }
    let cos = cos.iter().sum::<f64>() / cos.len() as f64;
    let n = offsets.len() as f64;
    let den = 1.0 + (n - 1.0) * cos;
    if den.abs() < 1e-6 {
        0.0
    } else {
        n * cos / den
    }
}

impl MergeMethod for ModelStock {
    fn name(&self) -> &'static str {
        "model_stock"
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![boolean("filter_wise", false)]
    }

    fn contract(&self) -> Contract {
        Contract::new(BasePolicy::Required, 3, None)
    }

    fn merge(&self, g: Group) -> Result<Vec<f32>> {
        let w0 = g.base();
        let ws: Vec<std::borrow::Cow<'_, [f32]>> = (0..g.inputs.len()).map(|i| g.full(i)).collect();
        let n = w0.len();
        let cols = if g.params.b("filter_wise") && g.shape.len() >= 2 { n / g.shape[0] } else { n };
        let count = ws.len() as f32;
        let mut out = vec![0f32; n];
        for start in (0..n).step_by(cols.max(1)) {
            let s = start..start + cols;
            let offsets: Vec<Vec<f64>> = ws.iter().map(|w| w[s.clone()].iter().zip(&w0[s.clone()]).map(|(a, b)| (a - b) as f64).collect()).collect();
            let t = ratio(&offsets) as f32;
            for k in s {
                let avg = ws.iter().fold(0f32, |acc, w| acc + w[k]) / count;
                out[k] = t * avg + (1.0 - t) * w0[k];
            }
        }
        Ok(out)
    }
}
