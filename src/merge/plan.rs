//! Which output tensors a merge writes and where each one's inputs come from, as
//! mergekit's `MergePlanner` lays them out: a `models:` merge is one slice spanning every
//! model's layers (the base appended when it is not listed); per slice, layer `j` of `n`
//! gets `t = j / (n - 1)` (1 for a one-layer slice) for gradients; tensors outside the
//! layers get `t = 0`, the embedding from the first slice's sources, the rest (final
//! norm, lm_head) from the last slice's.
use super::config::{evaluate, Layout, MergeConfig, ModelRef, Parameters, Slice, SliceSource};
use super::methods::{BasePolicy, MergeMethod, Resolved, Scope};
use super::source::Model;
use crate::{Error, Result};
use std::collections::BTreeMap;

/// One input of an output tensor.
#[derive(Debug, Clone)]
pub struct TensorInput {
    /// Index into `Plan::models`.
    pub model: usize,
    /// Its name in that model.
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Planned {
    pub name: String,
    pub shape: Vec<usize>,
    /// Non-base inputs in config order (all inputs when the method ignores the base).
    pub inputs: Vec<TensorInput>,
    pub base: Option<TensorInput>,
    pub params: Resolved,
    /// Indexed by token id (embedding, lm_head): rows follow the vocabulary.
    pub vocab: bool,
}

pub struct Plan {
    pub refs: Vec<ModelRef>,
    pub models: Vec<Model>,
    pub tensors: Vec<Planned>,
    pub num_layers: usize,
}

const LAYER_PREFIX: &str = "model.layers.";

/// `(layer, rest)` of a per-layer tensor name.
pub fn layer_of(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix(LAYER_PREFIX)?;
    let (i, rest) = rest.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

pub fn is_vocab(name: &str) -> bool {
    name == "model.embed_tokens.weight" || name == "lm_head.weight"
}

/// The config's slices; a `models:` config becomes one slice over whole models.
fn slices(cfg: &MergeConfig, models: &[Model], refs: &[ModelRef]) -> Result<Vec<Slice>> {
    let layers = |r: &ModelRef| -> Result<usize> {
        let m = &models[refs.iter().position(|x| x == r).expect("opened")];
        m.num_layers().ok_or_else(|| Error::Input(format!("{}: config.json has no num_hidden_layers", m.label)))
    };
    Ok(match &cfg.layout {
        Layout::Slices(s) => s.clone(),
        Layout::Models(ms) => {
            let mut sources = ms.iter().map(|(m, p)| Ok(SliceSource { model: m.clone(), layer_range: (0, layers(m)?), parameters: p.clone() })).collect::<Result<Vec<_>>>()?;
            if let Some(b) = cfg.base_model.as_ref().filter(|b| !ms.iter().any(|(m, _)| m == *b)) {
                sources.push(SliceSource { model: b.clone(), layer_range: (0, layers(b)?), parameters: Parameters::new() });
            }
            vec![Slice { sources, base_model: None, parameters: Parameters::new() }]
        }
    })
}

/// Resolve every parameter of `method` for one tensor (mergekit's `resolve_parameters`).
struct Resolver<'a> {
    cfg: &'a MergeConfig,
    method: &'a dyn MergeMethod,
}

impl Resolver<'_> {
    fn one(&self, name: &'static str, scopes: &[&Parameters], tensor: &str, t: f64, who: &str) -> Result<Option<super::config::ParamValue>> {
        let spec = self.method.params().into_iter().find(|p| p.name == name).expect("a declared parameter");
        for s in scopes {
            if let Some(setting) = s.get(name) {
                if let Some(v) = evaluate(tensor, setting, t, spec.kind).map_err(|m| Error::Input(format!("parameter {name} for {who}: {m}")))? {
                    return Ok(Some(v));
                }
            }
        }
        match spec.default {
            Some(d) => Ok(Some(d)),
            None => Err(Error::Input(format!("{}: missing required parameter {name} for {who}", self.method.name()))),
        }
    }

    fn resolve(&self, slice: &Slice, out_name: &str, inputs: &[(&SliceSource, String)], t: f64) -> Result<Resolved> {
        let mut r = Resolved::default();
        let shared_scopes = [&slice.parameters, &self.cfg.parameters];
        for p in self.method.params().iter().filter(|p| p.scope == Scope::Shared) {
            if let Some(v) = self.one(p.name, &shared_scopes, out_name, t, out_name)? {
                r.shared.insert(p.name, v);
            }
        }
        for (src, name) in inputs {
            let scopes = [&src.parameters, &slice.parameters, &self.cfg.parameters];
            let mut m = BTreeMap::new();
            for p in self.method.params().iter().filter(|p| p.scope != Scope::Shared) {
                if let Some(v) = self.one(p.name, &scopes, name, t, &format!("{}.{name}", src.model))? {
                    m.insert(p.name, v);
                }
            }
            r.per_input.push(m);
        }
        Ok(r)
    }
}

impl Plan {
    pub fn model(&self, r: &ModelRef) -> usize {
        self.refs.iter().position(|x| x == r).expect("opened")
    }
}

