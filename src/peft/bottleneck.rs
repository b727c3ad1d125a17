//! Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020; the parallel adapter of
//! He et al. 2022, "Towards a Unified View of Parameter-Efficient Transfer Learning"), on
//! chosen projections, as LLM-Adapters (Hu et al. 2023, AGI-Edgerunners/LLM-Adapters, the
//! PEFT fork that added them as `peft_type: BOTTLENECK`) places them:
//!
//! - `parallel`: `y = W x + s * up(f(down(x)))` (its `parallel_adapter`);
//! - `sequential`: `h = W x; y = h + s * up(f(down(h)))`, after the projection (its
//!   `output_adapter`: on `down_proj` this is Pfeiffer's adapter after the FFN, on
//!   `o_proj` Houlsby's after attention);
//! - `input`: `y = W (x + s * up(f(down(x))))`, before it (its `mh_adapter`).
//!
//! `down` and `up` have no bias; `down` starts Kaiming-uniform, `up` at zero (LLM-Adapters'
//! `mam_adapter` initialisation), so the model starts unchanged. Saved in that fork's
//! layout: `base_model.model.<module>.adapter_down.weight` `(bottleneck, in)` and
//! `adapter_up.weight` `(out, bottleneck)`, with `adapter_config.json` keys
//! `bottleneck_size`, `non_linearity`, `adapter_dropout`, `use_parallel_adapter`,
//! `scaling`, `target_modules`, and our `placement`.
use super::{save_tensors, write_atomic, Adapter};
use crate::model::linear::{Delta, Linear};
use crate::model::CausalLm;
use crate::{Error, Result};
use candle_core::{DType, Tensor, Var};
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    Parallel,
    Sequential,
    Input,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NonLinearity {
    Tanh,
    Relu,
    Silu,
    Gelu,
}

impl NonLinearity {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            NonLinearity::Tanh => x.tanh()?,
            NonLinearity::Relu => x.relu()?,
            NonLinearity::Silu => candle_nn::ops::silu(x)?,
            NonLinearity::Gelu => x.gelu_erf()?,
        })
    }

    fn name(self) -> &'static str {
        match self {
            NonLinearity::Tanh => "tanh",
            NonLinearity::Relu => "relu",
            NonLinearity::Silu => "silu",
            NonLinearity::Gelu => "gelu",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BottleneckConfig {
    /// Width of the bottleneck (`down`'s outputs).
    #[serde(default = "width")]
    pub bottleneck: usize,
    #[serde(default = "placement")]
    pub placement: Placement,
    /// Projections to adapt, as LoRA's `target_modules` (`down_proj`, `o_proj`, ...).
    #[serde(default = "targets")]
    pub target_modules: Vec<String>,
    /// `s`, the adapter output's scale (He et al. use 4 for the FFN's parallel adapter).
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default = "nonlinearity")]
    pub non_linearity: NonLinearity,
    /// Dropout on the adapter's input (training only).
    #[serde(default)]
    pub dropout: f64,
}

fn width() -> usize {
    64
}
fn placement() -> Placement {
    Placement::Parallel
}
fn targets() -> Vec<String> {
    vec!["down_proj".into()]
}
fn one() -> f64 {
    1.0
}
fn nonlinearity() -> NonLinearity {
    NonLinearity::Tanh
}

impl Default for BottleneckConfig {
    fn default() -> Self {
        BottleneckConfig { bottleneck: width(), placement: placement(), target_modules: targets(), scale: one(), non_linearity: nonlinearity(), dropout: 0.0 }
    }
}

impl BottleneckConfig {
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.bottleneck == 0 {
            return Err("adapter.bottleneck: must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("adapter.dropout: {} is not a probability in [0, 1)", self.dropout));
        }
        if !self.scale.is_finite() {
            return Err(format!("adapter.scale: {} is not a number", self.scale));
        }
        Ok(())
    }

    fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|t| t == "all-linear" || module == t || module.ends_with(&format!(".{t}")))
    }
}

