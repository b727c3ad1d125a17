//! The merge methods, one file each (the task-arithmetic family is one generalized
//! method, as in mergekit), and their registry.
pub mod generalized;
pub mod linear;
pub mod model_stock;
pub mod nuslerp;
pub mod passthrough;
pub mod slerp;
pub mod sparsify;

use super::config::{Kind, ParamValue};
use crate::{Error, Result};
use generalized::{Consensus, Generalized, Sparsify};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Which inputs a parameter is given for (mergekit's `ParameterScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One value for the whole tensor.
    Shared,
    /// One value per input, the base included.
    Input,
    /// One value per input other than the base.
    NonBase,
}

/// A parameter a method reads: its name, type, scope and default (`None`: required).
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub scope: Scope,
    pub default: Option<ParamValue>,
}

pub const fn float(name: &'static str, scope: Scope, default: Option<f64>) -> ParamSpec {
    ParamSpec {
        name,
        kind: Kind::Float,
        scope,
        default: match default {
            Some(x) => Some(ParamValue::Float(x)),
            None => None,
        },
    }
}

pub const fn boolean(name: &'static str, default: bool) -> ParamSpec {
    ParamSpec { name, kind: Kind::Bool, scope: Scope::Shared, default: Some(ParamValue::Bool(default)) }
}

/// What a method does with `base_model` (mergekit's `BasePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasePolicy {
    Required,
    Optional,
    /// The base, if named, is one more ordinary input.
    Ignored,
}

/// Structural requirements on one tensor's inputs (mergekit's `InputContract`).
#[derive(Debug, Clone, Copy)]
pub struct Contract {
    pub base: BasePolicy,
    pub min_inputs: usize,
    pub max_inputs: Option<usize>,
    pub min_non_base: usize,
    pub max_non_base: Option<usize>,
}

impl Contract {
    pub const fn new(base: BasePolicy, min_inputs: usize, max_inputs: Option<usize>) -> Self {
        Contract { base, min_inputs, max_inputs, min_non_base: 0, max_non_base: None }
    }

    /// Check `inputs` models, `has_base` of them the base; `what` names the tensor group.
    pub fn check(&self, method: &str, inputs: usize, has_base: bool, what: &str) -> Result<()> {
        let fail = |m: String| Err(Error::Input(format!("{method}: {m} for {what}")));
        if self.base == BasePolicy::Required && !has_base {
            return fail("needs a base_model among its inputs".into());
        }
        let non_base = inputs - usize::from(has_base && self.base != BasePolicy::Ignored);
        for (n, min, max, label) in [(inputs, self.min_inputs, self.max_inputs, "inputs"), (non_base, self.min_non_base, self.max_non_base, "non-base inputs")] {
            if n < min {
                return fail(format!("needs at least {min} {label}, got {n}"));
            }
            if let Some(max) = max.filter(|&m| n > m) {
                return fail(format!("takes {} {label}, got {n}", if max == min { format!("exactly {max}") } else { format!("at most {max}") }));
            }
        }
        Ok(())
    }
}

/// One input of a tensor: its values, or a delta over the base (a task vector).
pub enum Values {
    Full(Vec<f32>),
    Delta(Vec<f32>),
}

/// Parameter values resolved for one tensor.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub shared: BTreeMap<&'static str, ParamValue>,
    /// Per entry of [`Group::inputs`], in order.
    pub per_input: Vec<BTreeMap<&'static str, ParamValue>>,
}

impl Resolved {
    pub fn f(&self, name: &str) -> f64 {
        match self.shared.get(name) {
            Some(ParamValue::Float(x)) => *x,
            Some(ParamValue::Bool(b)) => f64::from(u8::from(*b)),
            None => panic!("parameter {name} was not resolved"),
        }
    }

    pub fn b(&self, name: &str) -> bool {
        matches!(self.shared.get(name), Some(ParamValue::Bool(true)))
    }

    pub fn input_f(&self, i: usize, name: &str) -> f64 {
        match self.per_input[i].get(name) {
            Some(ParamValue::Float(x)) => *x,
            Some(ParamValue::Bool(b)) => f64::from(u8::from(*b)),
            None => panic!("parameter {name} was not resolved for input {i}"),
        }
    }
}

