//! LoRAMoE (Dou et al. 2023, "LoRAMoE: Alleviate World Knowledge Forgetting in Large
//! Language Models via MoE-Style Plugin"): `E` LoRA experts on each chosen projection,
//! mixed per token by a softmax router over the projection's input,
//! `y = W x + (alpha / r) sum_e g_e(x) B_e A_e drop_e(x)`, `g = softmax(W_route x)`, and
//! the localized balancing constraint: per sample `b` and expert `n`,
//! `Q[b, n]` = b's mean router weight `g_n` over its tokens, weighted by `1 + delta` where the expert's group
//! matches the sample's data type (the first `world_experts` experts and world-knowledge
//! samples; the rest and task samples), else `1 - delta`; the loss is
//! `balance_weight x cv^2(Q o C)` per projection (variance over mean squared, as the
//! official code computes it), summed over projections and added to the objective's.
//!
//! Where this differs from the official code (Ablustrund/LoRAMoE, `peft/tuners/lora.py`):
//! `Q[b, n]` is sample `b`'s mean router weight, not its sum, and leaves padding out. The
//! reference trains one sample per device, where the two are the same constraint (`cv^2`
//! does not change with a common scale); with several samples per batch, sums would make
//! the constraint mostly about their lengths. Packed examples count as samples of their
//! own. The experts of a projection share one dropout mask (the reference draws one per
//! expert, which costs `E` copies of the input per projection kept for the backward pass:
//! 5 GB more and 3x the step time on SmolLM2 at 2,700 tokens). `top_k` (the reference is
//! dense) keeps each token's `k` highest router logits and renormalises over them.
//!
//! Saved as `adapter_config.json` (`peft_type: LORAMOE`, the reference's `lora_nums`,
//! `blc_weight`, `blc_alpha`) and `adapter_model.safetensors` with the reference's keys:
//! `base_model.model.<module>.lora_A{i}.weight` `(r, in)`, `.lora_B{i}.weight` `(out, r)`,
//! `.lora_route.weight` `(E, in)`. The router makes the delta depend on the input, so it
//! has no merged or GGUF LoRA form.
use super::{save_tensors, write_atomic, Adapter, AuxLoss, TokenGroups};
use crate::model::linear::Delta;
use crate::model::CausalLm;
use crate::{Error, Result};
use candle_core::{DType, Tensor, Var};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoramoeConfig {
    /// Experts per projection (the reference's `lora_nums`).
    #[serde(default = "default_experts")]
    pub experts: usize,
    /// Rank of each expert.
    #[serde(default = "default_r")]
    pub r: usize,
    /// Scale `alpha / r`.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Dropout on the experts' input (one mask per projection); the router sees it undropped.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    #[serde(default = "default_targets")]
    pub target_modules: Vec<String>,
    /// Mix only each token's `k` best experts; None: all (dense, as the paper).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// The world-knowledge group: the first this many experts (default half).
    #[serde(default)]
    pub world_experts: Option<usize>,
    /// Weight of the balancing constraint (`blc_weight`); 0 turns it off.
    #[serde(default)]
    pub balance_weight: f64,
    /// Its localization `delta` (`blc_alpha`), in [0, 1).
    #[serde(default)]
    pub balance_alpha: f64,
    /// The record field that holds the data type (1 or "world": world knowledge; 0 or
    /// "task": downstream task), as the reference's `task_type`.
    #[serde(default = "default_type_field")]
    pub type_field: String,
}

fn default_experts() -> usize {
    6
}
fn default_r() -> usize {
    4
}
fn default_alpha() -> f64 {
    32.0
}
fn default_dropout() -> f64 {
    0.05
}
fn default_targets() -> Vec<String> {
    vec!["gate_proj".into(), "up_proj".into(), "down_proj".into()]
}
fn default_type_field() -> String {
    "task_type".into()
}

impl Default for LoramoeConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }
}

