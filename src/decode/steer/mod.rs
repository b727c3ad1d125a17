//! Decoding-time tuning: the next-token distribution of the main model is steered by
//! companion models that decode the same tokens beside it, each with its own KV cache.
//!
//! A method is a [`Combine`]: given the log-probabilities of the main model and of its
//! companions for one row, it returns the scores the sampler then draws from (after the
//! row's other logits processors, temperature, top-k/p). One file per method, named in
//! [`METHODS`]:
//! - `proxy` (proxy-tuning, Liu et al. 2024): `main + alpha * (expert - anti_expert)`;
//! - `eft-up` / `eft-down` (emulated fine-tuning, Mitchell et al. 2023): a base model of
//!   one scale plus `beta` times the log-ratio of a fine-tuned/reference pair of the other;
//! - `contrastive` (contrastive decoding, Li et al. 2023, in O'Brien & Lewis's form):
//!   `(1 + beta) * main - beta * amateur` over the main model's plausible tokens.
//!
//! Everything is computed in log-probability space, as the papers write it. (A row's
//! log-softmax differs from its logits by one constant, so the sampled distribution is
//! the same either way; log-probabilities keep the printed scores comparable.)
mod contrastive;
mod eft;
mod proxy;

use super::processor::log_softmax;
use crate::model::cache::KvCache;
use crate::model::{Batch, CausalLm};
use crate::peft::multi::{AdapterSet, Kind, Route};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use candle_core::Tensor;
use std::path::Path;
use std::sync::Arc;

/// One decoding-time method: how companions' log-probs change the main model's.
pub trait Combine: Send + Sync {
    /// The companions' roles, in the order they are given.
    fn roles(&self) -> &'static [&'static str];
    /// Refuse a set of models the method is not meant for (e.g. EFT's scales).
    fn check(&self, _main: &CausalLm, _companions: &[&CausalLm]) -> Result<()> {
        Ok(())
    }
    /// The combined scores of one row from its log-probabilities (all the same length).
    fn combine(&self, main: &[f32], companions: &[&[f32]]) -> Vec<f32>;
    /// A one-line description with the method's settings (for logs and reports).
    fn describe(&self) -> String;
}

/// The methods and their settings' names.
pub const METHODS: &[(&str, &str)] = &[
    ("proxy", "alpha: weight of (expert - anti-expert), default 1"),
    ("eft-up", "beta: weight of the small (fine-tuned - reference) log-ratio on a larger base, default 1"),
    ("eft-down", "beta: weight of the large (fine-tuned - reference) log-ratio on a smaller base, default 1"),
    ("contrastive", "beta: weight of (main - amateur), default 0.5; alpha: plausibility cut-off, default 0.1"),
];

/// Settings a method may read; None takes the method's default.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub alpha: Option<f32>,
    pub beta: Option<f32>,
}

/// Build a method by name.
pub fn method(name: &str, s: &Settings) -> Result<Box<dyn Combine>> {
    let unused = |what: &str, v: Option<f32>| match v {
        Some(_) => Err(Error::Input(format!("decoding method {name:?} takes no {what}"))),
        None => Ok(()),
    };
    Ok(match name {
        "proxy" => {
            unused("beta", s.beta)?;
            Box::new(proxy::Proxy { alpha: s.alpha.unwrap_or(1.0) })
        }
        "eft-up" | "eft-down" => {
            unused("alpha", s.alpha)?;
            Box::new(eft::Eft { beta: s.beta.unwrap_or(1.0), up: name == "eft-up" })
        }
        "contrastive" => Box::new(contrastive::Contrastive::new(s.beta.unwrap_or(0.5), s.alpha.unwrap_or(0.1))?),
        _ => {
            let names: Vec<&str> = METHODS.iter().map(|(n, _)| *n).collect();
            return Err(Error::Input(format!("unknown decoding method {name:?}: one of {}", names.join(", "))));
        }
    })
}

/// Models that run as one batch: a model of its own (one role), or one base carrying
/// per-row adapters for two roles (an expert and its anti-expert over the same weights:
/// one forward pass of 2n rows reads the weights once instead of twice).
pub struct Unit {
    pub model: Arc<CausalLm>,
    /// The adapter route of a shared base, and the slot of each role it serves.
    route: Option<Route>,
    slots: Vec<Option<usize>>,
}

impl Unit {
    /// A model of its own, serving one role.
    pub fn own(model: Arc<CausalLm>) -> Self {
        Unit { model, route: None, slots: vec![None] }
    }

