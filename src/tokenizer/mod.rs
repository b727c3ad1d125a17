//! Tokenizers from tokenizer.json or GGUF metadata, and chat templates.
mod bpe;
pub mod extend;
mod gguf;
mod pretok;
pub mod template;

pub use template::ChatTemplate;

use crate::hub::ModelSource;
use crate::model::gguf::Metadata;
use crate::{Error, Result};
use std::path::Path;

/// End-of-turn markers that stop generation when present in the vocabulary.
const TURN_ENDS: &[&str] = &["<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>", "</s>", "<eos>"];

/// Split patterns the fast encoder's scanners reproduce.
const SPLIT_PATTERNS: [(&str, pretok::Pattern); 2] = [(gguf::QWEN2_PATTERN, pretok::Pattern::Qwen2 { max_digits: 1 }), (gguf::LLAMA3_PATTERN, pretok::Pattern::Qwen2 { max_digits: 3 })];

/// A byte range `[start, end)` of a text.
pub type Span = (usize, usize);

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    /// Prepend BOS when encoding a whole prompt.
    pub add_bos: bool,
    /// Ids that end a generation.
    pub stop_ids: Vec<u32>,
    /// The model's own chat template, if it has one.
    pub chat_template: Option<String>,
    /// The tokenizer.json document (for writing HF directories).
    pub json: serde_json::Value,
    /// Our own encoder, when the tokenizer has a shape it reproduces exactly (else why not).
    fast: std::result::Result<bpe::FastBpe, String>,
}

impl Tokenizer {
    pub fn load(source: &ModelSource) -> Result<Self> {
        match source {
            ModelSource::Gguf(p) => Self::from_gguf(&Metadata::read(p)?),
            ModelSource::HfDir(d) => Self::from_hf_dir(d),
        }
    }