impl LoramoeConfig {
    pub fn world(&self) -> usize {
        self.world_experts.unwrap_or(self.experts / 2)
    }

    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(format!("loramoe.{m}")));
        if self.experts < 2 {
            return bad(format!("experts {}: a mixture needs at least 2", self.experts));
        }
        if self.r == 0 {
            return bad("r must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {}: expected a probability in [0, 1)", self.dropout));
        }
        if let Some(k) = self.top_k.filter(|&k| k == 0 || k > self.experts) {
            return bad(format!("top_k {k}: expected 1 to experts ({})", self.experts));
        }
        if self.world() > self.experts {
            return bad(format!("world_experts {}: more than experts ({})", self.world(), self.experts));
        }
        if !(0.0..1.0).contains(&self.balance_alpha) || !(self.balance_weight >= 0.0 && self.balance_weight.is_finite()) {
            return bad(format!("balance_alpha {} / balance_weight {}: expected delta in [0, 1) and a weight >= 0", self.balance_alpha, self.balance_weight));
        }
        Ok(())
    }

    /// Does `module` match a target (PEFT's rule, as LoRA's)?
    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|t| t == "all-linear" || module == t || module.ends_with(&format!(".{t}")))
    }
}

/// A record's data type from its field value: world knowledge (true) or task (false).
pub fn parse_type(v: &serde_json::Value) -> std::result::Result<bool, String> {
    match v {
        serde_json::Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
        serde_json::Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
        serde_json::Value::Bool(b) => Ok(*b),
        serde_json::Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "1" | "world" | "knowledge" | "world-knowledge" => Ok(true),
            "0" | "task" | "downstream" => Ok(false),
            _ => Err(format!("{s:?}: expected 1 / \"world\" (world knowledge) or 0 / \"task\"")),
        },
        other => Err(format!("{other}: expected 1 / \"world\" (world knowledge) or 0 / \"task\"")),
    }
}

/// The experts of one projection, stacked: expert `e` is rows `e r .. (e + 1) r` of `a` and
/// the same columns of `b`.
#[derive(Debug)]
pub struct MoeLayer {
    /// `(E r, in)`.
    pub a: Var,
    /// `(out, E r)`, in the model's own row order (see `CausalLm::rows_to_hf`).
    pub b: Var,
    /// `(E, in)`.
    pub route: Var,
    pub gguf: String,
    experts: usize,
    r: usize,
    scale: f64,
    dropout: f32,
    top_k: Option<usize>,
    training: Arc<AtomicBool>,
    enabled: Arc<AtomicBool>,
    /// The router weights of each training forward since the last `clear_aux`: `(tokens, E)`;
    /// detached when no constraint differentiates them (statistics only), so a caller that
    /// never clears them keeps numbers, not every step's graph.
    gates: Mutex<Vec<Tensor>>,
    /// The balancing constraint is on: keep the gates' graph for its gradient.
    constrained: bool,
    rng: Mutex<StdRng>,
}

impl Delta for MoeLayer {
    fn params(&self) -> Vec<Tensor> {
        vec![self.a.as_tensor().clone(), self.b.as_tensor().clone(), self.route.as_tensor().clone()]
    }

    fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_f = dims[dims.len() - 1];
        let x2 = x.reshape(((), in_f))?.to_dtype(DType::F32)?;
        let training = self.training.load(Ordering::Relaxed);
        let get = |v: &Var| if training { v.as_tensor().clone() } else { v.as_tensor().detach() };
        let (a, b, route) = (get(&self.a), get(&self.b), get(&self.route));
        let gate = self.gate(&x2.matmul(&route.t()?)?)?;
        if training {
            self.gates.lock().expect("gates").push(if self.constrained { gate.clone() } else { gate.detach() });
        }
        // One dropout mask for all the experts of a projection (see the module notes).
        let xd = if training && self.dropout > 0.0 { (&x2 * self.dropout_mask(x2.dims2()?)?)? } else { x2 };
        let h = xd.matmul(&a.t()?)?;
        let t = h.dim(0)?;
        let h = h.reshape((t, self.experts, self.r))?.broadcast_mul(&gate.unsqueeze(2)?)?.reshape((t, self.experts * self.r))?;
        let y = (h.matmul(&b.t()?)? * self.scale)?.to_dtype(x.dtype())?;
        let mut shape = dims;
        *shape.last_mut().expect("rank >= 1") = self.b.dim(0)?;
        Ok(y.reshape(shape)?)
    }
}

