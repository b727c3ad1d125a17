//! Sparse fine-tuning with skill localization: full tuning for `localize_steps`, then a
//! mask of the `density` fraction of elements that changed most (global top-k of
//! |tuned - base|), then either retraining from the base with only the mask free
//! (Ansell et al. 2022, "Composable Sparse Fine-Tuning", LT-SFT) or, when the run ends
//! there, grafting the masked changes onto the base (Panigrahi et al. 2023, "Task-Specific
//! Skill Localization", with the magnitude mask they start their mask search from).
//!
//! The result is a [`SparseDelta`]: indices and changes, a few MB where the model is
//! hundreds; several compose with `instill graft`.
use super::sparse_delta::{hf_order, Entry, SparseDelta};
use super::Adapter;
use crate::hub::ModelSource;
use crate::model::weights::save_hf_dir;
use crate::train::optim::AdamW;
use crate::{CausalLm, Error, LoadOptions, Result};
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseConfig {
    /// Fraction of the trainable weights' elements the mask keeps (0.01: 1%).
    #[serde(default = "density")]
    pub density: f64,
    /// Full-tuning steps before the mask is picked; the rest of the run retrains only
    /// the mask, from the base. Equal to the run's steps: no retraining, the result is
    /// the graft of the largest changes. Default: half the run's steps.
    pub localize_steps: Option<usize>,
    /// Regexes of Hugging Face weight names that may train (empty: every weight).
    #[serde(default)]
    pub train: Vec<String>,
    /// Regexes of weights kept frozen, e.g. `embed_tokens`.
    #[serde(default)]
    pub freeze: Vec<String>,
}

fn density() -> f64 {
    0.01
}

impl Default for SparseConfig {
    fn default() -> Self {
        SparseConfig { density: density(), localize_steps: None, train: vec![], freeze: vec![] }
    }
}

impl SparseConfig {
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(self.density > 0.0 && self.density <= 1.0) {
            return Err(format!("sparse.density: {} is not in (0, 1]", self.density));
        }
        if self.localize_steps == Some(0) {
            return Err("sparse.localize_steps: the mask is picked from tuned weights, so at least 1 full-tuning step".into());
        }
        Ok(())
    }

    /// The step at which the mask is picked, in a run of `total` steps.
    pub fn localize_at(&self, total: usize) -> usize {
        self.localize_steps.unwrap_or(total.div_ceil(2)).max(1)
    }
}

/// The mask, once picked.
struct Localized {
    /// Per variable, sorted flat indices in the model's own element order.
    masks: Vec<Vec<u32>>,
    /// The base's values at those indices.
    base: Vec<Vec<f32>>,
}

/// What localization found.
#[derive(Debug, Clone, Serialize)]
pub struct LocalizeReport {
    pub nnz: usize,
    pub total: usize,
    /// The smallest |change| kept.
    pub threshold: f32,
    /// Share of the full-tuning change's squared norm inside the mask.
    pub captured: f64,
    /// Mask elements per kind of weight (attention, mlp, norm, embed, head).
    pub by_kind: BTreeMap<String, usize>,
    /// Whether the run goes on to retrain the mask (LT-SFT) or grafts it as it is.
    pub retrain: bool,
}

pub struct Sparse {
    vars: Vec<(String, Var)>,
    config: SparseConfig,
    /// Where the base weights come from (to compare with at localization).
    base: Option<(ModelSource, LoadOptions)>,
    tokenizer_files: Vec<(&'static str, Vec<u8>)>,
    loc: RefCell<Option<Localized>>,
}

/// The kind of a weight, for the report.
fn kind(name: &str) -> &'static str {
    match name {
        n if n.contains("embed_tokens") => "embed",
        n if n.starts_with("lm_head") => "head",
        n if n.contains("norm") => "norm",
        n if n.contains("self_attn") => "attention",
        _ => "mlp",
    }
}

