//! The saved form of a sparse fine-tuning result: for every weight it touches, the flat
//! row-major element indices in Hugging Face order and the change at each.
//!
//! `adapter_config.json` has `peft_type: "SPARSE"`; `sparse_delta.safetensors` holds, per
//! Hugging Face weight name `W`: `W.indices` (u32, strictly increasing), `W.delta` (f32,
//! tuned - base) and `W.values` (f32, the tuned values themselves: a run resumes from
//! them exactly, and they record what the base was). PEFT has no sparse type, so this
//! layout is ours; `--adapter` and `export --merge` read it, `instill graft` composes it.
use crate::model::CausalLm;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;
use std::path::Path;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const DELTA_FILE: &str = "sparse_delta.safetensors";

/// The change to one weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Hugging Face weight name (`model.layers.3.mlp.up_proj.weight`).
    pub name: String,
    /// Flat row-major indices into the Hugging Face tensor, strictly increasing.
    pub indices: Vec<u32>,
    pub delta: Vec<f32>,
    /// The tuned values (absent in a composed graft, where they mean nothing).
    pub values: Option<Vec<f32>>,
}

/// A sparse delta: changed elements of several weights.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseDelta {
    pub entries: Vec<Entry>,
}

impl SparseDelta {
    /// Elements changed in all.
    pub fn nnz(&self) -> usize {
        self.entries.iter().map(|e| e.indices.len()).sum()
    }

    /// Read `dir` (an adapter directory with `peft_type: SPARSE`); the config is returned
    /// as it is. Every tensor is checked: types, lengths, increasing indices.
    pub fn read(dir: &Path) -> Result<(Self, serde_json::Value)> {
        let cp = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cp).map_err(|e| Error::file(&cp, e.to_string()))?;
        let cfg: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&cp, format!("invalid JSON: {e}")))?;
        if cfg["peft_type"] != "SPARSE" {
            return Err(Error::file(&cp, "peft_type: expected \"SPARSE\""));
        }
        let path = dir.join(DELTA_FILE);
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| Error::file(&path, e.to_string()))?;
        let bad = |name: &str, msg: String| Error::file(&path, format!("{name}: {msg}"));
        let mut names: Vec<&str> = tensors.keys().filter_map(|k| k.strip_suffix(".indices")).collect();
        names.sort_unstable();
        let mut entries = vec![];
        for name in names {
            let get = |suffix: &str, dtype: DType| -> Result<Option<&Tensor>> {
                let Some(t) = tensors.get(&format!("{name}.{suffix}")) else { return Ok(None) };
                if t.dtype() != dtype || t.rank() != 1 {
                    return Err(bad(name, format!("{suffix} must be a 1-D {dtype:?} tensor, not {:?} {:?}", t.dtype(), t.dims())));
                }
                Ok(Some(t))
            };
            let indices = get("indices", DType::U32)?.expect("listed").to_vec1::<u32>()?;
            let delta = get("delta", DType::F32)?.ok_or_else(|| bad(name, "no .delta tensor".into()))?.to_vec1::<f32>()?;
            let values = get("values", DType::F32)?.map(|t| t.to_vec1::<f32>()).transpose()?;
            if delta.len() != indices.len() || values.as_ref().is_some_and(|v| v.len() != indices.len()) {
                return Err(bad(name, format!("{} indices but {} deltas / {:?} values", indices.len(), delta.len(), values.as_ref().map(Vec::len))));
            }
            if let Some(w) = indices.windows(2).position(|w| w[0] >= w[1]) {
                return Err(bad(name, format!("indices are not strictly increasing at position {}", w + 1)));
            }
            entries.push(Entry { name: name.to_string(), indices, delta, values });
        }
        if let Some(k) = tensors.keys().find(|k| !k.ends_with(".indices") && !tensors.contains_key(&format!("{}.indices", k.rsplit_once('.').map_or("", |x| x.0)))) {
            return Err(bad(k, "has no matching .indices tensor".into()));
        }
        Ok((SparseDelta { entries }, cfg))
    }

    /// Write `dir/sparse_delta.safetensors` and `dir/adapter_config.json` (with `config`'s
    /// keys added to the standard ones), each atomically.
    pub fn write(&self, dir: &Path, config: serde_json::Value) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e.to_string()))?;
        let mut tensors = vec![];
        for e in &self.entries {
            tensors.push((format!("{}.indices", e.name), Tensor::from_slice(&e.indices, e.indices.len(), &Device::Cpu)?));
            tensors.push((format!("{}.delta", e.name), Tensor::from_slice(&e.delta, e.delta.len(), &Device::Cpu)?));
            if let Some(v) = &e.values {
                tensors.push((format!("{}.values", e.name), Tensor::from_slice(v, v.len(), &Device::Cpu)?));
            }
        }
        super::save_tensors(&dir.join(DELTA_FILE), &tensors)?;
        let mut cfg = serde_json::json!({
            "peft_type": "SPARSE", "task_type": "CAUSAL_LM", "inference_mode": true, "base_model_name_or_path": null,
            "nnz": self.nnz(), "tensors": self.entries.len(), "layout": "per weight W: W.indices (u32, flat row-major in Hugging Face order), W.delta, W.values (f32)",
        });
        if let (Some(to), serde_json::Value::Object(from)) = (cfg.as_object_mut(), config) {
            to.extend(from);
        }
        super::write_atomic(&dir.join(CONFIG_FILE), serde_json::to_string_pretty(&cfg).expect("json").as_bytes())
    }

    /// Add the delta to `model`'s weights (each touched weight becomes a dense f32
    /// variable); returns those variables by name. `from` names the file in errors.
    pub fn apply(&self, model: &mut CausalLm, from: &Path) -> Result<Vec<(String, Var)>> {
        let vars = touched_vars(model, self, from)?;
        for (e, (_, var)) in self.entries.iter().zip(&vars) {
            let order = hf_order(model, &e.name, var.as_tensor())?;
            let mut w = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            for (&k, d) in e.indices.iter().zip(&e.delta) {
                w[order.internal(k as usize)] += d;
            }
            var.set(&Tensor::from_vec(w, var.shape(), var.device())?)?;
        }
        Ok(vars)
    }
}

