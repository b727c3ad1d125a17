//! Parameter-efficient and partial tuning methods, one file each, behind [`Adapter`].
pub mod bottleneck;
pub mod full;
pub mod head;
pub mod lep;
pub mod lora;
mod lora_op;
pub mod loramoe;
mod loramoe_balance;
pub mod mam;
pub mod multi;
pub mod pat;
pub mod prefix;
pub mod prompt;
pub mod sparse;
pub mod sparse_delta;
pub mod sparse_graft;

use crate::Result;
use candle_core::Var;
use std::path::Path;

/// A tuning method attached to a model: what it trains and how it is saved.
pub trait Adapter {
    /// The method's name in recipes (`lora`, `qlora`, ...).
    fn method(&self) -> &'static str;
    /// Every trainable tensor, under the name it is saved with.
    fn trainable(&self) -> Vec<(String, Var)>;
    /// Switch dropout and other training-only behaviour.
    fn set_training(&self, on: bool);
    /// Re-seed any randomness (dropout) for optimiser step `step`, so a resumed run
    /// draws exactly what an uninterrupted one would.
    fn begin_step(&self, seed: u64, step: u64);
    /// The run's number of optimiser steps, before the first (PAT's schedule follows it).
    fn set_total_steps(&self, _total: usize) {}
    /// Write the adapter to `dir` (created; files replaced atomically), in the layout
    /// Hugging Face tools read.
    fn save(&self, model: &crate::CausalLm, dir: &Path) -> Result<()>;
    /// Switch the adapter off (the model computes as its base) or back on.
    fn set_enabled(&self, _on: bool) -> Result<()> {
        Err(crate::Error::Input(format!("{}: this method cannot be switched off; `reference: base` needs a LoRA adapter", self.method())))
    }
    /// Forget what the last training forward pass recorded for [`Adapter::aux_loss`]
    /// (called before each micro-batch's forward).
    fn clear_aux(&self) {}
    /// A loss term of the method's own over the training forward pass just run, with
    /// statistics (LoRAMoE's balancing constraint and router statistics); None: none.
    fn aux_loss(&self, _groups: &TokenGroups) -> Result<Option<AuxLoss>> {
        Ok(None)
    }
    /// Full and partial tuning (for Half Fine-Tuning's stages).
    fn as_full(&self) -> Option<&full::Full> {
        None
    }
    /// Sparse fine-tuning (for localization and the masked optimiser).
    fn as_sparse(&self) -> Option<&sparse::Sparse> {
        None
    }
}

/// Which sample each token of a forward pass belongs to, row-major over the batch
/// (`u32::MAX` for padding), and each sample's data type (world knowledge: true).
pub struct TokenGroups {
    pub seq_of: Vec<u32>,
    pub world: Vec<Option<bool>>,
}

/// A method's own loss term (a scalar tensor in the graph) and its statistics as
/// (name, sum, count).
pub struct AuxLoss {
    pub loss: candle_core::Tensor,
    pub stats: Vec<(String, f64, f64)>,
}

/// Load an adapter directory onto `model`: LoRA, LoRAMoE, prompt or prefix tuning
/// (PEFT's layout), a bottleneck adapter (LLM-Adapters' layout) or a sparse delta (added into
/// the weights), by its `adapter_config.json`.
pub fn load_adapter(model: &mut crate::CausalLm, dir: &Path) -> Result<Box<dyn Adapter>> {
    match peft_type(dir)?.as_str() {
        "LORA" => Ok(Box::new(lora::Lora::load(model, dir)?)),
        "LORAMOE" => Ok(Box::new(loramoe::Loramoe::load(model, dir)?)),
        "PROMPT_TUNING" => Ok(Box::new(prompt::PromptTuning::load(model, dir)?)),
        "SPARSE" => Ok(Box::new(sparse::Sparse::load(model, dir)?)),
        "BOTTLENECK" => Ok(Box::new(bottleneck::Bottleneck::load(model, dir)?)),
        "PREFIX_TUNING" => Ok(Box::new(prefix::PrefixTuning::load(model, dir)?)),
        "MAM" => Ok(Box::new(mam::Mam::load(model, dir)?)),
        "PAT" => Ok(Box::new(pat::Pat::load(model, dir)?)),
        other => Err(crate::Error::file(
            dir.join("adapter_config.json"),
            format!("peft_type {other:?}: instill loads LORA, LORAMOE, PROMPT_TUNING, PREFIX_TUNING, BOTTLENECK, MAM, PAT and SPARSE adapters"),
        )),
    }
}

