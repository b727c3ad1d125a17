//! LoRA (Hu et al. 2021): `y = W x + (alpha / r) B A x`, with rsLoRA's `alpha / sqrt(r)`
//! as an option. On a quantized base (the GGUF blocks kept as they are) this is QLoRA:
//! the frozen projection's backward pass multiplies by the dequantized weight, block by
//! block, and no gradient of the base is ever formed.
//!
//! Saved and loaded in PEFT's layout: `adapter_config.json` and
//! `adapter_model.safetensors` with keys `base_model.model.<module>.lora_A.weight`.
use super::{save_tensors, write_atomic, Adapter};
use crate::model::linear::Delta;
use crate::model::CausalLm;
use crate::{Error, Result};
use candle_core::{DType, Tensor, Var};
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    #[serde(default = "default_r")]
    pub r: usize,
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    #[serde(default)]
    pub dropout: f64,
    /// Module names (`q_proj`) or full paths (`model.layers.0.self_attn.q_proj`);
    /// `all-linear` targets every block projection.
    #[serde(default = "default_targets")]
    pub target_modules: Vec<String>,
    /// rsLoRA: scale by alpha / sqrt(r) instead of alpha / r.
    #[serde(default)]
    pub rslora: bool,
}

fn default_r() -> usize {
    8
}
fn default_alpha() -> f64 {
    16.0
}
fn default_targets() -> Vec<String> {
    vec!["q_proj".into(), "v_proj".into()]
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { r: default_r(), alpha: default_alpha(), dropout: 0.0, target_modules: default_targets(), rslora: false }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Does `module` (a full HF module path) match a target? PEFT's rule: equal, or
    /// ending in `.<target>`.
    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|t| t == "all-linear" || module == t || module.ends_with(&format!(".{t}")))
    }
}

/// The A and B of one projection.
#[derive(Debug)]
pub struct LoraLayer {
    pub a: Var,
    /// In the model's own row order (see `CausalLm::rows_to_hf`).
    pub b: Var,
    /// The base weight's GGUF name, for converting B's rows.
    pub gguf: String,
    scale: f64,
    dropout: f32,
    training: Arc<AtomicBool>,
    enabled: Arc<AtomicBool>,
    rng: Mutex<StdRng>,
}

impl Delta for LoraLayer {
    fn params(&self) -> Vec<Tensor> {
        vec![self.a.as_tensor().clone(), self.b.as_tensor().clone()]
    }

    fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn fused(&self, base: &crate::model::linear::Linear, x: &Tensor) -> Result<Option<Tensor>> {
        // Under training without dropout (dropout's mask needs its own input copy).
        if !self.training.load(Ordering::Relaxed) || self.dropout > 0.0 {
            return Ok(None);
        }
        super::lora_op::fused(base, self.a.as_tensor(), self.b.as_tensor(), self.scale, x)
    }

    fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_f = dims[dims.len() - 1];
        let mut x = x.reshape(((), in_f))?;
        let training = self.training.load(Ordering::Relaxed);
        if self.dropout > 0.0 && training {
            let mask = self.dropout_mask(x.dims2()?)?;
            x = (x * mask)?;
        }
        // Outside training the weights are plain tensors: no autograd graph is built.
        let (a, b) = if training { (self.a.as_tensor().clone(), self.b.as_tensor().clone()) } else { (self.a.as_tensor().detach(), self.b.as_tensor().detach()) };
        let y = (x.matmul(&a.t()?)?.matmul(&b.t()?)? * self.scale)?;
        let mut shape = dims;
        *shape.last_mut().expect("rank >= 1") = self.b.dim(0)?;
        Ok(y.reshape(shape)?)
    }
}

impl LoraLayer {
    /// `alpha / r` (or rsLoRA's `alpha / sqrt(r)`).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Inverted dropout from a seeded generator (runs are reproducible).
    fn dropout_mask(&self, nk: (usize, usize)) -> Result<Tensor> {
        super::dropout_mask(&self.rng, self.dropout, nk)
    }
}

pub struct Lora {
    pub config: LoraConfig,
    /// (module path, layer) in model order.
    pub layers: Vec<(String, Arc<LoraLayer>)>,
    training: Arc<AtomicBool>,
    enabled: Arc<AtomicBool>,
}

use super::{peft_key, CONFIG_FILE, WEIGHTS_FILE};