/// One projection's adapter. `down` and `up` are held in the model's own feature order
/// (llama's GGUF q/k rows are permuted): converted on save and load.
#[derive(Debug)]
pub struct BottleneckLayer {
    pub down: Var,
    pub up: Var,
    gguf: String,
    config: BottleneckConfig,
    training: Arc<AtomicBool>,
    enabled: Arc<AtomicBool>,
    rng: Mutex<StdRng>,
}

impl BottleneckLayer {
    /// `s * up(f(down(drop(x))))` over the last dimension of `x`.
    fn adapter(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = dims[dims.len() - 1];
        let mut x = x.reshape(((), k))?;
        let training = self.training.load(Ordering::Relaxed);
        if training && self.config.dropout > 0.0 {
            let mask = super::dropout_mask(&self.rng, self.config.dropout as f32, x.dims2()?)?;
            x = (x * mask)?;
        }
        let (d, u) = if training { (self.down.as_tensor().clone(), self.up.as_tensor().clone()) } else { (self.down.as_tensor().detach(), self.up.as_tensor().detach()) };
        let h = self.config.non_linearity.apply(&x.matmul(&d.t()?)?)?;
        let y = (h.matmul(&u.t()?)? * self.config.scale)?;
        let mut shape = dims;
        *shape.last_mut().expect("rank >= 1") = u.dim(0)?;
        Ok(y.reshape(shape)?)
    }
}

impl Delta for BottleneckLayer {
    fn params(&self) -> Vec<Tensor> {
        vec![self.down.as_tensor().clone(), self.up.as_tensor().clone()]
    }

    fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn fused(&self, base: &Linear, x: &Tensor) -> Result<Option<Tensor>> {
        Ok(match self.config.placement {
            Placement::Parallel => None,
            Placement::Sequential => {
                let h = base.forward_base(x)?;
                Some((&h + self.adapter(&h)?)?)
            }
            Placement::Input => Some(base.forward_base(&(x + self.adapter(x)?)?)?),
        })
    }

    /// The parallel adapter's addition (the other placements wrap the projection).
    fn delta(&self, x: &Tensor) -> Result<Tensor> {
        self.adapter(x)
    }
}

pub struct Bottleneck {
    pub config: BottleneckConfig,
    /// (module path, layer) in model order.
    pub layers: Vec<(String, Arc<BottleneckLayer>)>,
    training: Arc<AtomicBool>,
    enabled: Arc<AtomicBool>,
}

use super::{peft_key as key, CONFIG_FILE, WEIGHTS_FILE};

/// The adapter's feature width where it meets the projection: its input for
/// `parallel` and `input`, its output for `sequential` (the adapter reads and writes `h`).
fn widths(p: Placement, out_f: usize, in_f: usize) -> (usize, usize) {
    match p {
        Placement::Parallel => (in_f, out_f),
        Placement::Sequential => (out_f, out_f),
        Placement::Input => (in_f, in_f),
    }
}