impl MoeLayer {
    /// Router weights from logits `(T, E)`: softmax over all experts, or over each token's
    /// `top_k` best (the rest get 0; ties go to the lower index).
    fn gate(&self, logits: &Tensor) -> Result<Tensor> {
        let m = logits.max_keepdim(1)?.detach();
        let mut e = logits.broadcast_sub(&m)?.exp()?;
        if let Some(k) = self.top_k.filter(|&k| k < self.experts) {
            let rows = logits.to_vec2::<f32>()?;
            let keep: Vec<f32> = rows.iter().flat_map(|row| top_k_mask(row, k)).collect();
            e = (e * Tensor::from_vec(keep, logits.dims(), logits.device())?)?;
        }
        Ok(e.broadcast_div(&e.sum_keepdim(1)?)?)
    }

    /// Inverted dropout from the layer's seeded generator.
    fn dropout_mask(&self, nk: (usize, usize)) -> Result<Tensor> {
        super::dropout_mask(&self.rng, self.dropout, nk)
    }

    /// Expert `e`'s A `(r, in)` and B `(out, r)` (B in the model's row order).
    pub fn expert(&self, e: usize) -> Result<(Tensor, Tensor)> {
        Ok((self.a.as_tensor().narrow(0, e * self.r, self.r)?, self.b.as_tensor().narrow(1, e * self.r, self.r)?))
    }
}

/// 1 for the `k` largest of `row` (the first of equal values first), else 0.
fn top_k_mask(row: &[f32], k: usize) -> Vec<f32> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&i, &j| row[j].total_cmp(&row[i]).then(i.cmp(&j)));
    let mut m = vec![0f32; row.len()];
    idx.iter().take(k).for_each(|&i| m[i] = 1.0);
    m
}

pub struct Loramoe {
    pub config: LoramoeConfig,
    /// (module path, layer) in model order.
    pub layers: Vec<(String, Arc<MoeLayer>)>,
    training: Arc<AtomicBool>,
    enabled: Arc<AtomicBool>,
}

use super::{peft_key as key, CONFIG_FILE, WEIGHTS_FILE};

/// The initial (A, B, route) of one projection.
type Init<'a> = dyn FnMut(&str, usize, usize, &candle_core::Device) -> Result<(Tensor, Tensor, Tensor)> + 'a;

