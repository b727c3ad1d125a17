//! Linear (model soups, Wortsman et al. 2022): `sum(w_i * x_i) / sum(w_i)`, or the plain
//! weighted sum with `normalize: false`. Every input (the base too, when named) takes a
//! `weight`. As in mergekit the sum is accumulated in f32 in input order.
use super::{boolean, float, BasePolicy, Contract, Group, MergeMethod, ParamSpec, Scope};
use crate::Result;
use rayon::prelude::*;

pub struct Linear;

impl MergeMethod for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![float("weight", Scope::Input, None), boolean("normalize", true)]
    }

    fn contract(&self) -> Contract {
        Contract::new(BasePolicy::Ignored, 1, None)
    }

    fn merge(&self, g: Group) -> Result<Vec<f32>> {
        let n: usize = g.shape.iter().product();
        let mut out = vec![0f32; n];
        let mut total = 0f32;
        for i in 0..g.inputs.len() {
            let w = g.params.input_f(i, "weight") as f32;
            total += w;
            let x = g.full(i);
            out.par_iter_mut().zip(x.par_iter()).for_each(|(o, v)| *o += v * w);
        }
        if g.params.b("normalize") {
            out.par_iter_mut().for_each(|o| *o /= total);
        }
        Ok(out)
    }
}