    /// A base with an adapter set installed, serving one role per slot (None: the base).
    pub fn shared(model: Arc<CausalLm>, route: Route, slots: Vec<Option<usize>>) -> Self {
        Unit { model, route: Some(route), slots }
    }

    /// One base serving one role per adapter (None: the base alone), each LoRA a per-row
    /// slot of the base (an adapter named twice is loaded once).
    pub fn with_adapters(mut model: CausalLm, adapters: &[Option<&Path>]) -> Result<Self> {
        let mut set = AdapterSet::install(&mut model);
        let mut slots = vec![];
        for dir in adapters {
            let Some(dir) = dir else {
                slots.push(None);
                continue;
            };
            let name = dir.display().to_string();
            let served = match set.get(&name) {
                Some(s) => s.clone(),
                None => set.load(&mut model, &name, dir)?.clone(),
            };
            match served.kind {
                Kind::Lora { slot } => slots.push(Some(slot)),
                Kind::Prompt { .. } => return Err(Error::file(dir, "a prompt-tuning adapter cannot share a batch with another role: give it its own model")),
            }
        }
        Ok(Unit::shared(Arc::new(model), set.route.clone(), slots))
    }

    fn set_route(&self, rows: impl Fn(Option<usize>) -> Vec<Option<usize>>) {
        if let Some(r) = &self.route {
            let mut w = r.write().expect("route");
            *w = self.slots.iter().flat_map(|&s| rows(s)).collect();
        }
    }
}

/// A method with its companion models, shared by every generation that uses it.
pub struct Steer {
    pub method: Box<dyn Combine>,
    pub units: Vec<Unit>,
    /// For each role: its unit and which of the unit's slots.
    roles: Vec<(usize, usize)>,
    /// What each companion is (model and adapter), for reports.
    pub labels: Vec<String>,
}

impl std::fmt::Debug for Steer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Steer({}; {})", self.method.describe(), self.labels.join(", "))
    }
}

impl Steer {
    /// Check the companions against the method's roles and the main model's tokenizer.
    /// `units` serve the roles in order (a shared unit two consecutive roles).
    pub fn new(method: Box<dyn Combine>, main: &CausalLm, main_tok: &Tokenizer, units: Vec<(Unit, Arc<Tokenizer>)>, labels: Vec<String>) -> Result<Self> {
        let roles = method.roles();
        let n: usize = units.iter().map(|(u, _)| u.slots.len()).sum();
        if n != roles.len() || labels.len() != n {
            return Err(Error::Input(format!("{} takes {} companion model(s) ({}), got {n}", method.describe(), roles.len(), roles.join(", "))));
        }
        let map: Vec<(usize, usize)> = units.iter().enumerate().flat_map(|(i, (u, _))| (0..u.slots.len()).map(move |h| (i, h))).collect();
        for (r, &(u, _)) in map.iter().enumerate() {
            same_tokenizer(main_tok, &units[u].1).map_err(|e| Error::Input(format!("the {} model ({}) cannot steer the main model: {e}", roles[r], labels[r])))?;
        }
        let models: Vec<&CausalLm> = map.iter().map(|&(u, _)| units[u].0.model.as_ref()).collect();
        method.check(main, &models)?;
        let labels = labels.iter().zip(roles).map(|(l, r)| format!("{r}: {l}")).collect();
        Ok(Steer { method, units: units.into_iter().map(|(u, _)| u).collect(), roles: map, labels })
    }

    pub fn describe(&self) -> String {
        format!("{} with {}", self.method.describe(), self.labels.join(", "))
    }

    /// The shortest context of the companions.
    pub fn max_position(&self) -> usize {
        self.units.iter().map(|u| u.model.config.max_position).min().unwrap_or(usize::MAX)
    }

    /// Replace each row's logits (main model, `rows` of them) by the combined scores.
    pub fn apply(&self, main: &mut [Vec<f32>], run: &Running) -> Result<()> {
        let units: Vec<Vec<Vec<f32>>> = run.logits.iter().map(|t| t.to_vec2::<f32>()).collect::<std::result::Result<_, _>>()?;
        let n = main.len();
        for (r, row) in main.iter_mut().enumerate() {
            let rows: Vec<&[f32]> = self.roles.iter().map(|&(u, h)| units[u][h * n + r].as_slice()).collect();
            *row = self.scores(row, &rows);
        }
        Ok(())
    }

