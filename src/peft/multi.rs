//! Many adapters on one base, chosen per batch row (as LoRAX and S-LoRA serve them). The
//! server decodes many requests this way; decoding-time tuning runs an expert and its
//! anti-expert over one base as one batch.
//!
//! Every block projection carries one [`MultiLora`] delta holding each loaded LoRA
//! adapter's `A`, `B` and scale. Before a forward pass the engine sets the *route*: the
//! adapter of each batch row. The delta then groups the rows by adapter and adds
//! `scale * B A x` to those rows only, so requests for different adapters (and the base)
//! decode in the same batch. Prompt-tuning adapters are soft prompts, given to the one
//! forward pass that prefills their request.
use crate::model::linear::Delta;
use crate::model::CausalLm;
use crate::peft::{self, lora::Lora, prompt::PromptTuning};
use crate::{Error, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Which adapter slot each row of the next forward pass uses (None: the base). A route
/// of one entry applies to every row, whatever their number.
pub type Route = Arc<RwLock<Vec<Option<usize>>>>;

#[derive(Debug, Clone)]
struct Factors {
    a_t: Tensor,
    b_t: Tensor,
    scale: f64,
    /// A `(r, in)` and B `(out, r)` row-major, for decode steps (see [`rowwise`]).
    a: Vec<f32>,
    b: Vec<f32>,
}

/// `scale * B A x` for one token, in a fixed order: a row's delta is then the same bits
/// however many rows share its adapter in a step (a GEMM's blocking would depend on the
/// row count). Ranks are small, so this is a few thousand multiply-adds per row.
fn rowwise(f: &Factors, x: &[f32], out: &mut [f32]) {
    let k = x.len();
    let r = f.a.len() / k;
    let h: Vec<f32> = (0..r).map(|j| f.a[j * k..(j + 1) * k].iter().zip(x).map(|(a, x)| a * x).sum()).collect();
    for (o, y) in out.iter_mut().enumerate() {
        let s: f32 = f.b[o * r..(o + 1) * r].iter().zip(&h).map(|(b, h)| b * h).sum();
        *y = (s as f64 * f.scale) as f32;
    }
}

/// The per-row LoRA delta of one projection.
#[derive(Debug)]
pub struct MultiLora {
    slots: RwLock<Vec<Option<Factors>>>,
    route: Route,
}

impl MultiLora {
    /// The rows of a batch of `rows` grouped by their adapter slot.
    fn groups(&self, rows: usize) -> Vec<(usize, Vec<u32>)> {
        let slots = self.slots.read().expect("slots");
        let mut by_slot: Vec<(usize, Vec<u32>)> = vec![];
        let route = self.route.read().expect("route");
        let route: Vec<Option<usize>> = if route.len() == 1 { vec![route[0]; rows] } else { route.clone() };
        for (row, s) in route.iter().enumerate() {
            let Some(s) = *s else { continue };
            if slots.get(s).is_none_or(Option::is_none) {
                continue;
            }
            match by_slot.iter_mut().find(|(k, _)| *k == s) {
                Some((_, rows)) => rows.push(row as u32),
                None => by_slot.push((s, vec![row as u32])),
            }
        }
        by_slot
    }
}

impl Delta for MultiLora {
    fn enabled(&self) -> bool {
        self.route.read().expect("route").iter().any(|s| s.is_some_and(|s| self.slots.read().expect("slots").get(s).is_some_and(Option::is_some)))
    }

    fn params(&self) -> Vec<Tensor> {
        vec![]
    }

    fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let rows = self.route.read().expect("route").len();
        if dims.len() != 3 || (dims[0] != rows && rows != 1) {
            return Err(Error::Input(format!("adapter routing: input {dims:?} does not have the {rows} routed rows")));
        }
        let slots = self.slots.read().expect("slots");
        if dims[1] == 1 {
            return self.decode_delta(x, &slots);
        }
        let mut out: Option<Tensor> = None;
        for (s, idx) in self.groups(dims[0]) {
            let f = slots[s].as_ref().expect("grouped slots are loaded");
            let ids = Tensor::new(idx.as_slice(), x.device())?;
            let xs = x.index_select(&ids, 0)?;
            let (n, t, k) = xs.dims3()?;
            let y = (xs.reshape((n * t, k))?.matmul(&f.a_t)?.matmul(&f.b_t)? * f.scale)?;
            let y = y.reshape((n, t, f.b_t.dim(1)?))?;
            let base = match out {
                Some(o) => o,
                None => Tensor::zeros((dims[0], dims[1], f.b_t.dim(1)?), x.dtype(), x.device())?,
            };
            out = Some(base.index_add(&ids, &y, 0)?);
        }
        out.ok_or_else(|| Error::Input("adapter delta asked for with no adapter rows".into()))
    }
}

