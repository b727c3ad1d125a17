//! A LoRA adapter as the GGUF LoRA llama.cpp's `--lora` applies (the layout of
//! llama.cpp's `convert_lora_to_gguf.py`): `general.type = adapter`, `adapter.type = lora`,
//! `adapter.lora.alpha`, and per projection `blk.N.<name>.weight.lora_a` (rank x in) and
//! `.lora_b` (out x rank), B's rows in GGUF order (llama's q/k permutation applied).
use super::gguf::{self, TensorInfo};
use super::quant::TensorType;
use super::Written;
use crate::peft::lora::Lora;
use crate::{CausalLm, Result};
use candle_core::quantized::gguf_file::Value;
use candle_core::Tensor;
use std::path::Path;

/// Write `lora` (loaded onto `model`) as a GGUF LoRA in f32.
pub fn write_lora_gguf(model: &CausalLm, lora: &Lora, name: &str, out: &Path) -> Result<Written> {
    let c = &lora.config;
    // llama.cpp scales by alpha / rank; rsLoRA's alpha / sqrt(rank) is the same
    // scale with alpha = scale * rank.
    let alpha = (c.scale() * c.r as f64) as f32;
    let s = |v: &str| Value::String(v.to_string());
    let metadata = vec![
        ("general.architecture".to_string(), s(model.arch.name())),
        ("general.type".to_string(), s("adapter")),
        ("general.name".to_string(), s(name)),
        ("adapter.type".to_string(), s("lora")),
        ("adapter.lora.alpha".to_string(), Value::F32(alpha)),
        ("general.alignment".to_string(), Value::U32(gguf::ALIGNMENT as u32)),
    ];
    let (mut infos, mut tensors): (Vec<TensorInfo>, Vec<Tensor>) = (vec![], vec![]);
    for (_, l) in &lora.layers {
        // `b` is already in the model's (GGUF) row order.
        for (suffix, t) in [("lora_a", l.a.as_tensor()), ("lora_b", l.b.as_tensor())] {
            let t = t.detach().to_dtype(candle_core::DType::F32)?;
            infos.push(TensorInfo { name: format!("{}.{suffix}", l.gguf), dims: t.dims().to_vec(), ty: TensorType::F32 });
            tensors.push(t);
        }
    }
    gguf::write(out, &metadata, &infos, |i| super::quant::encode(&tensors[i], TensorType::F32))?;
    Ok(super::written(&infos, out))
}
