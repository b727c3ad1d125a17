//! A merge written as one GGUF file (`--out FILE.gguf`, `--quant`): each merged tensor
//! is renamed to GGUF, put in GGUF's layout (llama's q/k rows permuted, Gemma's norms
//! `1 + w`) and encoded as `instill export` does (`export::quant`), one at a time.
//! Metadata: a GGUF config model's keys are copied (its layer count and vocabulary size
//! updated); otherwise they are built from config.json and tokenizer.json.
use super::{Merge, Summary};
use crate::export::{gguf, meta, quant};
use crate::model::arch;
use crate::{Error, Result};
use candle_core::quantized::gguf_file::Value;
use candle_core::{Device, Tensor};
use std::path::Path;

fn metadata(m: &Merge, arch_name: &str, cfg: &crate::model::config::ModelConfig, q: quant::Quant) -> Result<Vec<(String, Value)>> {
    let name = "merged";
    let mut kv = match &m.plan.models[m.config_model].source {
        crate::hub::ModelSource::Gguf(p) => {
            let md = crate::model::gguf::Metadata::read(p)?;
            let mut kv: Vec<(String, Value)> = md.content.metadata.into_iter().filter(|(k, _)| !k.starts_with("tokenizer.")).collect();
            for (k, v) in meta::hyper_parameters(arch_name, cfg, name) {
                if k.ends_with(".block_count") || k.ends_with(".vocab_size") {
                    kv.retain(|(x, _)| *x != k);
                    kv.push((k, v));
                }
            }
            kv
        }
        crate::hub::ModelSource::HfDir(_) => meta::hyper_parameters(arch_name, cfg, name),
    };
    let tok_model = &m.plan.models[m.tokenizer_model];
    match &tok_model.source {
        crate::hub::ModelSource::Gguf(p) => kv.extend(crate::model::gguf::Metadata::read(p)?.content.metadata.into_iter().filter(|(k, _)| k.starts_with("tokenizer."))),
        crate::hub::ModelSource::HfDir(d) => kv.extend(meta::tokenizer_keys(&tok_model.tokenizer()?).map_err(|e| Error::file(d.join("tokenizer.json"), e))?),
    }
    if let Some(t) = super::chat_template(m)? {
        kv.retain(|(k, _)| k != "tokenizer.chat_template");
        kv.push(("tokenizer.chat_template".into(), Value::String(t)));
    }
    Ok(meta::finish(kv, q))
}

pub fn write(m: &Merge, q: quant::Quant, out: &Path, progress: &mut dyn FnMut(usize, usize, &str)) -> Result<Summary> {
    let config = m.out_config();
    let text = config.get("text_config").unwrap_or(&config);
    let model_type = text["model_type"].as_str().or(config["model_type"].as_str()).ok_or_else(|| Error::Input("config.json has no model_type".into()))?;
    let a = arch::by_hf_model_type(model_type)?;
    let cfg = a.config_from_hf(&config)?;
    let shapes = m.shapes();
    let mut names = vec![];
    for (h, dims) in &shapes {
        let g = arch::hf_to_gguf(a, h).ok_or_else(|| Error::Unsupported(format!("tensor {h:?} has no GGUF name for {}", a.name())))?;
        names.push((g, dims.clone()));
    }
    let types = quant::choose_types(q, &names, cfg.num_layers);
    let infos: Vec<gguf::TensorInfo> = names.iter().zip(&types).map(|((name, dims), &ty)| gguf::TensorInfo { name: name.clone(), dims: dims.clone(), ty }).collect();
    let md = metadata(m, a.name(), &cfg, q)?;
    let n = infos.len();
    gguf::write(out, &md, &infos, |i| {
        let t = Tensor::from_vec(m.tensor(i)?, infos[i].dims.as_slice(), &Device::Cpu)?;
        let t = a.convert(&infos[i].name, t, &cfg, false)?;
        let bytes = quant::encode(&t, types[i])?;
        progress(i + 1, n, &shapes[i].0);
        Ok(bytes)
    })?;
    let bytes = std::fs::metadata(out).map_or(0, |x| x.len());
    Ok(Summary { method: m.method.name(), tensors: n, bytes, out: out.to_path_buf() })
}