impl Bottleneck {
    /// Fresh adapters on every targeted projection: `down ~ U(-1/sqrt(in), 1/sqrt(in))`,
    /// `up = 0`.
    pub fn attach(model: &mut CausalLm, config: &BottleneckConfig, seed: u64) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        Self::build(model, config, seed, |_, a_in, a_out, dev| Ok((super::kaiming_uniform(&mut rng, (config.bottleneck, a_in), dev)?, Tensor::zeros((a_out, config.bottleneck), DType::F32, dev)?)))
    }

    /// Load a saved adapter directory onto `model`.
    pub fn load(model: &mut CausalLm, dir: &Path) -> Result<Self> {
        let config = read_config(dir)?;
        let path = dir.join(WEIGHTS_FILE);
        let tensors = candle_core::safetensors::load(&path, &model.device).map_err(|e| Error::file(&path, e.to_string()))?;
        let (arch, mc) = (model.arch, model.config.clone());
        let b = Self::build(model, &config, 0, |(module, gguf, placement), a_in, a_out, _| {
            let get = |part: &str| -> Result<Tensor> {
                let k = key(module, part);
                Ok(tensors.get(&k).ok_or_else(|| Error::file(&path, format!("missing tensor {k}")))?.to_dtype(DType::F32)?)
            };
            let (d, u) = (get("adapter_down")?, get("adapter_up")?);
            if d.dims() != [config.bottleneck, a_in] || u.dims() != [a_out, config.bottleneck] {
                return Err(Error::file(
                    &path,
                    format!("{module}: adapter_down {:?} / adapter_up {:?}, expected [{}, {a_in}] / [{a_out}, {}]", d.dims(), u.dims(), config.bottleneck, config.bottleneck),
                ));
            }
            // Saved in Hugging Face feature order: back to the model's.
            to_model_order(arch, &mc, gguf, placement, d, u, false)
        })?;
        let found = tensors.keys().filter(|k| k.contains(".adapter_")).count();
        if found != 2 * b.layers.len() {
            return Err(Error::file(&path, format!("{found} adapter tensors, but the config's target_modules match {} on this model", 2 * b.layers.len())));
        }
        Ok(b)
    }

    #[allow(clippy::type_complexity)]
    fn build(
        model: &mut CausalLm,
        config: &BottleneckConfig,
        seed: u64,
        mut init: impl FnMut((&str, &str, Placement), usize, usize, &candle_core::Device) -> Result<(Tensor, Tensor)>,
    ) -> Result<Self> {
        config.check().map_err(Error::Input)?;
        let training = Arc::new(AtomicBool::new(false));
        let enabled = Arc::new(AtomicBool::new(true));
        let dev = model.device.clone();
        let mut layers = vec![];
        for (i, p) in model.projections_mut().into_iter().enumerate() {
            if !config.targets(&p.module) {
                continue;
            }
            let (out_f, in_f) = p.linear.shape()?;
            let (a_in, a_out) = widths(config.placement, out_f, in_f);
            let (down, up) = init((&p.module, &p.gguf, config.placement), a_in, a_out, &dev)?;
            let layer = Arc::new(BottleneckLayer {
                down: Var::from_tensor(&down)?,
                up: Var::from_tensor(&up)?,
                gguf: p.gguf,
                config: config.clone(),
                training: training.clone(),
                enabled: enabled.clone(),
                rng: Mutex::new(StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))),
            });
            p.linear.adapter = Some(layer.clone());
            layers.push((p.module, layer));
        }
        if layers.is_empty() {
            return Err(Error::Input(format!("adapter.target_modules {:?} match no projection (names: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)", config.target_modules)));
        }
        Ok(Bottleneck { config: config.clone(), layers, training, enabled })
    }

    /// Every tensor under its saved name, in Hugging Face feature order.
    fn saved_tensors(&self, model: &CausalLm) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![];
        for (m, l) in &self.layers {
            let (d, u) = to_model_order(model.arch, &model.config, &l.gguf, self.config.placement, l.down.as_tensor().clone(), l.up.as_tensor().clone(), true)?;
            out.push((key(m, "adapter_down"), d));
            out.push((key(m, "adapter_up"), u));
        }
        Ok(out)
    }
}

/// Convert `(down, up)` between the model's feature order and Hugging Face's (`to_hf`).
/// Only the projection's output features can be permuted (llama's q/k rows): `up`'s rows
/// where the adapter writes them (parallel, sequential), `down`'s columns where it reads
/// them (sequential).
fn to_model_order(arch: &dyn crate::model::arch::Architecture, mc: &crate::model::config::ModelConfig, gguf: &str, p: Placement, down: Tensor, up: Tensor, to_hf: bool) -> Result<(Tensor, Tensor)> {
    let up = match p {
        Placement::Input => up,
        _ => arch.convert(gguf, up, mc, to_hf)?,
    };
    let down = match p {
        Placement::Sequential => arch.convert(gguf, down.t()?.contiguous()?, mc, to_hf)?.t()?.contiguous()?,
        _ => down,
    };
    Ok((down, up))
}