/// The k-th largest of non-negative, finite values (their f32 bits order as integers):
/// a 65536-bin histogram of the high bits, then a sort of the one bin it falls in.
fn kth_largest(ds: &[Vec<f32>], k: usize) -> f32 {
    let mut hist = vec![0usize; 1 << 16];
    ds.iter().flatten().for_each(|x| hist[(x.to_bits() >> 16) as usize] += 1);
    let (mut above, mut bin) = (0, 0);
    for b in (0..hist.len()).rev() {
        if above + hist[b] >= k {
            bin = b;
            break;
        }
        above += hist[b];
    }
    let mut inbin: Vec<u32> = ds.iter().flatten().map(|x| x.to_bits()).filter(|b| (b >> 16) as usize == bin).collect();
    inbin.sort_unstable_by(|a, b| b.cmp(a));
    f32::from_bits(inbin[k - above - 1])
}

/// Exactly `k` indices: every value above `thr`, then ties at `thr` in model order.
fn pick(ds: &[Vec<f32>], thr: f32, k: usize) -> Vec<Vec<u32>> {
    let above: usize = ds.iter().flatten().filter(|&&x| x > thr).count();
    let mut ties = k - above;
    ds.iter()
        .map(|d| {
            let mut m = vec![];
            for (i, &x) in d.iter().enumerate() {
                if x > thr || (x == thr && ties > 0) {
                    ties -= usize::from(x == thr);
                    m.push(i as u32);
                }
            }
            m
        })
        .collect()
}

