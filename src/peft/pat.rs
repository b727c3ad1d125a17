//! PAT, pruning-aware tuning (Liu et al. 2024; kriskrisliu/PAT_Pruning-Aware-Tuning):
//! LoRA on the projections plus hybrid sparsification modules (`model/hsm.rs`) after the
//! embeddings and on every attention and FFN output, all gated by one trainable mask over
//! the hidden channels. The mask `m` (one logit per channel, from 0) gates through
//! `sigmoid(T m) + b` with the official code's schedule over `anneal_steps` G: the
//! temperature `T = 1 / (1 - ln(step) / ln(G))` rises, the bias `b = max(0.5 - step / G, 0)`
//! falls to 0, and from `0.8 G` the gate stops passing the language-model gradient to the
//! mask, with `T` held at its `0.8 G` value. The method's loss adds
//! `10 |#{m >= 0} - D| / D` (the kept count, by a straight-through estimate, towards the
//! target `D = round((1 - sparsity) hidden)`), `mean((m - 0.5)^2)` over positive and
//! `mean((m + 0.5)^2)` over the other logits (polarisation), and with `identity_loss`
//! each module's `MSE(D D^T, I)`, averaged over the modules (the official code counts the
//! last layer's only). Loaded for inference, the gate is the mask's sign; `export --merge`
//! folds the modules in and writes a model of hidden size `#{m > 0}`.
//!
//! The mask trains at its own learning rate, `mask_lr` (default `2 / G`; the official
//! runs move it by `lr` = 5e-5 per step over 10 000 steps): it is held as `m / k`, `k` the
//! ratio to the run's `lr`. From 0.8 G the gate moves linearly to the mask's sign, reached at
//! G (see `soft_gate`).
//!
//! Saved as `adapter_config.json` (`peft_type: PAT`), `adapter_model.safetensors`
//! (`pat.mask_logits` (hidden,) as `m / k`; `model.layers.N.pat_attn.{down,up,scale}` and
//! `pat_mlp.*`; `model.embed_tokens.pat.*` for untied embeddings) and `lora/`, PEFT's LoRA.
use super::lora::{Lora, LoraConfig};
use super::{save_tensors, write_atomic, Adapter, AuxLoss, TokenGroups, CONFIG_FILE, WEIGHTS_FILE};
use crate::model::hsm::{BlockHsm, Gate, Hsm};
use crate::model::CausalLm;
use crate::{Error, Result};
use candle_core::{DType, Tensor, Var};
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatConfig {
    /// The fraction of hidden channels to remove.
    #[serde(default = "quarter")]
    pub sparsity: f64,
    /// Rank of each module's operator `I + U D`.
    #[serde(default = "rank")]
    pub rank: usize,
    /// The orthogonality term `MSE(D D^T, I)` and the per-channel scale.
    #[serde(default = "yes")]
    pub identity_loss: bool,
    /// Weight of the kept-count term.
    #[serde(default = "ten")]
    pub count_weight: f64,
    /// Learning rate of the mask logits (default `2 / anneal_steps`).
    pub mask_lr: Option<f64>,
    /// Steps of the temperature schedule (default: the run's).
    pub anneal_steps: Option<usize>,
    /// Round the kept width down to a multiple of this (32: GGUF's q8_0/q4_0 blocks, 256:
    /// the k-quants), so the pruned model quantizes like the original.
    #[serde(default = "one")]
    pub multiple_of: usize,
}

fn quarter() -> f64 {
    0.25
}
fn rank() -> usize {
    64
}
fn yes() -> bool {
    true
}
fn ten() -> f64 {
    10.0
}
fn one() -> usize {
    1
}

impl Default for PatConfig {
    fn default() -> Self {
        PatConfig { sparsity: quarter(), rank: rank(), identity_loss: true, count_weight: ten(), mask_lr: None, anneal_steps: None, multiple_of: 1 }
    }
}

impl PatConfig {
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(self.sparsity > 0.0 && self.sparsity < 1.0) {
            return Err(format!("pat.sparsity: {} is not a fraction in (0, 1)", self.sparsity));
        }
        if self.multiple_of == 0 {
            return Err("pat.multiple_of: must be at least 1".into());
        }
        if self.rank == 0 {
            return Err("pat.rank: must be at least 1".into());
        }
        if self.mask_lr.is_some_and(|l| !(l > 0.0 && l.is_finite())) || self.anneal_steps == Some(0) {
            return Err("pat.mask_lr and pat.anneal_steps: must be positive".into());
        }
        Ok(())
    }

    /// The number of channels to keep out of `hidden`, rounded down to a multiple of
    /// `multiple_of` and of `heads`.
    pub fn target(&self, hidden: usize, heads: usize) -> usize {
        let q = lcm(self.multiple_of, heads.max(1)).min(hidden);
        let d = (((1.0 - self.sparsity) * hidden as f64).round() as usize).clamp(1, hidden);
        (d / q * q).max(q)
    }
}