/// The model's weights the delta names, as variables in the delta's entry order; an
/// unknown name or an index past a weight's end is an error naming the file.
pub(crate) fn touched_vars(model: &mut CausalLm, delta: &SparseDelta, from: &Path) -> Result<Vec<(String, Var)>> {
    let wanted: std::collections::HashSet<&str> = delta.entries.iter().map(|e| e.name.as_str()).collect();
    let vars: HashMap<String, Var> = model.make_trainable(&|n| wanted.contains(n))?.into_iter().collect();
    let mut out = vec![];
    for e in &delta.entries {
        let var = vars.get(&e.name).ok_or_else(|| Error::file(from.join(DELTA_FILE), format!("{}: the model has no such weight (is this delta for another model?)", e.name)))?;
        let n = var.elem_count();
        if let Some(&k) = e.indices.last().filter(|&&k| k as usize >= n) {
            return Err(Error::file(from.join(DELTA_FILE), format!("{}: index {k} is past the end of the weight ({n} elements)", e.name)));
        }
        out.push((e.name.clone(), var.clone()));
    }
    Ok(out)
}

/// Where each element of a weight sits in Hugging Face order versus the model's own
/// (llama's GGUF q/k rows are permuted; elsewhere the two are the same).
pub(crate) struct Order {
    /// `to_internal[k]`: the model's flat index of Hugging Face element k (None: identity).
    to_internal: Option<Vec<u32>>,
}

impl Order {
    pub fn internal(&self, hf: usize) -> usize {
        self.to_internal.as_ref().map_or(hf, |p| p[hf] as usize)
    }

    /// The inverse: the Hugging Face index of the model's element `i`.
    pub fn inverse(&self) -> Option<Vec<u32>> {
        let p = self.to_internal.as_ref()?;
        let mut inv = vec![0u32; p.len()];
        for (k, &i) in p.iter().enumerate() {
            inv[i as usize] = k as u32;
        }
        Some(inv)
    }
}

/// The element order of weight `hf_name` (shaped as `t`), found by converting an index
/// ramp with the family's own HF conversion (minus the conversion of zeros, so affine
/// conversions such as gemma's norm offset leave the ramp alone).
pub(crate) fn hf_order(model: &CausalLm, hf_name: &str, t: &Tensor) -> Result<Order> {
    let gguf = crate::model::arch::hf_to_gguf(model.arch, hf_name).unwrap_or(hf_name.to_string());
    let n = t.elem_count();
    let ramp = Tensor::arange(0f64, n as f64, &Device::Cpu)?.reshape(t.shape())?;
    let zeros = Tensor::zeros(t.shape(), DType::F64, &Device::Cpu)?;
    let conv = (model.rows_to_hf(&gguf, ramp, true)? - model.rows_to_hf(&gguf, zeros, true)?)?;
    let p: Vec<u32> = conv.flatten_all()?.to_vec1::<f64>()?.into_iter().map(|x| x.round() as u32).collect();
    let identity = p.iter().enumerate().all(|(k, &i)| k as u32 == i);
    Ok(Order { to_internal: (!identity).then_some(p) })
}