impl Lora {
    /// Fresh LoRA on every targeted projection: A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's
    /// Kaiming-uniform with a = sqrt(5)), B = 0, so the model starts unchanged.
    pub fn attach(model: &mut CausalLm, config: &LoraConfig, seed: u64) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        Self::build(model, config, seed, |_, out_f, in_f, dev| Ok((super::kaiming_uniform(&mut rng, (config.r, in_f), dev)?, Tensor::zeros((out_f, config.r), DType::F32, dev)?)))
    }

    /// Load a PEFT LoRA adapter directory onto `model`.
    pub fn load(model: &mut CausalLm, dir: &Path) -> Result<Self> {
        let config = read_config(dir)?;
        let path = dir.join(WEIGHTS_FILE);
        let tensors = candle_core::safetensors::load(&path, &model.device).map_err(|e| Error::file(&path, e.to_string()))?;
        let lora = Self::build(model, &config, 0, |module, out_f, in_f, _| {
            let get = |part: &str| -> Result<Tensor> {
                let key = peft_key(module, part);
                let t = tensors.get(&key).ok_or_else(|| Error::file(&path, format!("missing tensor {key}")))?;
                Ok(t.to_dtype(DType::F32)?)
            };
            let (a, b) = (get("lora_A")?, get("lora_B")?);
            if a.dims() != [config.r, in_f] || b.dims() != [out_f, config.r] {
                return Err(Error::file(&path, format!("{module}: lora_A {:?} / lora_B {:?}, expected [{}, {in_f}] / [{out_f}, {}]", a.dims(), b.dims(), config.r, config.r)));
            }
            Ok((a, b))
        })?;
        let expected = 2 * lora.layers.len();
        let found = tensors.keys().filter(|k| k.contains(".lora_")).count();
        if found != expected {
            return Err(Error::file(&path, format!("{found} LoRA tensors, but the config's target_modules match {expected} on this model")));
        }
        Ok(lora)
    }

    fn build(model: &mut CausalLm, config: &LoraConfig, seed: u64, mut init: impl FnMut(&str, usize, usize, &candle_core::Device) -> Result<(Tensor, Tensor)>) -> Result<Self> {
        if config.r == 0 {
            return Err(Error::Input("lora.r must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&config.dropout) {
            return Err(Error::Input(format!("lora.dropout {}: expected a probability in [0, 1)", config.dropout)));
        }
        let training = Arc::new(AtomicBool::new(false));
        let enabled = Arc::new(AtomicBool::new(true));
        let dev = model.device.clone();
        let (arch, model_config) = (model.arch, model.config.clone());
        let mut layers = vec![];
        for (i, p) in model.projections_mut().into_iter().enumerate() {
            if !config.targets(&p.module) {
                continue;
            }
            let (out_f, in_f) = p.linear.shape()?;
            let (a, b) = init(&p.module, out_f, in_f, &dev)?;
            // B's rows follow the model's order of output features.
            let b = arch.convert(&p.gguf, b, &model_config, false)?;
            let layer = Arc::new(LoraLayer {
                a: Var::from_tensor(&a)?,
                b: Var::from_tensor(&b)?,
                gguf: p.gguf,
                scale: config.scale(),
                dropout: config.dropout as f32,
                training: training.clone(),
                enabled: enabled.clone(),
                rng: Mutex::new(StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))),
            });
            p.linear.adapter = Some(layer.clone());
            layers.push((p.module, layer));
        }
        if layers.is_empty() {
            return Err(Error::Input(format!("lora.target_modules {:?} match no projection (names: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)", config.target_modules)));
        }
        Ok(Lora { config: config.clone(), layers, training, enabled })
    }

    /// Fold the adapter into the base weights (`W += scale * B A`) and detach it.
    pub fn merge_into(&self, model: &mut CausalLm) -> Result<()> {
        for p in model.projections_mut() {
            if let Some((_, l)) = self.layers.iter().find(|(m, _)| *m == p.module) {
                let delta = (l.b.as_tensor().matmul(l.a.as_tensor())? * l.scale)?;
                let w = (p.linear.dense_weight()? + delta)?;
                *p.linear = crate::model::linear::Linear::dense(w, p.linear.bias.clone());
            }
        }
        Ok(())
    }

    /// Every tensor under its PEFT name in Hugging Face's row order (as saved); `of`
    /// picks the value (the weight itself, or e.g. its gradient).
    pub fn peft_tensors(&self, model: &CausalLm, of: impl Fn(&Var) -> Result<Tensor>) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![];
        for (m, l) in &self.layers {
            out.push((peft_key(m, "lora_A"), of(&l.a)?));
            out.push((peft_key(m, "lora_B"), model.rows_to_hf(&l.gguf, of(&l.b)?, true)?));
        }
        Ok(out)
    }
}

impl Adapter for Lora {
    fn method(&self) -> &'static str {
        "lora"
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        let mut out = vec![];
        for (m, l) in &self.layers {
            out.push((peft_key(m, "lora_A"), l.a.clone()));
            out.push((peft_key(m, "lora_B"), l.b.clone()));
        }
        out
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
        let tensors = self.peft_tensors(model, |v| Ok(v.as_tensor().clone()))?;
        save_tensors(&dir.join(WEIGHTS_FILE), &tensors)?;
        let c = &self.config;
        let cfg = serde_json::json!({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": c.r, "lora_alpha": c.alpha, "lora_dropout": c.dropout,
            "target_modules": c.target_modules, "use_rslora": c.rslora, "bias": "none", "fan_in_fan_out": false,
            "init_lora_weights": true, "inference_mode": true, "modules_to_save": null, "base_model_name_or_path": null,
        });
        write_atomic(&dir.join(CONFIG_FILE), serde_json::to_string_pretty(&cfg).expect("json").as_bytes())
    }
}

/// A PEFT `adapter_config.json`, checked for what instill supports.
fn read_config(dir: &Path) -> Result<LoraConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("invalid JSON: {e}")))?;
    let bad = |k: &str, msg: String| Error::file(&path, format!("{k}: {msg}"));
    if v["peft_type"] != "LORA" {
        return Err(bad("peft_type", format!("{} (instill loads LORA adapters)", v["peft_type"])));
    }
    if v["fan_in_fan_out"].as_bool().unwrap_or(false) {
        return Err(bad("fan_in_fan_out", "true is not supported".into()));
    }
    if !matches!(v["bias"].as_str(), None | Some("none")) {
        return Err(bad("bias", format!("{} (only \"none\" is supported)", v["bias"])));
    }
    let r = v["r"].as_u64().ok_or_else(|| bad("r", "missing".into()))? as usize;
    let targets = match &v["target_modules"] {
        serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        serde_json::Value::String(s) if s == "all-linear" => vec![s.clone()],
        other => return Err(bad("target_modules", format!("{other} (a list of module names, or \"all-linear\")"))),
    };
    Ok(LoraConfig {
        r,
        alpha: v["lora_alpha"].as_f64().unwrap_or(8.0),
        dropout: v["lora_dropout"].as_f64().unwrap_or(0.0),
        target_modules: targets,
        rslora: v["use_rslora"].as_bool().unwrap_or(false),
    })
}