/// The gate's temperature and bias at `step` of `g`, and whether the language-model loss
/// still reaches the mask (the official `DimDownMask.step`).
pub fn schedule(step: usize, g: usize) -> (f64, f64, bool) {
    let t = |s: usize| 1.0 / (1.0 - (s.max(1) as f64).ln() / (g.max(2) as f64).ln() + 1e-6);
    let bias = (0.5 - step as f64 / g as f64).max(0.0);
    let freeze = (g as f64 * 0.8) as usize;
    if step < freeze {
        (t(step), bias, true)
    } else {
        (t(freeze), bias, false)
    }
}

fn lcm(a: usize, b: usize) -> usize {
    let gcd = |mut x: usize, mut y: usize| {
        while y != 0 {
            (x, y) = (y, x % y);
        }
        x
    };
    a / gcd(a, b) * b
}

/// One module's tensors (None where it has not that part).
struct Module {
    down: Option<Var>,
    up: Option<Var>,
    scale: Option<Var>,
}

pub struct Pat {
    pub config: PatConfig,
    pub lora: Lora,
    /// `m / k`, `(hidden,)`.
    pub mask: Var,
    /// `k`: the mask's learning rate over the run's (f64 bits; set with the run's length
    /// when `mask_lr` is not given).
    gain: AtomicU64,
    /// The run's learning rate.
    lr: f64,
    /// The kept width is a multiple of this.
    quantum: usize,
    /// The count the mask is steered to.
    target: usize,
    embed: Module,
    /// (HF module prefix, attention's module, FFN's module) per layer.
    layers: Vec<(String, Module, Module)>,
    gate: Gate,
    training: AtomicBool,
    total: AtomicUsize,
}

type Init<'a> = dyn FnMut(&str, (usize, usize)) -> Result<Tensor> + 'a;

impl Pat {
    /// Fresh modules (`D` Kaiming-uniform, `U` = 0, `s` = 1, mask logits 0: the model
    /// starts unchanged) and a fresh LoRA; `lr` is the run's learning rate.
    pub fn attach(model: &mut CausalLm, config: &PatConfig, lora: &LoraConfig, lr: f64, seed: u64) -> Result<Self> {
        config.check().map_err(Error::Input)?;
        let lora = Lora::attach(model, lora, seed)?;
        let mut rng = StdRng::seed_from_u64(seed ^ 0x7A7_5EED);
        let dev = model.device.clone();
        let mut init = |name: &str, shape: (usize, usize)| -> Result<Tensor> {
            Ok(match name.rsplit('.').next() {
                Some("down") => super::kaiming_uniform(&mut rng, shape, &dev)?,
                Some("up") => Tensor::zeros(shape, DType::F32, &dev)?,
                _ => Tensor::ones(shape.0, DType::F32, &dev)?,
            })
        };
        // Until the run's length is known (`set_total_steps`), a placeholder gain.
        let gain = config.mask_lr.map_or(1.0, |m| m / lr);
        let mask = Tensor::zeros(model.config.hidden_size, DType::F32, &dev)?;
        Self::build(model, config.clone(), lora, mask, (gain, lr), &mut init)
    }