impl Loramoe {
    /// Fresh experts on every targeted projection: A and the router from PEFT's
    /// Kaiming-uniform U(-1/sqrt(in), 1/sqrt(in)), B = 0 (the model starts unchanged).
    pub fn attach(model: &mut CausalLm, config: &LoramoeConfig, seed: u64) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let (e, r) = (config.experts, config.r);
        Self::build(model, config, seed, &mut |_, out_f, in_f, dev| {
            let bound = 1.0 / (in_f as f32).sqrt();
            let mut uniform = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-bound..bound)).collect() };
            let a = Tensor::from_vec(uniform(e * r * in_f), (e * r, in_f), dev)?;
            let route = Tensor::from_vec(uniform(e * in_f), (e, in_f), dev)?;
            Ok((a, Tensor::zeros((out_f, e * r), DType::F32, dev)?, route))
        })
    }

    /// Load a LoRAMoE adapter directory onto `model`.
    pub fn load(model: &mut CausalLm, dir: &Path) -> Result<Self> {
        let config = read_config(dir)?;
        let path = dir.join(WEIGHTS_FILE);
        let tensors = candle_core::safetensors::load(&path, &model.device).map_err(|e| Error::file(&path, e.to_string()))?;
        let (e, r) = (config.experts, config.r);
        let moe = Self::build(model, &config, 0, &mut |module, out_f, in_f, _| {
            let get = |part: &str, shape: [usize; 2]| -> Result<Tensor> {
                let k = key(module, part);
                let t = tensors.get(&k).ok_or_else(|| Error::file(&path, format!("missing tensor {k}")))?;
                if t.dims() != shape {
                    return Err(Error::file(&path, format!("{k}: shape {:?}, expected {shape:?}", t.dims())));
                }
                Ok(t.to_dtype(DType::F32)?)
            };
            let a: Vec<Tensor> = (0..e).map(|i| get(&format!("lora_A{i}"), [r, in_f])).collect::<Result<_>>()?;
            let b: Vec<Tensor> = (0..e).map(|i| get(&format!("lora_B{i}"), [out_f, r])).collect::<Result<_>>()?;
            // Saved in Hugging Face's row order; `build` converts B to the model's.
            Ok((Tensor::cat(&a, 0)?, Tensor::cat(&b, 1)?, get("lora_route", [e, in_f])?))
        })?;
        let expected = (2 * e + 1) * moe.layers.len();
        let found = tensors.keys().filter(|k| k.contains(".lora_")).count();
        if found != expected {
            return Err(Error::file(&path, format!("{found} LoRAMoE tensors, but the config's target_modules match {} projections on this model ({expected} tensors)", moe.layers.len())));
        }
        Ok(moe)
    }

    fn build(model: &mut CausalLm, config: &LoramoeConfig, seed: u64, init: &mut Init) -> Result<Self> {
        config.check()?;
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
            let (a, b, route) = init(&p.module, out_f, in_f, &dev)?;
            let b = arch.convert(&p.gguf, b, &model_config, false)?;
            let layer = Arc::new(MoeLayer {
                a: Var::from_tensor(&a)?,
                b: Var::from_tensor(&b)?,
                route: Var::from_tensor(&route)?,
                gguf: p.gguf,
                experts: config.experts,
                r: config.r,
                scale: config.alpha / config.r as f64,
                dropout: config.dropout as f32,
                top_k: config.top_k,
                training: training.clone(),
                enabled: enabled.clone(),
                gates: Mutex::new(vec![]),
                constrained: config.balance_weight > 0.0,
                rng: Mutex::new(StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))),
            });
            p.linear.adapter = Some(layer.clone());
            layers.push((p.module, layer));
        }
        if layers.is_empty() {
            return Err(Error::Input(format!("loramoe.target_modules {:?} match no projection (names: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)", config.target_modules)));
        }
        Ok(Loramoe { config: config.clone(), layers, training, enabled })
    }

    /// Every tensor under its saved name, B in Hugging Face's row order.
    pub fn saved_tensors(&self, model: &CausalLm) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![];
        for (m, l) in &self.layers {
            let b = model.rows_to_hf(&l.gguf, l.b.as_tensor().clone(), true)?;
            for e in 0..self.config.experts {
                out.push((key(m, &format!("lora_A{e}")), l.expert(e)?.0.contiguous()?));
                out.push((key(m, &format!("lora_B{e}")), b.narrow(1, e * l.r, l.r)?.contiguous()?));
            }
            out.push((key(m, "lora_route"), l.route.as_tensor().clone()));
        }
        Ok(out)
    }
}