fn values(v: &Var) -> Result<Vec<f32>> {
    Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

impl Sparse {
    /// Make the selected weights trainable. `base` is where the untuned weights are
    /// reloaded from at localization. From a checkpoint written after localization
    /// (`from` holds a sparse delta) the mask and tuned values are restored.
    pub fn attach(model: &mut CausalLm, tok: &crate::Tokenizer, config: &SparseConfig, base: (ModelSource, LoadOptions), from: Option<&Path>) -> Result<Self> {
        let select = super::full::selector(&config.train, &config.freeze, "sparse")?;
        let vars = model.make_trainable(&select)?;
        if vars.is_empty() {
            return Err(Error::Input("sparse: the train/freeze patterns leave no weight to train".into()));
        }
        let s = Sparse { vars, config: config.clone(), base: Some(base), tokenizer_files: tok.hf_files(), loc: RefCell::new(None) };
        if let Some(dir) = from.filter(|d| super::peft_type(d).is_ok_and(|t| t == "SPARSE")) {
            let (delta, _) = SparseDelta::read(dir)?;
            s.restore(model, &delta, dir, true)?;
        }
        Ok(s)
    }

    /// A saved sparse delta on `model` (`--adapter`): its weights become f32 variables
    /// with the change added.
    pub fn load(model: &mut CausalLm, dir: &Path) -> Result<Self> {
        let (delta, cfg) = SparseDelta::read(dir)?;
        let vars = super::sparse_delta::touched_vars(model, &delta, dir)?;
        let config = SparseConfig { density: cfg["density"].as_f64().unwrap_or(1.0), localize_steps: cfg["localize_steps"].as_u64().map(|n| n as usize), ..Default::default() };
        let s = Sparse { vars, config, base: None, tokenizer_files: vec![], loc: RefCell::new(None) };
        s.restore(model, &delta, dir, false)?;
        Ok(s)
    }

    /// Put `delta` on the variables: the tuned values exactly (`exact`, resuming a run:
    /// `values` must be there) or base + delta; the mask becomes the delta's indices.
    fn restore(&self, model: &mut CausalLm, delta: &SparseDelta, dir: &Path, exact: bool) -> Result<()> {
        let file = dir.join(super::sparse_delta::DELTA_FILE);
        let mut masks = vec![vec![]; self.vars.len()];
        let mut base = vec![vec![]; self.vars.len()];
        for e in &delta.entries {
            let vi = self.vars.iter().position(|(n, _)| *n == e.name).ok_or_else(|| Error::file(&file, format!("{}: not a weight this run trains (train/freeze patterns changed?)", e.name)))?;
            let var = &self.vars[vi].1;
            if e.indices.last().is_some_and(|&k| k as usize >= var.elem_count()) {
                return Err(Error::file(&file, format!("{}: an index is past the end of the weight", e.name)));
            }
            let tuned = match (exact, &e.values) {
                (true, None) => return Err(Error::file(&file, format!("{}: no .values tensor, which resuming needs", e.name))),
                (true, Some(v)) => Some(v),
                (false, _) => None,
            };
            let order = hf_order(model, &e.name, var.as_tensor())?;
            let mut w = values(var)?;
            let mut pairs: Vec<(u32, usize)> = e.indices.iter().enumerate().map(|(j, &k)| (order.internal(k as usize) as u32, j)).collect();
            pairs.sort_unstable();
            for &(i, j) in &pairs {
                base[vi].push(w[i as usize]);
                w[i as usize] = tuned.map_or(w[i as usize] + e.delta[j], |t| t[j]);
            }
            masks[vi] = pairs.iter().map(|p| p.0).collect();
            var.set(&Tensor::from_vec(w, var.shape(), var.device())?)?;
        }
        let active: Vec<bool> = masks.iter().map(|m| !m.is_empty()).collect();
        model.set_trainable(&self.vars, &active)?;
        *self.loc.borrow_mut() = Some(Localized { masks, base });
        Ok(())
    }

    pub fn config(&self) -> &SparseConfig {
        &self.config
    }

    pub fn localized(&self) -> bool {
        self.loc.borrow().is_some()
    }

    /// Point the optimiser at the masks (a run resumed after localization).
    pub fn restore_optimizer(&self, opt: &mut AdamW) {
        if let Some(l) = &*self.loc.borrow() {
            opt.set_masks(l.masks.clone());
        }
    }

    /// Which variables still train (after localization: those with a non-empty mask).
    pub fn active(&self) -> Option<Vec<bool>> {
        self.loc.borrow().as_ref().map(|l| l.masks.iter().map(|m| !m.is_empty()).collect())
    }

    /// The untuned weights, in variable order, reloaded from the base.
    fn base_weights(&self) -> Result<Vec<Vec<f32>>> {
        let (source, opts) = self.base.as_ref().ok_or_else(|| Error::Input("sparse: a loaded delta has no base to localize against".into()))?;
        let mut base = CausalLm::load(source, opts)?;
        let names: std::collections::HashSet<&str> = self.vars.iter().map(|(n, _)| n.as_str()).collect();
        let bv = base.make_trainable(&|n| names.contains(n))?;
        if bv.len() != self.vars.len() || bv.iter().zip(&self.vars).any(|(a, b)| a.0 != b.0) {
            return Err(Error::Input("sparse: the base model's weights do not line up with the tuned ones".into()));
        }
        bv.iter().map(|(_, v)| values(v)).collect()
    }

    /// Pick the mask from the change since the base; then reset every weight to the
    /// base and restrict the optimiser to the mask (`retrain`), or keep the masked
    /// changes only (the graft, when no training follows).
    pub fn localize(&self, model: &mut CausalLm, opt: &mut AdamW, retrain: bool) -> Result<LocalizeReport> {
        let base = self.base_weights()?;
        let mut diffs = vec![];
        let mut tuned = vec![];
        for ((_, v), b) in self.vars.iter().zip(&base) {
            let w = values(v)?;
            diffs.push(w.iter().zip(b).map(|(x, y)| (x - y).abs()).collect::<Vec<f32>>());
            tuned.push(if retrain { vec![] } else { w });
        }
        let total: usize = diffs.iter().map(Vec::len).sum();
        let k = ((self.config.density * total as f64).ceil() as usize).clamp(1, total);
        let threshold = kth_largest(&diffs, k);
        let masks = pick(&diffs, threshold, k);
        let sq = |d: &[f32], m: Option<&[u32]>| -> f64 { m.map_or_else(|| d.iter().map(|&x| (x as f64).powi(2)).sum(), |m| m.iter().map(|&i| (d[i as usize] as f64).powi(2)).sum()) };
        let (inside, all): (f64, f64) = diffs.iter().zip(&masks).map(|(d, m)| (sq(d, Some(m)), sq(d, None))).fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        let mut by_kind = BTreeMap::new();
        for ((n, _), m) in self.vars.iter().zip(&masks) {
            *by_kind.entry(kind(n).to_string()).or_default() += m.len();
        }
        let mut kept = vec![];
        for (((_, v), (b, m)), t) in self.vars.iter().zip(base.into_iter().zip(&masks)).zip(&tuned) {
            kept.push(m.iter().map(|&i| b[i as usize]).collect());
            let mut w = b;
            m.iter().filter(|_| !retrain).for_each(|&i| w[i as usize] = t[i as usize]);
            v.set(&Tensor::from_vec(w, v.shape(), v.device())?)?;
        }
        let active: Vec<bool> = masks.iter().map(|m| !m.is_empty()).collect();
        model.set_trainable(&self.vars, &active)?;
        if retrain {
            opt.set_masks(masks.clone());
        }
        *self.loc.borrow_mut() = Some(Localized { masks, base: kept });
        Ok(LocalizeReport { nnz: k, total, threshold, captured: if all > 0.0 { inside / all } else { 0.0 }, by_kind, retrain })
    }

    /// The change inside the mask, in Hugging Face order (None before localization).
    pub fn delta(&self, model: &CausalLm) -> Result<Option<SparseDelta>> {
        let loc = self.loc.borrow();
        let Some(l) = loc.as_ref() else { return Ok(None) };
        let mut entries = vec![];
        for (((name, v), m), b) in self.vars.iter().zip(&l.masks).zip(&l.base) {
            if m.is_empty() {
                continue;
            }
            let w = values(v)?;
            let inv = hf_order(model, name, v.as_tensor())?.inverse();
            let mut rows: Vec<(u32, f32, f32)> = m.iter().zip(b).map(|(&i, &b)| (inv.as_ref().map_or(i, |p| p[i as usize]), w[i as usize] - b, w[i as usize])).collect();
            rows.sort_unstable_by_key(|r| r.0);
            entries.push(Entry { name: name.clone(), indices: rows.iter().map(|r| r.0).collect(), delta: rows.iter().map(|r| r.1).collect(), values: Some(rows.iter().map(|r| r.2).collect()) });
        }
        Ok(Some(SparseDelta { entries }))
    }
}

impl Adapter for Sparse {
    fn method(&self) -> &'static str {
        "sparse"
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        self.vars.clone()
    }

    fn set_training(&self, _on: bool) {}

    fn begin_step(&self, _seed: u64, _step: u64) {}

    /// Before localization (a full-tuning checkpoint): the whole model. After: the
    /// sparse delta.
    fn save(&self, model: &CausalLm, dir: &Path) -> Result<()> {
        match self.delta(model)? {
            Some(d) => {
                let trainable: usize = self.vars.iter().map(|(_, v)| v.elem_count()).sum();
                let c = &self.config;
                d.write(dir, serde_json::json!({"density": c.density, "localize_steps": c.localize_steps, "trainable_elements": trainable}))
            }
            None => save_hf_dir(dir, model.arch, &model.config, model.named_tensors()?, candle_core::DType::F32, 2_000_000_000, &self.tokenizer_files),
        }
    }

    fn as_sparse(&self) -> Option<&Sparse> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_selection_is_exact_with_ties() {
        let ds = vec![vec![0.5, 0.1, 3.0, 0.5], vec![0.0, 0.5, 2.0e-9, 7.0]];
        assert_eq!(kth_largest(&ds, 1), 7.0);
        assert_eq!(kth_largest(&ds, 3), 0.5);
        // k = 4: 7.0 and 3.0, then two of the three 0.5s, the first two in model order.
        assert_eq!(pick(&ds, kth_largest(&ds, 4), 4), vec![vec![0, 2, 3], vec![3]]);
        assert_eq!(kth_largest(&ds, 8), 0.0);
        let all = pick(&ds, 0.0, 8);
        assert_eq!(all.iter().map(Vec::len).sum::<usize>(), 8);
    }
}