    /// A saved PAT adapter: its gate is the mask's sign (the model as it will be pruned).
    pub fn load(model: &mut CausalLm, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::file(&cfg_path, e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&cfg_path, format!("invalid JSON: {e}")))?;
        if v["peft_type"] != "PAT" {
            return Err(Error::file(&cfg_path, format!("peft_type: {} (expected \"PAT\")", v["peft_type"])));
        }
        let config: PatConfig = serde_json::from_value(v["pat"].clone()).map_err(|e| Error::file(&cfg_path, format!("pat: {e}")))?;
        let gain = v["mask_gain"].as_f64().filter(|g| *g > 0.0).ok_or_else(|| Error::file(&cfg_path, "mask_gain: missing or not positive"))?;
        let lr = v["lr"].as_f64().filter(|g| *g > 0.0).ok_or_else(|| Error::file(&cfg_path, "lr: missing or not positive"))?;
        let lora = Lora::load(model, &dir.join("lora"))?;
        let path = dir.join(WEIGHTS_FILE);
        let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(&path, &model.device).map_err(|e| Error::file(&path, e.to_string()))?;
        let get = |k: &str| -> Result<Tensor> { Ok(tensors.get(k).ok_or_else(|| Error::file(&path, format!("missing tensor {k}")))?.to_dtype(DType::F32)?) };
        let mask = get("pat.mask_logits")?;
        let (h, rank) = (model.config.hidden_size, config.rank);
        let init = |name: &str, shape: (usize, usize)| -> Result<Tensor> {
            let t = get(name)?;
            let want: Vec<usize> = if name.ends_with("scale") { vec![shape.0] } else { vec![shape.0, shape.1] };
            if t.dims() != want.as_slice() {
                return Err(Error::file(&path, format!("{name}: shape {:?}, expected {want:?} (hidden size {h}, rank {rank})", t.dims())));
            }
            Ok(t)
        };
        if mask.dims() != [h] {
            return Err(Error::file(&path, format!("pat.mask_logits: shape {:?}, but the model's hidden size is {h}", mask.dims())));
        }
        let pat = Self::build(model, config, lora, mask, (gain, lr), &mut |n, s| init(n, s))?;
        pat.harden()?;
        Ok(pat)
    }

    fn build(model: &mut CausalLm, config: PatConfig, lora: Lora, mask: Tensor, (gain, lr): (f64, f64), init: &mut Init) -> Result<Self> {
        if model.config.sandwich_norm || model.config.embed_scale.is_some() {
            return Err(Error::Unsupported(format!("PAT: {} normalises attention and FFN outputs over every channel (and scales its embeddings by the width), so its pruned model would not compute what was trained; PAT runs on llama and qwen2 models", model.arch.name())));
        }
        let (h, r) = (model.config.hidden_size, config.rank);
        let mut module = |prefix: &str, with_ops: bool| -> Result<Module> {
            if !with_ops {
                return Ok(Module { down: None, up: None, scale: None });
            }
            let var = |t: Tensor| Var::from_tensor(&t);
            let mut ops = |n: &str, s| init(&format!("{prefix}.{n}"), s);
            let (down, up) = (var(ops("down", (r, h))?)?, var(ops("up", (h, r))?)?);
            let scale = if config.identity_loss { Some(var(ops("scale", (h, 1))?)?) } else { None };
            Ok(Module { down: Some(down), up: Some(up), scale })
        };
        // Tied embeddings are also the output head: their module is the gate alone.
        let embed = module("model.embed_tokens.pat", !model.config.tie_embeddings)?;
        let mut layers = vec![];
        for i in 0..model.config.num_layers {
            let p = format!("model.layers.{i}");
            let (a, m) = (module(&format!("{p}.pat_attn"), true)?, module(&format!("{p}.pat_mlp"), true)?);
            layers.push((p, a, m));
        }
        let (quantum, target) = (lcm(config.multiple_of, model.config.num_heads), config.target(h, model.config.num_heads));
        let pat = Pat {
            config,
            lora,
            mask: Var::from_tensor(&mask)?,
            gain: AtomicU64::new(gain.to_bits()),
            lr,
            quantum,
            target,
            embed,
            layers,
            gate: Gate::default(),
            training: AtomicBool::new(false),
            total: AtomicUsize::new(0),
        };
        let hsm = |m: &Module| Hsm {
            down: m.down.as_ref().map(|v| v.as_tensor().clone()),
            up: m.up.as_ref().map(|v| v.as_tensor().clone()),
            scale: m.scale.as_ref().map(|v| v.as_tensor().clone()),
            gate: pat.gate.clone(),
            gate_source: Some(pat.mask.as_tensor().clone()),
        };
        let blocks = pat.layers.iter().map(|(_, a, m)| BlockHsm { attn: hsm(a), mlp: hsm(m) }).collect();
        model.set_hsm(Some(hsm(&pat.embed)), Some(blocks))?;
        Ok(pat)
    }

    /// `k`, the mask's learning rate over the run's.
    pub fn gain(&self) -> f64 {
        f64::from_bits(self.gain.load(Ordering::Relaxed))
    }

    /// The gate the pruned model has: 1 where the mask logit is positive.
    pub fn hard_gate(&self) -> Result<Tensor> {
        let m = self.mask.as_tensor();
        let mut g = vec![0f32; m.dim(0)?];
        self.kept()?.into_iter().for_each(|i| g[i as usize] = 1.0);
        Ok(Tensor::from_vec(g, m.dim(0)?, m.device())?)
    }

    /// Gate by the mask's sign, as the pruned model will (a loaded adapter does).
    pub fn harden(&self) -> Result<()> {
        self.gate.set(Some(self.hard_gate()?));
        Ok(())
    }

    /// The hidden channels a pruned model keeps, ascending: those with positive mask
    /// logits, less the smallest of them down to a multiple of `quantum` (the heads'
    /// count and `multiple_of`: transformers wants the width divisible by the heads).
    pub fn kept(&self) -> Result<Vec<u32>> {
        let m = self.mask.as_tensor().to_vec1::<f32>()?;
        let mut pos: Vec<u32> = (0..m.len() as u32).filter(|&i| m[i as usize] > 0.0).collect();
        pos.sort_by(|&a, &b| m[b as usize].total_cmp(&m[a as usize]).then(a.cmp(&b)));
        let q = self.quantum.min(m.len());
        pos.truncate((pos.len() / q * q).max(q.min(pos.len())));
        pos.sort_unstable();
        Ok(pos)
    }

    /// The mask `k m`, whose gradient reaches `m` unscaled: AdamW then moves `m` by the
    /// run's step sizes, so the mask moves `k` times faster, and gradient clipping sees
    /// the official code's gradient.
    fn scaled(&self) -> Result<Tensor> {
        let m = self.mask.as_tensor();
        Ok((m + ((m * self.gain())? - m)?.detach())?)
    }

    /// The soft gate at `step`: `sigmoid(T k m) + b`, with the official code's floor of
    /// `sigmoid(-10)`; without the mask's graph from `0.8 G`.
    fn soft_gate(&self, step: usize) -> Result<Tensor> {
        let g = self.config.anneal_steps.unwrap_or_else(|| self.total.load(Ordering::Relaxed)).max(1);
        let (t, bias, live) = schedule(step, g);
        let m = if live { self.scaled()? } else { self.scaled()?.detach() };
        let z = (m * t)?;
        let floor = z.ge(-10f64)?.to_dtype(DType::F32)?;
        let z = ((&z * &floor)? + ((1.0 - &floor)? * -10.0)?)?;
        let soft = ((z.neg()?.exp()? + 1.0)?.recip()? + bias)?;
        if live {
            return Ok(soft);
        }
        // The official gate here is sigmoid(T m) with the mask near +-0.5 after thousands of
        // steps: 0 or 1 to within 1e-9. A short run's mask has not travelled that far, so
        // from 0.8 G the gate moves linearly from the soft one to the mask's sign, the gate
        // the pruned model has, reached at the last step (a jump there cost SmolLM2 3.6
        // nats of loss that 16 steps did not win back).
        let freeze = (g as f64 * 0.8) as usize;
        let r = ((step + 1).saturating_sub(freeze) as f64 / (g - freeze).max(1) as f64).min(1.0);
        Ok(((soft * (1.0 - r))? + (self.hard_gate()? * r)?)?)
    }

    /// Fold the LoRA and the modules into `model` and prune it to the kept channels
    /// (`export --merge`). Returns (kept, hidden).
    pub fn prune(&self, model: &mut CausalLm) -> Result<(usize, usize)> {
        let keep = self.kept()?;
        let h = model.config.hidden_size;
        if keep.is_empty() {
            return Err(Error::Input("PAT: every mask logit is negative, so the pruned model would keep no channel".into()));
        }
        self.lora.merge_into(model)?;
        model.prune_hidden(&keep)?;
        Ok((keep.len(), h))
    }

    fn modules(&self) -> impl Iterator<Item = (String, &Module)> {
        let e = std::iter::once(("model.embed_tokens.pat".to_string(), &self.embed));
        e.chain(self.layers.iter().flat_map(|(p, a, m)| [(format!("{p}.pat_attn"), a), (format!("{p}.pat_mlp"), m)]))
    }

    /// `(count term, polarisation term, identity term)` and the kept count.
    fn terms(&self) -> Result<(Tensor, Tensor, Option<Tensor>, usize)> {
        let m = self.mask.as_tensor();
        let h = m.dim(0)?;
        let d = self.target as f64;
        let mk = self.scaled()?;
        let hard = m.ge(0f64)?.to_dtype(DType::F32)?;
        let ste = (&mk + (&hard - &mk)?.detach())?;
        let count = ((ste.sum_all()? - d)?.abs()? * (self.config.count_weight / d))?;
        let pos = m.gt(0f64)?.to_dtype(DType::F32)?;
        let neg = (1.0 - &pos)?;
        let npos = pos.sum_all()?.to_scalar::<f32>()?;
        let nneg = h as f32 - npos;
        let part = |sel: &Tensor, target: f64, n: f32| -> Result<Tensor> { Ok((((&mk - target)?.sqr()? * sel)?.sum_all()? / n.max(1.0) as f64)?) };
        let polar = (part(&pos, 0.5, npos)? + part(&neg, -0.5, nneg)?)?;
        let mut ident = vec![];
        for (_, md) in self.modules() {
            if let (Some(dn), true) = (&md.down, self.config.identity_loss) {
                let dn = dn.as_tensor();
                let eye = Tensor::eye(dn.dim(0)?, DType::F32, dn.device())?;
                ident.push((dn.matmul(&dn.t()?)? - eye)?.sqr()?.mean_all()?);
            }
        }
        let n = ident.len();
        let ident = if n == 0 { None } else { Some((Tensor::stack(&ident, 0)?.sum_all()? / n as f64)?) };
        Ok((count, polar, ident, npos as usize))
    }
}