    pub fn from_gguf(md: &Metadata) -> Result<Self> {
        let json = gguf::tokenizer_json(md)?;
        let inner = parse(&json, &md.path)?;
        let id = |k: &str| md.opt_usize(k).map(|v| v as u32);
        let (bos_id, eos_id) = (id("tokenizer.ggml.bos_token_id"), id("tokenizer.ggml.eos_token_id"));
        let spm = md.opt_str("tokenizer.ggml.model") == Some("llama");
        let add_bos = md.opt_bool("tokenizer.ggml.add_bos_token").unwrap_or(spm);
        let chat_template = md.opt_str("tokenizer.chat_template").map(str::to_string);
        Ok(Self::assemble(inner, json, bos_id, eos_id, add_bos, chat_template))
    }

    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e.to_string()))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("invalid JSON: {e}")))?;
        let inner = parse(&json, &path)?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = std::fs::read_to_string(&cfg_path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        let token_of = |k: &str| -> Option<u32> {
            let v = cfg.get(k)?;
            let s = v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str()))?;
            inner.token_to_id(s)
        };
        let (bos_id, eos_id) = (token_of("bos_token"), token_of("eos_token"));
        let add_bos = cfg.get("add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false);
        let chat_template = cfg.get("chat_template").and_then(|v| v.as_str()).map(str::to_string);
        Ok(Self::assemble(inner, json, bos_id, eos_id, add_bos, chat_template))
    }

    fn assemble(inner: tokenizers::Tokenizer, json: serde_json::Value, bos_id: Option<u32>, eos_id: Option<u32>, add_bos: bool, chat_template: Option<String>) -> Self {
        let mut stop_ids: Vec<u32> = eos_id.into_iter().collect();
        stop_ids.extend(TURN_ENDS.iter().filter_map(|t| inner.token_to_id(t)));
        stop_ids.dedup();
        let fast = match std::env::var_os("INSTILL_HF_ENCODER") {
            Some(_) => Err("INSTILL_HF_ENCODER is set".to_string()),
            None => bpe::FastBpe::from_json(&json, &SPLIT_PATTERNS),
        };
        Tokenizer { inner, bos_id, eos_id, add_bos, stop_ids, chat_template, json, fast }
    }

    /// Token ids of `text`; special-token strings in the text become their ids.
    /// `add_bos` prepends BOS when the model wants one (whole prompts, not fragments).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let (body, _) = self.encode_with_offsets(text)?;
        let mut ids = Vec::with_capacity(body.len() + 1);
        if add_bos && self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend_from_slice(&body);
        Ok(ids)
    }

    /// Ids of text a chat template rendered, with byte ranges. BOS is prepended (range
    /// `0..0`) when the model wants one and the template did not write it, as tokenizing
    /// the text with special tokens would; a template that writes it gets no second one.
    pub fn encode_rendered_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<Span>)> {
        let (mut ids, mut offsets) = self.encode_with_offsets(text)?;
        if let (true, Some(bos)) = (self.add_bos, self.bos_id) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
                offsets.insert(0, (0, 0));
            }
        }
        Ok((ids, offsets))
    }

    /// Ids of `messages` rendered by a chat template (`None`: the model's own) with the
    /// generation prompt, ready to continue.
    pub fn encode_chat(&self, template: Option<&str>, messages: &[serde_json::Value]) -> Result<Vec<u32>> {
        let text = self.template(template)?.render(messages, true, None)?;
        self.encode_rendered(&text)
    }

    /// [`Self::encode_rendered_with_offsets`] without the offsets.
    pub fn encode_rendered(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_rendered_with_offsets(text)?.0)
    }

    /// Ids of `text` (no BOS added) with each token's byte range in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<Span>)> {
        if let Some(out) = self.fast.as_ref().ok().and_then(|f| f.encode(text)) {
            return Ok(out);
        }
        self.encode_reference(text)
    }

    /// `encode_with_offsets` through Hugging Face `tokenizers` alone (the reference the
    /// fast encoder is tested against).
    pub fn encode_reference(&self, text: &str) -> Result<(Vec<u32>, Vec<Span>)> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// The byte ranges of `text`'s pre-tokens (the words BPE runs within).
    pub fn pieces(&self, text: &str) -> Result<Vec<Span>> {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let mut pts = PreTokenizedString::from(text);
        if let Some(p) = self.inner.get_pre_tokenizer() {
            p.pre_tokenize(&mut pts).map_err(|e| Error::Tokenizer(e.to_string()))?;
        }
        Ok(pts.get_splits(OffsetReferential::Original, OffsetType::Byte).into_iter().map(|(_, o, _)| o).collect())
    }

    /// This tokenizer with another `tokenizer.json` (an extended vocabulary), keeping its
    /// special tokens and chat template.
    pub fn with_json(&self, json: serde_json::Value) -> Result<Self> {
        let inner = parse(&json, Path::new("tokenizer.json"))?;
        Ok(Self::assemble(inner, json, self.bos_id, self.eos_id, self.add_bos, self.chat_template.clone()))
    }

    /// Whether encoding uses instill's own byte-level BPE encoder.
    pub fn has_fast_encoder(&self) -> bool {
        self.fast.is_ok()
    }

    /// Which encoder runs: instill's own, or `tokenizers` and why.
    pub fn encoder_name(&self) -> String {
        match &self.fast {
            Ok(_) => "instill byte-level BPE".into(),
            Err(why) => format!("tokenizers ({why} not reproduced by instill's encoder)"),
        }
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        self.inner.token_to_id(t)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_string(&self, id: Option<u32>) -> String {
        id.and_then(|i| self.id_to_token(i)).unwrap_or_default()
    }

    /// `tokenizer.json` and `tokenizer_config.json` for a Hugging Face model directory.
    pub fn hf_files(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut cfg = serde_json::json!({
            "bos_token": self.token_string(self.bos_id),
            "eos_token": self.token_string(self.eos_id),
            "add_bos_token": self.add_bos,
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        if let Some(t) = &self.chat_template {
            cfg["chat_template"] = t.clone().into();
        }
        vec![("tokenizer.json", serde_json::to_vec(&self.json).expect("json")), ("tokenizer_config.json", serde_json::to_vec_pretty(&cfg).expect("json"))]
    }

    /// The chat template to use: the named one (builtin or file) or the model's own.
    pub fn template(&self, name: Option<&str>) -> Result<ChatTemplate> {
        let source = match name {
            Some(n) => template::named(n)?,
            None => self.chat_template.clone().ok_or_else(|| {
                Error::Template("this model has no chat template (it is probably a base model): pass --template chatml|llama3|gemma|alpaca|FILE, or use --prompt for plain text".into())
            })?,
        };
        ChatTemplate::new(&source, self.token_string(self.bos_id), self.token_string(self.eos_id))
    }
}

fn parse(json: &serde_json::Value, path: &Path) -> Result<tokenizers::Tokenizer> {
    let bytes = serde_json::to_vec(json).expect("json");
    tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::file(path, format!("cannot build tokenizer: {e}")))
}