/// Lay out every output tensor of the merge.
pub fn plan(cfg: &MergeConfig, method: &dyn MergeMethod, refs: Vec<ModelRef>, models: Vec<Model>) -> Result<Plan> {
    let slices = slices(cfg, &models, &refs)?;
    let mut plan = Plan { refs, models, tensors: vec![], num_layers: 0 };
    let resolver = Resolver { cfg, method };
    for (i, s) in slices.iter().enumerate() {
        check_slice(cfg, method, s, i)?;
    }
    let first = &slices[0];
    let last = slices.last().expect("at least one slice");
    // Embedding first, then the layers, then the rest (mergekit's pre/layers/post order).
    let globals = |s: &Slice| -> Vec<String> { plan.models[plan.model(&s.sources[0].model)].names().into_iter().filter(|n| layer_of(n).is_none()).collect() };
    let (pre, post): (Vec<String>, Vec<String>) = {
        let mut names = globals(first);
        for n in globals(last) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let has_lm_head = slices.iter().flat_map(|s| &s.sources).any(|src| plan.models[plan.model(&src.model)].shape("lm_head.weight").is_some());
        if has_lm_head && !names.iter().any(|n| n == "lm_head.weight") {
            names.push("lm_head.weight".into());
        }
        names.into_iter().partition(|n| n == "model.embed_tokens.weight")
    };
    for name in &pre {
        let t = group(&plan, &resolver, cfg, method, first, name, &|_| name.clone(), 0.0)?;
        plan.tensors.push(t);
    }
    for s in &slices {
        let len = s.sources[0].layer_range.1 - s.sources[0].layer_range.0;
        for j in 0..len {
            let t = if len > 1 { j as f64 / (len - 1) as f64 } else { 1.0 };
            let src0 = &plan.models[plan.model(&s.sources[0].model)];
            let l0 = s.sources[0].layer_range.0 + j;
            let suffixes: Vec<String> = src0.names().into_iter().filter_map(|n| layer_of(&n).filter(|(l, _)| *l == l0).map(|(_, r)| r.to_string())).collect();
            let out_layer = plan.num_layers;
            for suffix in &suffixes {
                let out = format!("{LAYER_PREFIX}{out_layer}.{suffix}");
                let name_in = |src: &SliceSource| format!("{LAYER_PREFIX}{}.{suffix}", src.layer_range.0 + j);
                let planned = group(&plan, &resolver, cfg, method, s, &out, &name_in, t)?;
                plan.tensors.push(planned);
            }
            plan.num_layers += 1;
        }
    }
    for name in &post {
        let t = group(&plan, &resolver, cfg, method, last, name, &|_| name.clone(), 0.0)?;
        plan.tensors.push(t);
    }
    Ok(plan)
}

fn check_slice(cfg: &MergeConfig, method: &dyn MergeMethod, s: &Slice, i: usize) -> Result<()> {
    let lens: Vec<usize> = s.sources.iter().map(|src| src.layer_range.1 - src.layer_range.0).collect();
    if lens.iter().any(|l| *l != lens[0]) {
        return Err(Error::Input(format!("slices[{i}]: all sources must span the same number of layers, got {lens:?}")));
    }
    let base = s.base_model.as_ref().or(cfg.base_model.as_ref());
    let has_base = base.is_some_and(|b| s.sources.iter().any(|src| &src.model == b));
    if let Some(b) = base.filter(|_| method.contract().base != BasePolicy::Ignored && !has_base) {
        return Err(Error::Input(format!("slices[{i}]: base_model {b} is not among the inputs")));
    }
    method.contract().check(method.name(), s.sources.len(), has_base, &format!("slices[{i}]"))
}

/// One output tensor: its inputs (base split off) and their resolved parameters.
#[allow(clippy::too_many_arguments)]
fn group(plan: &Plan, resolver: &Resolver, cfg: &MergeConfig, method: &dyn MergeMethod, s: &Slice, out: &str, name_in: &dyn Fn(&SliceSource) -> String, t: f64) -> Result<Planned> {
    let base_ref = s.base_model.as_ref().or(cfg.base_model.as_ref()).filter(|_| method.contract().base != BasePolicy::Ignored);
    let mut base = None;
    let mut inputs = vec![];
    let mut non_base_sources = vec![];
    let mut shape: Option<(Vec<usize>, String)> = None;
    for src in &s.sources {
        let idx = plan.model(&src.model);
        let m = &plan.models[idx];
        let mut name = name_in(src);
        if m.shape(&name).is_none() && name == "lm_head.weight" && m.tied() {
            name = "model.embed_tokens.weight".into(); // mergekit's tied_names
        }
        let sh = m.shape(&name).ok_or_else(|| Error::Input(format!("{}: tensor {name:?} is missing (needed for {out})", m.label)))?;
        match &shape {
            Some((s0, who)) if *s0 != sh && !is_vocab(out) => return Err(Error::Input(format!("tensor {out}: shape {sh:?} in {} but {s0:?} in {who}", m.label))),
            None => shape = Some((sh, m.label.clone())),
            _ => {}
        }
        let input = TensorInput { model: idx, name: name.clone() };
        if Some(&src.model) == base_ref {
            base = Some(input);
        } else {
            inputs.push(input);
            non_base_sources.push((src, name));
        }
    }
    let params = resolver.resolve(s, out, &non_base_sources, t)?;
    Ok(Planned { name: out.to_string(), shape: shape.expect("a slice has sources").0, inputs, base, params, vocab: is_vocab(out) })
}