/// The inputs of one output tensor: the base (when the method uses one) and the other
/// inputs in config order, with their parameters.
pub struct Group {
    pub name: String,
    pub shape: Vec<usize>,
    pub base: Option<Vec<f32>>,
    pub inputs: Vec<Values>,
    pub params: Resolved,
    /// Seed for this tensor's randomness (DARE, DELLA): the run's seed and the name.
    pub seed: u64,
    /// `--method-variant paper`.
    pub paper: bool,
}

impl Group {
    pub fn base(&self) -> &[f32] {
        self.base.as_deref().expect("the contract requires a base")
    }

    /// Input `i`'s delta over the base.
    pub fn delta(&self, i: usize) -> Vec<f32> {
        match &self.inputs[i] {
            Values::Delta(d) => d.clone(),
            Values::Full(v) => v.iter().zip(self.base()).map(|(x, b)| x - b).collect(),
        }
    }

    /// Input `i`'s delta over the base, computed in place of its values.
    pub fn take_delta(&mut self, i: usize) -> Vec<f32> {
        let v = std::mem::replace(&mut self.inputs[i], Values::Delta(vec![]));
        match v {
            Values::Delta(d) => d,
            Values::Full(mut v) => {
                let base = self.base.as_deref().expect("the contract requires a base");
                v.par_iter_mut().zip(base.par_iter()).for_each(|(x, b)| *x -= b);
                v
            }
        }
    }

    /// Input `i`'s values (a delta is added to the base).
    pub fn full(&self, i: usize) -> std::borrow::Cow<'_, [f32]> {
        match &self.inputs[i] {
            Values::Full(v) => std::borrow::Cow::Borrowed(v),
            Values::Delta(d) => std::borrow::Cow::Owned(d.iter().zip(self.base()).map(|(x, b)| x + b).collect()),
        }
    }

    /// Rows of the tensor as mergekit's kernels see them: the first dimension
    /// (1 for a vector).
    pub fn rows(&self) -> usize {
        if self.shape.len() >= 2 {
            self.shape[0]
        } else {
            1
        }
    }
}

/// A merge method: what it reads and how it combines one tensor.
pub trait MergeMethod: Sync {
    /// The name in `merge_method:`.
    fn name(&self) -> &'static str;
    fn params(&self) -> Vec<ParamSpec>;
    fn contract(&self) -> Contract;
    /// The merged tensor (f32, the group's shape).
    fn merge(&self, g: Group) -> Result<Vec<f32>>;
    /// Whether `--method-variant paper` changes this method.
    fn has_paper_variant(&self) -> bool {
        false
    }
}

/// Every method, by its mergekit name.
pub static METHODS: &[&dyn MergeMethod] = &[
    &linear::Linear,
    &slerp::Slerp,
    &nuslerp::NuSlerp,
    &model_stock::ModelStock,
    &passthrough::Passthrough,
    &Generalized { name: "task_arithmetic", consensus: None, sparsify: None, normalize: false, rescale: false },
    &Generalized { name: "ties", consensus: Some(Consensus::Sum), sparsify: Some(Sparsify::Magnitude), normalize: true, rescale: false },
    &Generalized { name: "dare_ties", consensus: Some(Consensus::Sum), sparsify: Some(Sparsify::Random), normalize: false, rescale: true },
    &Generalized { name: "dare_linear", consensus: None, sparsify: Some(Sparsify::Random), normalize: false, rescale: true },
    &Generalized { name: "breadcrumbs", consensus: None, sparsify: Some(Sparsify::MagnitudeOutliers), normalize: false, rescale: false },
    &Generalized { name: "breadcrumbs_ties", consensus: Some(Consensus::Sum), sparsify: Some(Sparsify::MagnitudeOutliers), normalize: false, rescale: false },
    &Generalized { name: "della", consensus: Some(Consensus::Sum), sparsify: Some(Sparsify::DellaMagprune), normalize: true, rescale: true },
    &Generalized { name: "della_linear", consensus: None, sparsify: Some(Sparsify::DellaMagprune), normalize: false, rescale: true },
];

pub fn by_name(name: &str) -> Result<&'static dyn MergeMethod> {
    METHODS.iter().copied().find(|m| m.name() == name).ok_or_else(|| {
        let names: Vec<&str> = METHODS.iter().map(|m| m.name()).collect();
        Error::Input(format!("merge_method {name:?} is not one instill runs: {}", names.join(", ")))
    })
}