impl Adapter for Bottleneck {
    fn method(&self) -> &'static str {
        "adapter"
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        self.layers.iter().flat_map(|(m, l)| [(key(m, "adapter_down"), l.down.clone()), (key(m, "adapter_up"), l.up.clone())]).collect()
    }

    fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }

    fn set_enabled(&self, on: bool) -> Result<()> {
        self.enabled.store(on, Ordering::Relaxed);
        Ok(())
    }

    fn begin_step(&self, seed: u64, step: u64) {
        super::reseed(self.layers.iter().map(|(_, l)| &l.rng), seed, step);
    }

    fn save(&self, model: &CausalLm, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e.to_string()))?;
        save_tensors(&dir.join(WEIGHTS_FILE), &self.saved_tensors(model)?)?;
        let c = &self.config;
        let cfg = serde_json::json!({
            "peft_type": "BOTTLENECK", "task_type": "CAUSAL_LM", "bottleneck_size": c.bottleneck, "non_linearity": c.non_linearity.name(),
            "adapter_dropout": c.dropout, "use_parallel_adapter": c.placement == Placement::Parallel, "use_adapterp": false,
            "placement": c.placement, "scaling": c.scale, "target_modules": c.target_modules, "bias": "none",
            "init_weights": "mam_adapter", "inference_mode": true, "base_model_name_or_path": null,
        });
        write_atomic(&dir.join(CONFIG_FILE), serde_json::to_string_pretty(&cfg).expect("json").as_bytes())
    }
}

/// A bottleneck `adapter_config.json`.
fn read_config(dir: &Path) -> Result<BottleneckConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("invalid JSON: {e}")))?;
    let bad = |k: &str, msg: String| Error::file(&path, format!("{k}: {msg}"));
    if v["peft_type"] != "BOTTLENECK" {
        return Err(bad("peft_type", "expected \"BOTTLENECK\"".into()));
    }
    // Without our `placement`: LLM-Adapters' own flags. Its series default (mh_adapter on
    // gate/up, output_adapter on down, one type per module) has no single placement.
    let placement = match (&v["placement"], v["use_parallel_adapter"].as_bool(), v["use_adapterp"].as_bool()) {
        (serde_json::Value::String(_), _, _) => serde_json::from_value(v["placement"].clone()).map_err(|e| bad("placement", e.to_string()))?,
        (_, Some(true), _) => Placement::Parallel,
        (_, _, Some(true)) => Placement::Sequential,
        _ => return Err(bad("placement", "missing; a series adapter with a type per module (LLM-Adapters' default) is not supported: set placement parallel, sequential or input".into())),
    };
    let non_linearity = serde_json::from_value(v["non_linearity"].clone()).map_err(|_| bad("non_linearity", format!("{} (tanh, relu, silu or gelu)", v["non_linearity"])))?;
    let scale = match &v["scaling"] {
        serde_json::Value::Number(n) => n.as_f64().unwrap_or(1.0),
        serde_json::Value::Null => 1.0,
        other => return Err(bad("scaling", format!("{other} (a number; a learned scale is not supported)"))),
    };
    let target_modules =
        v["target_modules"].as_array().ok_or_else(|| bad("target_modules", "missing (a list of module names)".into()))?.iter().filter_map(|x| x.as_str().map(str::to_string)).collect();
    let c = BottleneckConfig {
        bottleneck: v["bottleneck_size"].as_u64().ok_or_else(|| bad("bottleneck_size", "missing".into()))? as usize,
        placement,
        target_modules,
        scale,
        non_linearity,
        dropout: v["adapter_dropout"].as_f64().unwrap_or(0.0),
    };
    c.check().map_err(|e| bad("config", e))?;
    Ok(c)
}
