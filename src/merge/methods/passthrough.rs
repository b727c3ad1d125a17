//! Passthrough: the one input's tensor as it is, or times its `scale` (mergekit's
//! `passthrough`, used with `slices` to stack layers).
use super::{float, BasePolicy, Contract, Group, MergeMethod, ParamSpec, Scope};
use crate::Result;

pub struct Passthrough;

impl MergeMethod for Passthrough {
    fn name(&self) -> &'static str {
        "passthrough"
    }

    fn params(&self) -> Vec<ParamSpec> {
        // mergekit's default is "no scale"; multiplying by 1.0 is the same.
        vec![float("scale", Scope::Input, Some(1.0))]
    }

    fn contract(&self) -> Contract {
        Contract::new(BasePolicy::Ignored, 1, Some(1))
    }

    fn merge(&self, g: Group) -> Result<Vec<f32>> {
        let x = g.full(0).into_owned();
        let s = g.params.input_f(0, "scale") as f32;
        Ok(if s == 1.0 { x } else { x.into_iter().map(|v| v * s).collect() })
    }
}