impl Adapter for Pat {
    fn method(&self) -> &'static str {
        "pat"
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        let mut out = vec![("pat.mask_logits".to_string(), self.mask.clone())];
        for (p, md) in self.modules() {
            for (n, v) in [("down", &md.down), ("up", &md.up), ("scale", &md.scale)] {
                out.extend(v.as_ref().map(|v| (format!("{p}.{n}"), v.clone())));
            }
        }
        out.extend(self.lora.trainable().into_iter().map(|(n, v)| (format!("lora/{n}"), v)));
        out
    }

    fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
        self.lora.set_training(on);
    }

    /// The run's length fixes the schedule and, without `mask_lr`, the mask's rate:
    /// `2 / G`, so the mask can travel to +-1 over the first half of the schedule (5e-5
    /// x 4 for the official 10 000 steps).
    fn set_total_steps(&self, total: usize) {
        self.total.store(total, Ordering::Relaxed);
        let g = self.config.anneal_steps.unwrap_or(total).max(1);
        let gain = self.config.mask_lr.unwrap_or(2.0 / g as f64) / self.lr;
        self.gain.store(gain.to_bits(), Ordering::Relaxed);
    }

    /// The gate for this step (the schedule moves with the step).
    fn begin_step(&self, seed: u64, step: u64) {
        self.lora.begin_step(seed, step);
        match self.soft_gate(step as usize) {
            Ok(g) => self.gate.set(Some(g)),
            Err(e) => panic!("PAT: computing the gate failed: {e}"),
        }
    }

    fn aux_loss(&self, _groups: &TokenGroups) -> Result<Option<AuxLoss>> {
        let (count, polar, ident, kept) = self.terms()?;
        let mut loss = (&count + &polar)?;
        let mut stats = vec![
            ("pat/kept".to_string(), kept as f64, 1.0),
            ("pat/count_loss".to_string(), count.to_scalar::<f32>()? as f64, 1.0),
            ("pat/polar_loss".to_string(), polar.to_scalar::<f32>()? as f64, 1.0),
        ];
        if let Some(g) = self.gate.get() {
            stats.push(("pat/gate_mean".to_string(), g.mean_all()?.to_scalar::<f32>()? as f64, 1.0));
        }
        if let Some(i) = ident {
            stats.push(("pat/identity_loss".to_string(), i.to_scalar::<f32>()? as f64, 1.0));
            loss = (loss + i)?;
        }
        Ok(Some(AuxLoss { loss, stats }))
    }

    fn save(&self, model: &CausalLm, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e.to_string()))?;
        self.lora.save(model, &dir.join("lora"))?;
        let mut tensors = vec![("pat.mask_logits".to_string(), self.mask.as_tensor().clone())];
        for (p, md) in self.modules() {
            for (n, v) in [("down", &md.down), ("up", &md.up), ("scale", &md.scale)] {
                tensors.extend(v.as_ref().map(|v| (format!("{p}.{n}"), v.as_tensor().clone())));
            }
        }
        save_tensors(&dir.join(WEIGHTS_FILE), &tensors)?;
        let h = model.config.hidden_size;
        let cfg = serde_json::json!({
            "peft_type": "PAT", "task_type": "CAUSAL_LM", "pat": self.config, "mask_gain": self.gain(), "lr": self.lr,
            "hidden_size": h, "target_kept": self.target, "kept": self.kept()?.len(), "parts": {"lora": "LORA"},
            "inference_mode": true, "base_model_name_or_path": null,
        });
        write_atomic(&dir.join(CONFIG_FILE), serde_json::to_string_pretty(&cfg).expect("json").as_bytes())
    }
}