impl MultiLora {
    /// One token per row: every adapter row through [`rowwise`], the base rows zero.
    fn decode_delta(&self, x: &Tensor, slots: &[Option<Factors>]) -> Result<Tensor> {
        let (rows, _, k) = x.dims3()?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let mut n_out = 0;
        let mut out = vec![];
        for (s, idx) in self.groups(rows) {
            let f = slots[s].as_ref().expect("grouped slots are loaded");
            if out.is_empty() {
                n_out = f.b.len() / (f.a.len() / k);
                out = vec![0f32; rows * n_out];
            }
            for &r in &idx {
                let r = r as usize;
                rowwise(f, &xs[r * k..(r + 1) * k], &mut out[r * n_out..(r + 1) * n_out]);
            }
        }
        Ok(Tensor::from_vec(out, (rows, 1, n_out), x.device())?)
    }
}

/// What one served name is.
#[derive(Debug, Clone)]
pub enum Kind {
    Lora { slot: usize },
    Prompt { prefix: Tensor },
}

#[derive(Debug, Clone)]
pub struct Served {
    pub name: String,
    pub path: PathBuf,
    pub kind: Kind,
    /// Unix seconds when loaded.
    pub created: u64,
}

/// The adapters loaded onto one base model.
pub struct AdapterSet {
    pub route: Route,
    layers: HashMap<String, Arc<MultiLora>>,
    pub served: Vec<Served>,
    slots: usize,
}

impl AdapterSet {
    /// Put a (still empty) per-row delta on every projection of `model`.
    pub fn install(model: &mut CausalLm) -> Self {
        let route: Route = Arc::new(RwLock::new(vec![]));
        let mut layers = HashMap::new();
        for p in model.projections_mut() {
            let m = Arc::new(MultiLora { slots: RwLock::new(vec![]), route: route.clone() });
            p.linear.adapter = Some(m.clone());
            layers.insert(p.gguf, m);
        }
        AdapterSet { route, layers, served: vec![], slots: 0 }
    }

    pub fn get(&self, name: &str) -> Option<&Served> {
        self.served.iter().find(|s| s.name == name)
    }

    /// Load a PEFT adapter directory (LoRA or prompt tuning) under `name`.
    pub fn load(&mut self, model: &mut CausalLm, name: &str, dir: &Path) -> Result<&Served> {
        if self.get(name).is_some() {
            return Err(Error::Input(format!("an adapter named {name:?} is already loaded")));
        }
        let kind = match peft::peft_type(dir)?.as_str() {
            "LORA" => self.load_lora(model, dir)?,
            "PROMPT_TUNING" => {
                let saved = model.prefix.take();
                let loaded = PromptTuning::load(model, dir).map(|_| model.prefix.take());
                model.prefix = saved;
                Kind::Prompt { prefix: loaded?.ok_or_else(|| Error::file(dir, "prompt-tuning adapter without embeddings"))? }
            }
            "SPARSE" => {
                return Err(Error::file(dir.join("adapter_config.json"), "a sparse delta changes the shared base weights: graft it (`instill graft --delta` or `export --merge`) and serve the result"))
            }
            other => {
                return Err(Error::file(
                    dir.join("adapter_config.json"),
                    format!("peft_type {other:?}: the server batches LORA and PROMPT_TUNING adapters per request; use this one with `instill generate --adapter` or `instill eval --adapter`"),
                ))
            }
        };
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.served.push(Served { name: name.to_string(), path: dir.to_path_buf(), kind, created });
        Ok(self.served.last().expect("just pushed"))
    }

    /// Load the LoRA through the ordinary loader (which checks it against the model),
    /// move its factors into a new slot of every per-row delta, and put those back.
    fn load_lora(&mut self, model: &mut CausalLm, dir: &Path) -> Result<Kind> {
        let loaded = Lora::load(model, dir);
        for p in model.projections_mut() {
            p.linear.adapter = Some(self.layers[&p.gguf].clone());
        }
        let lora = loaded?;
        let slot = self.slots;
        for (_, l) in &lora.layers {
            let (a, b) = (l.a.as_tensor().detach(), l.b.as_tensor().detach());
            let f = Factors { a_t: a.t()?.contiguous()?, b_t: b.t()?.contiguous()?, scale: l.scale(), a: a.flatten_all()?.to_vec1()?, b: b.flatten_all()?.to_vec1()? };
            let m = &self.layers[&l.gguf];
            let mut slots = m.slots.write().expect("slots");
            slots.resize(slot + 1, None);
            slots[slot] = Some(f);
        }
        self.slots += 1;
        Ok(Kind::Lora { slot })
    }

    /// Set the adapter slot of each row for the next forward pass.
    pub fn set_route(&self, rows: &[Option<usize>]) {
        let mut r = self.route.write().expect("route");
        r.clear();
        r.extend_from_slice(rows);
    }
}