impl Adapter for Loramoe {
    fn method(&self) -> &'static str {
        "loramoe"
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        let mut out = vec![];
        for (m, l) in &self.layers {
            out.push((key(m, "lora_A"), l.a.clone()));
            out.push((key(m, "lora_B"), l.b.clone()));
            out.push((key(m, "lora_route"), l.route.clone()));
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

    fn clear_aux(&self) {
        self.layers.iter().for_each(|(_, l)| l.gates.lock().expect("gates").clear());
    }

    fn aux_loss(&self, groups: &TokenGroups) -> Result<Option<AuxLoss>> {
        let mut gates = vec![];
        for (m, l) in &self.layers {
            let g = l.gates.lock().expect("gates").drain(..).next_back();
            let Some(g) = g else { return Ok(None) };
            if g.dim(0)? != groups.seq_of.len() {
                return Err(Error::Input(format!(
                    "loramoe: {m} routed {} tokens, but the micro-batch has {}; the balancing constraint needs one forward pass per micro-batch",
                    g.dim(0)?,
                    groups.seq_of.len()
                )));
            }
            gates.push(g);
        }
        super::loramoe_balance::aux(&self.config, &gates, groups).map(Some)
    }

    fn save(&self, model: &CausalLm, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e.to_string()))?;
        save_tensors(&dir.join(WEIGHTS_FILE), &self.saved_tensors(model)?)?;
        let c = &self.config;
        let cfg = serde_json::json!({
            "peft_type": "LORAMOE", "task_type": "CAUSAL_LM", "r": c.r, "lora_alpha": c.alpha, "lora_dropout": c.dropout,
            "lora_nums": c.experts, "top_k": c.top_k, "world_experts": c.world(), "blc_weight": c.balance_weight,
            "blc_alpha": c.balance_alpha, "type_field": c.type_field, "target_modules": c.target_modules, "bias": "none",
            "inference_mode": true, "base_model_name_or_path": null,
        });
        write_atomic(&dir.join(CONFIG_FILE), serde_json::to_string_pretty(&cfg).expect("json").as_bytes())
    }
}

/// A LoRAMoE `adapter_config.json`.
fn read_config(dir: &Path) -> Result<LoramoeConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("invalid JSON: {e}")))?;
    let bad = |k: &str, msg: &str| Error::file(&path, format!("{k}: {msg}"));
    if v["peft_type"] != "LORAMOE" {
        return Err(bad("peft_type", "expected \"LORAMOE\""));
    }
    let num = |k: &str| v[k].as_u64().map(|n| n as usize).ok_or_else(|| bad(k, "missing (a positive integer)"));
    let targets = v["target_modules"].as_array().ok_or_else(|| bad("target_modules", "missing (a list of module names)"))?;
    let experts = num("lora_nums")?;
    let c = LoramoeConfig {
        experts,
        r: num("r")?,
        alpha: v["lora_alpha"].as_f64().ok_or_else(|| bad("lora_alpha", "missing"))?,
        dropout: v["lora_dropout"].as_f64().unwrap_or(0.0),
        target_modules: targets.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        top_k: v["top_k"].as_u64().map(|k| k as usize),
        world_experts: Some(v["world_experts"].as_u64().map_or(experts / 2, |w| w as usize)),
        balance_weight: v["blc_weight"].as_f64().unwrap_or(0.0),
        balance_alpha: v["blc_alpha"].as_f64().unwrap_or(0.0),
        type_field: v["type_field"].as_str().unwrap_or("task_type").to_string(),
    };
    c.check().map_err(|e| Error::file(&path, e.to_string()))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_largest_and_breaks_ties_by_index() {
        assert_eq!(top_k_mask(&[0.1, 3.0, 2.0, 3.0], 2), vec![0.0, 1.0, 0.0, 1.0]);
        assert_eq!(top_k_mask(&[1.0, 1.0, 1.0], 2), vec![1.0, 1.0, 0.0]);
    }

    #[test]
    fn data_types_parse() {
        use serde_json::json;
        assert_eq!(parse_type(&json!(1)), Ok(true));
        assert_eq!(parse_type(&json!("task")), Ok(false));
        assert!(parse_type(&json!(2)).unwrap_err().contains("expected 1"));
    }
}
