//! GGUF metadata for an exported model. From a GGUF source every key is copied (its
//! hyper-parameters and tokenizer are what llama.cpp already reads); from a Hugging Face
//! directory the keys are built from config.json and tokenizer.json the way llama.cpp's
//! `convert_hf_to_gguf.py` writes them for llama, qwen2 and gemma3.
use super::quant::Quant;
use crate::hub::ModelSource;
use crate::model::config::ModelConfig;
use crate::model::gguf::Metadata;
use crate::{CausalLm, Error, Result, Tokenizer};
use candle_core::quantized::gguf_file::Value;
use serde_json::Value as Json;

/// Keys a writer sets itself (or that describe the source file's layout, not the model).
const OWN_KEYS: &[&str] = &["general.file_type", "general.quantization_version", "general.alignment", "split.no", "split.count", "split.tensors.count"];

// GGUF token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

/// Sorted by key with `general.architecture` first, then the writer's own keys.
pub fn finish(mut kv: Vec<(String, Value)>, quant: Quant) -> Vec<(String, Value)> {
    kv.retain(|(k, _)| !OWN_KEYS.contains(&k.as_str()));
    kv.sort_by(|a, b| (a.0 != "general.architecture", &a.0).cmp(&(b.0 != "general.architecture", &b.0)));
    kv.push(("general.quantization_version".into(), Value::U32(2)));
    kv.push(("general.file_type".into(), Value::U32(quant.file_type())));
    kv.push(("general.alignment".into(), Value::U32(super::gguf::ALIGNMENT as u32)));
    kv
}

pub fn model_metadata(model: &CausalLm, source: &ModelSource, tok: &Tokenizer, quant: Quant) -> Result<Vec<(String, Value)>> {
    match source {
        ModelSource::Gguf(p) => {
            let md = Metadata::read(p)?;
            let mut kv: Vec<(String, Value)> = md.content.metadata.into_iter().collect();
            // The model's own shape wins over the source's (a pruned model is narrower).
            let arch = model.arch.name();
            for (k, v) in hyper_parameters(arch, &model.config, "") {
                if k.starts_with(&format!("{arch}.")) {
                    kv.retain(|(x, _)| *x != k);
                    kv.push((k, v));
                }
            }
            Ok(finish(kv, quant))
        }
        ModelSource::HfDir(d) => {
            let name = d.file_name().map_or("model".into(), |n| n.to_string_lossy().to_string());
            let mut kv = hyper_parameters(model.arch.name(), &model.config, &name);
            kv.extend(tokenizer_keys(tok).map_err(|e| Error::file(d.join("tokenizer.json"), e))?);
            Ok(finish(kv, quant))
        }
    }
}

/// The `general.*` and `<arch>.*` keys of `convert_hf_to_gguf.py`.
pub fn hyper_parameters(arch: &str, c: &ModelConfig, name: &str) -> Vec<(String, Value)> {
    let k = |key: &str| format!("{arch}.{key}");
    let u = |v: usize| Value::U32(v as u32);
    let mut kv = vec![
        ("general.architecture".into(), s(arch)),
        ("general.type".into(), s("model")),
        ("general.name".into(), s(name)),
        (k("context_length"), u(c.max_position)),
        (k("embedding_length"), u(c.hidden_size)),
        (k("block_count"), u(c.num_layers)),
        (k("feed_forward_length"), u(c.intermediate_size)),
        (k("attention.head_count"), u(c.num_heads)),
        (k("attention.head_count_kv"), u(c.num_kv_heads)),
        (k("attention.layer_norm_rms_epsilon"), Value::F32(c.rms_eps as f32)),
        (k("rope.freq_base"), Value::F32(c.rope_theta as f32)),
    ];
    if arch == "llama" {
        kv.push((k("vocab_size"), u(c.vocab_size)));
        kv.push((k("rope.dimension_count"), u(c.head_dim)));
    }
    if arch == "gemma3" || c.head_dim * c.num_heads != c.hidden_size {
        kv.push((k("attention.key_length"), u(c.head_dim)));
        kv.push((k("attention.value_length"), u(c.head_dim)));
    }
    if let Some(w) = c.sliding_window {
        kv.push((k("attention.sliding_window"), u(w)));
    }
    kv
}

/// The `pre` name llama.cpp knows a byte-level BPE pre-tokenizer by (the inverse of
/// `tokenizer::gguf::byte_level_bpe`).
fn pre_name(pre: &Json) -> std::result::Result<&'static str, String> {
    let text = pre.to_string();
    if text.contains("\"Digits\"") && text.contains("\"individual_digits\":true") {
        Ok("smollm")
    } else if text.contains(r"\\p{N}{1,3}") {
        Ok("llama-bpe")
    } else if text.contains(r"|\\p{N}|") {
        Ok("qwen2")
    } else if pre.get("type").and_then(|t| t.as_str()) == Some("ByteLevel") {
        Ok("gpt2")
    } else {
        Err(format!("pre_tokenizer {} is not one llama.cpp names (smollm, qwen2, llama-bpe, gpt2)", text.chars().take(120).collect::<String>()))
    }
}

/// `tokenizer.*` keys from a byte-level BPE tokenizer.json.
pub fn tokenizer_keys(tok: &Tokenizer) -> std::result::Result<Vec<(String, Value)>, String> {
    let model = &tok.json["model"];
    if model["type"] != "BPE" || model["byte_fallback"] == true {
        return Err("only byte-level BPE tokenizers (gpt2-style) convert to GGUF from tokenizer.json; SentencePiece models (gemma, llama 2) need their GGUF or tokenizer.model".into());
    }
    let vocab = model["vocab"].as_object().ok_or("model.vocab is not an object")?;
    let n = tok.vocab_size().max(vocab.len());
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![NORMAL; n];
    for (t, id) in vocab {
        let id = id.as_u64().ok_or("model.vocab has a non-integer id")? as usize;
        tokens[id] = Some(t.clone());
    }
    for a in tok.json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) else { continue };
        tokens[id as usize] = Some(content.to_string());
        types[id as usize] = if a["special"] == true { CONTROL } else { USER_DEFINED };
    }
    let tokens: Vec<Value> = tokens.into_iter().enumerate().map(|(i, t)| Value::String(t.unwrap_or_else(|| format!("[PAD{i}]")))).collect();
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .ok_or("model.merges is missing")?
        .iter()
        .map(|m| match m {
            Json::Array(p) => Value::String(p.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" ")),
            other => Value::String(other.as_str().unwrap_or_default().to_string()),
        })
        .collect();
    let mut kv = vec![
        ("tokenizer.ggml.model".into(), s("gpt2")),
        ("tokenizer.ggml.pre".into(), s(pre_name(&tok.json["pre_tokenizer"])?)),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types.into_iter().map(Value::I32).collect())),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(tok.add_bos)),
        ("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)),
    ];
    for (key, id) in [("bos", tok.bos_id), ("eos", tok.eos_id)] {
        if let Some(id) = id {
            kv.push((format!("tokenizer.ggml.{key}_token_id"), Value::U32(id)));
        }
    }
    if let Some(t) = &tok.chat_template {
        kv.push(("tokenizer.chat_template".into(), s(t)));
    }
    Ok(kv)
}
