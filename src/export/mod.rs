//! Writing models for other runtimes: GGUF files llama.cpp and ollama load
//! (`gguf.rs` the writer, `quant.rs` + `kquants.rs` the tensor types and their bytes,
//! `meta.rs` the metadata, `lora_gguf.rs` a LoRA adapter as a GGUF LoRA, `ollama.rs` a
//! Modelfile).
pub mod gguf;
mod kquants;
pub mod lora_gguf;
pub mod meta;
pub mod ollama;
pub mod quant;

use crate::hub::ModelSource;
use crate::{CausalLm, Result, Tokenizer};
use gguf::TensorInfo;
use quant::{Quant, TensorType};
use std::path::Path;

/// What an export wrote: tensor count per type, for printing.
pub struct Written {
    pub tensors: usize,
    pub types: Vec<(TensorType, usize)>,
    pub bytes: u64,
}

impl Written {
    pub fn summary(&self) -> String {
        let types: Vec<String> = self.types.iter().map(|(t, n)| format!("{n}x{}", t.name())).collect();
        format!("{} tensors ({}), {:.1} MB", self.tensors, types.join(", "), self.bytes as f64 / 1e6)
    }
}

/// Write `model` (with any adapter already merged) as a GGUF file in `quant`'s types,
/// with the metadata of `source` (copied from a GGUF, built from config.json and
/// tokenizer.json for a Hugging Face directory).
pub fn write_model_gguf(model: &CausalLm, source: &ModelSource, tok: &Tokenizer, quant: Quant, out: &Path) -> Result<Written> {
    let tensors = model.named_tensors()?;
    let shapes: Vec<(String, Vec<usize>)> = tensors.iter().map(|(n, t)| (n.clone(), t.dims().to_vec())).collect();
    let types = quant::choose_types(quant, &shapes, model.config.num_layers);
    let infos: Vec<TensorInfo> = shapes.into_iter().zip(&types).map(|((name, dims), &ty)| TensorInfo { name, dims, ty }).collect();
    let metadata = meta::model_metadata(model, source, tok, quant)?;
    gguf::write(out, &metadata, &infos, |i| quant::encode(&tensors[i].1, types[i]))?;
    Ok(written(&infos, out))
}

fn written(infos: &[TensorInfo], out: &Path) -> Written {
    let mut types: Vec<(TensorType, usize)> = vec![];
    for t in infos {
        match types.iter_mut().find(|(ty, _)| *ty == t.ty) {
            Some((_, n)) => *n += 1,
            None => types.push((t.ty, 1)),
        }
    }
    Written { tensors: infos.len(), types, bytes: std::fs::metadata(out).map_or(0, |m| m.len()) }
}