    /// The combined scores of one row from the main model's and the companions' logits.
    /// Models of one tokenizer may pad their embeddings differently: the common prefix
    /// of the vocabulary is scored, anything past it is never chosen.
    pub fn scores(&self, main: &[f32], companions: &[&[f32]]) -> Vec<f32> {
        let n = companions.iter().map(|o| o.len()).chain([main.len()]).min().unwrap_or(0);
        let lps: Vec<Vec<f32>> = companions.iter().map(|o| log_softmax(&o[..n])).collect();
        let refs: Vec<&[f32]> = lps.iter().map(|v| v.as_slice()).collect();
        let mut combined = self.method.combine(&log_softmax(&main[..n]), &refs);
        combined.resize(main.len(), f32::NEG_INFINITY);
        combined
    }

    /// Prefill every unit with the prompts, as the main model was (`prefill`); a shared
    /// unit once per role, its caches then stacked into one batch.
    pub fn start(&self, prefill: impl Fn(&CausalLm) -> Result<(KvCache, Tensor)>) -> Result<Running> {
        let mut run = Running { caches: vec![], logits: vec![] };
        for u in &self.units {
            let (mut caches, mut logits) = (vec![], vec![]);
            for &slot in &u.slots {
                if let Some(r) = &u.route {
                    *r.write().expect("route") = vec![slot];
                }
                let (c, l) = prefill(&u.model)?;
                caches.push(c);
                logits.push(l);
            }
            run.caches.push(if caches.len() == 1 { caches.pop().expect("one") } else { KvCache::concat_left_padded(&caches.iter().collect::<Vec<_>>())? });
            run.logits.push(Tensor::cat(&logits, 0)?);
        }
        Ok(run)
    }

    /// Feed every unit the tokens the main model takes (one per row, at these positions).
    pub fn step(&self, run: &mut Running, next: &[u32], pos: &[u32]) -> Result<()> {
        for ((u, c), l) in self.units.iter().zip(&mut run.caches).zip(&mut run.logits) {
            let k = u.slots.len();
            let step = Batch::step(&next.repeat(k), &pos.repeat(k));
            u.set_route(|s| vec![s; next.len()]);
            *l = u.model.forward(&step, Some(c), crate::model::LogitsFor::Last)?;
        }
        Ok(())
    }

    /// Keep only these of the `n` rows (finished rows leave the batch).
    pub fn retain(&self, run: &mut Running, keep: &[usize], n: usize) -> Result<()> {
        for ((u, c), l) in self.units.iter().zip(&mut run.caches).zip(&mut run.logits) {
            let rows: Vec<usize> = (0..u.slots.len()).flat_map(|h| keep.iter().map(move |&k| h * n + k)).collect();
            c.retain_rows(&rows)?;
            let ids = Tensor::new(rows.iter().map(|&k| k as u32).collect::<Vec<_>>().as_slice(), &candle_core::Device::Cpu)?;
            *l = l.index_select(&ids, 0)?;
        }
        Ok(())
    }
}

/// The companions' state during one generation: each unit's cache and last logits, its
/// rows in role-major order (all rows of its first role, then of its second).
pub struct Running {
    caches: Vec<KvCache>,
    logits: Vec<Tensor>,
}

/// Models that steer each other must agree on what every id means: the vocabulary
/// (every token string), the special tokens, and what ends a turn.
pub fn same_tokenizer(a: &Tokenizer, b: &Tokenizer) -> std::result::Result<(), String> {
    if a.vocab_size() != b.vocab_size() {
        return Err(format!("vocabularies differ in size ({} vs {} tokens)", a.vocab_size(), b.vocab_size()));
    }
    if let Some(id) = (0..a.vocab_size() as u32).find(|&i| a.id_to_token(i) != b.id_to_token(i)) {
        return Err(format!("token {id} is {:?} in one and {:?} in the other", a.id_to_token(id), b.id_to_token(id)));
    }
    for (what, x, y) in [("beginning-of-sequence", a.bos_id, b.bos_id), ("end-of-sequence", a.eos_id, b.eos_id)] {
        if x != y {
            return Err(format!("{what} tokens differ ({} vs {})", a.token_string(x), b.token_string(y)));
        }
    }
    let (mut sa, mut sb) = (a.stop_ids.clone(), b.stop_ids.clone());
    sa.sort_unstable();
    sb.sort_unstable();
    if sa != sb {
        return Err(format!("stop tokens differ ({sa:?} vs {sb:?})"));
    }
    Ok(())
}