/// The `peft_type` of an adapter directory's `adapter_config.json`.
pub fn peft_type(dir: &Path) -> Result<String> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| crate::Error::file(&path, e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| crate::Error::file(&path, format!("invalid JSON: {e}")))?;
    v["peft_type"].as_str().map(str::to_string).ok_or_else(|| crate::Error::file(&path, "no \"peft_type\" string"))
}

/// The file names of an adapter directory in PEFT's layout.
pub(crate) const CONFIG_FILE: &str = "adapter_config.json";
pub(crate) const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// PEFT's saved key for `part` (`lora_A`, `adapter_down`, ...) of a module.
pub(crate) fn peft_key(module: &str, part: &str) -> String {
    format!("base_model.model.{module}.{part}.weight")
}

/// Re-seed each layer's dropout generator for optimiser step `step`, so a resumed run
/// draws exactly what an uninterrupted one would.
pub(crate) fn reseed<'a>(rngs: impl Iterator<Item = &'a std::sync::Mutex<rand::rngs::StdRng>>, seed: u64, step: u64) {
    use rand::SeedableRng;
    for (i, rng) in rngs.enumerate() {
        let s = seed ^ step.wrapping_mul(0xA076_1D64_78BD_642F) ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        *rng.lock().expect("dropout rng") = rand::rngs::StdRng::seed_from_u64(s);
    }
}

/// `(rows, fan_in)` drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's and PEFT's
/// Kaiming-uniform with a = sqrt(5), the start of LoRA's A and an adapter's down.
pub(crate) fn kaiming_uniform(rng: &mut rand::rngs::StdRng, (rows, fan_in): (usize, usize), dev: &candle_core::Device) -> Result<candle_core::Tensor> {
    use rand::Rng;
    let bound = 1.0 / (fan_in as f32).sqrt();
    let v: Vec<f32> = (0..rows * fan_in).map(|_| rng.gen_range(-bound..bound)).collect();
    Ok(candle_core::Tensor::from_vec(v, (rows, fan_in), dev)?)
}

/// An inverted-dropout mask `(n, k)` keeping each value with probability `1 - p`.
pub(crate) fn dropout_mask(rng: &std::sync::Mutex<rand::rngs::StdRng>, p: f32, (n, k): (usize, usize)) -> Result<candle_core::Tensor> {
    use rand::Rng;
    let keep = 1.0 - p;
    let mut rng = rng.lock().expect("dropout rng");
    let m: Vec<f32> = (0..n * k).map(|_| if rng.gen::<f32>() < keep { 1.0 / keep } else { 0.0 }).collect();
    Ok(candle_core::Tensor::from_vec(m, (n, k), &candle_core::Device::Cpu)?)
}

/// Write `bytes` to `path` through a temp file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("partial.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| crate::Error::file(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| crate::Error::file(path, e.to_string()))?;
    Ok(())
}

/// Save named tensors as safetensors, atomically.
pub(crate) fn save_tensors(path: &Path, tensors: &[(String, candle_core::Tensor)]) -> Result<()> {
    let tmp = path.with_extension(format!("partial.{}", std::process::id()));
    let map: std::collections::HashMap<String, candle_core::Tensor> = tensors.iter().cloned().collect();
    candle_core::safetensors::save(&map, &tmp).map_err(|e| crate::Error::file(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| crate::Error::file(path, e.to_string()))?;
    Ok(())
}
