//! Model merging, compatible with mergekit 0.1.5's YAML and definitions: `config.rs`
//! (the YAML), `source.rs` (inputs: HF directories, GGUF files, LoRA adapters, task
//! vectors), `plan.rs` (which tensors, from where, with which parameters), `vocab.rs`
//! (aligning vocabularies), `methods/` (one file per method behind [`MergeMethod`], the
//! task-arithmetic family as one generalized method), `write.rs` (streaming HF output),
//! `gguf_out.rs` and `lora_out.rs` (GGUF and LoRA outputs), `task_vector.rs`.
//!
//! Tensors are merged one name at a time in f32, read from memory-mapped files and
//! written as they are done, so memory holds a few tensors whatever the model's size.
pub mod config;
pub mod gguf_out;
pub mod lora_out;
pub mod methods;
pub mod plan;
pub mod source;
pub mod task_vector;
pub mod vocab;
pub mod write;

pub use config::MergeConfig;
pub use methods::{MergeMethod, METHODS};

use crate::{Error, Result};
use methods::{Group, Values};
use plan::{Plan, Planned};
use source::{Data, LoraDelta, Model, StoredType};
use std::path::{Path, PathBuf};
use write::{HfWriter, OutType};

/// What `instill merge` was asked for beyond the YAML.
#[derive(Debug, Clone)]
pub struct Options {
    /// A directory (HF layout), or a `.gguf` file.
    pub out: PathBuf,
    /// GGUF tensor types (`--quant`), for a `.gguf` output.
    pub quant: Option<crate::export::quant::Quant>,
    /// Seed of DARE's and DELLA's random masks.
    pub seed: u64,
    /// `--method-variant paper`.
    pub paper: bool,
    /// Write a LoRA adapter of this rank (truncated SVD of the merged delta).
    pub lora_rank: Option<usize>,
    pub shard_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { out: PathBuf::from("merged"), quant: None, seed: 0, paper: false, lora_rank: None, shard_bytes: 5_000_000_000 }
    }
}

/// What a merge wrote.
pub struct Summary {
    pub method: &'static str,
    pub tensors: usize,
    pub bytes: u64,
    pub out: PathBuf,
}

/// An opened merge: the plan and what every tensor needs.
pub struct Merge {
    pub cfg: MergeConfig,
    pub method: &'static dyn MergeMethod,
    pub plan: Plan,
    pub perm: Option<vocab::Permutation>,
    /// The model whose tokenizer (and config.json) the output takes.
    pub tokenizer_model: usize,
    pub config_model: usize,
    /// `dtype`: inputs are rounded to it before merging.
    pub in_type: Option<OutType>,
    pub out_type: OutType,
    pub seed: u64,
    pub paper: bool,
}

fn open_model(cfg: &MergeConfig, r: &config::ModelRef) -> Result<Model> {
    let label = r.to_string();
    let base = Model::open(&r.model, &r.model, &cfg.dir)?;
    match &r.lora {
        None => Ok(Model { label, ..base }),
        Some(l) => {
            let local = cfg.dir.join(l);
            let dir = if !Path::new(l).is_absolute() && local.exists() { local } else { PathBuf::from(l) };
            Model::with_lora(&label, base, LoraDelta::open(&dir)?)
        }
    }
}

/// Check every parameter name against the method's.
fn check_parameters(cfg: &MergeConfig, method: &dyn MergeMethod) -> Result<()> {
    let known: Vec<&str> = method.params().iter().map(|p| p.name).collect();
    for (name, at) in cfg.parameter_names() {
        if !known.contains(&name.as_str()) {
            return Err(Error::Input(format!("{at}: unknown parameter {name:?} for {}; it takes: {}", method.name(), known.join(", "))));
        }
    }
    Ok(())
}

impl Merge {
    /// Read the inputs' indexes, lay out the merge and check it, before any tensor is read.
    pub fn open(cfg: MergeConfig, seed: u64, paper: bool) -> Result<Self> {
        let method = methods::by_name(&cfg.merge_method)?;
        if paper && !method.has_paper_variant() {
            return Err(Error::Input(format!("--method-variant paper: {} has no paper variant (it follows its paper already)", method.name())));
        }
        check_parameters(&cfg, method)?;
        let refs = cfg.referenced_models();
        let models = refs.iter().map(|r| open_model(&cfg, r)).collect::<Result<Vec<_>>>()?;
        let plan = plan::plan(&cfg, method, refs, models)?;
        let base = cfg.base_model.as_ref().map(|b| plan.model(b));
        if let Some(tv) = plan.models.iter().find(|m| m.is_task_vector()) {
            if base.is_none() || method.contract().base == methods::BasePolicy::Ignored {
                return Err(Error::Input(format!("{}: a task vector is a delta; the merge needs a base_model to add it to", tv.label)));
            }
        }
        let (perm, tokenizer_model) = vocab::align(&plan, cfg.tokenizer_source.as_ref(), base)?;
        let config_model = base.unwrap_or(0);
        let in_type = cfg.dtype.as_deref().map(OutType::from_name);
        let out_type = match cfg.out_dtype.as_deref().or(cfg.dtype.as_deref()) {
            Some(d) => OutType::from_name(d),
            None => stored_type(&plan),
        };
        Ok(Merge { cfg, method, plan, perm, tokenizer_model, config_model, in_type, out_type, seed, paper })
    }

    /// Output names and shapes, in writing order.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.plan
            .tensors
            .iter()
            .map(|t| {
                let mut s = t.shape.clone();
                if let (true, Some(p)) = (t.vocab, &self.perm) {
                    s[0] = p.out_tokens;
                }
                (t.name.clone(), s)
            })
            .collect()
    }

    fn load(&self, input: &plan::TensorInput) -> Result<Data> {
        let m = &self.plan.models[input.model];
        let mut d = m.load(&input.name)?.ok_or_else(|| Error::Input(format!("{}: tensor {:?} is missing", m.label, input.name)))?;
        if let Some(ty) = self.in_type {
            match &mut d {
                Data::Full(v) | Data::Delta(v) => ty.round(v),
            }
        }
        Ok(d)
    }

    /// Merge output tensor `i`.
    pub fn tensor(&self, i: usize) -> Result<Vec<f32>> {
        let t = &self.plan.tensors[i];
        let base = match t.base.as_ref().map(|b| self.load(b)).transpose()? {
            Some(Data::Delta(_)) => return Err(Error::Input(format!("{}: a task vector cannot be the base_model", self.plan.models[t.base.as_ref().expect("some").model].label))),
            Some(Data::Full(v)) => Some(v),
            None => None,
        };
        let mut inputs = vec![];
        for input in &t.inputs {
            inputs.push(match self.load(input)? {
                Data::Full(v) => Values::Full(v),
                Data::Delta(d) => match &base {
                    Some(_) => Values::Delta(d),
                    None => return Err(Error::Input(format!("{}: a task vector needs the merge's base_model for {}", self.plan.models[input.model].label, t.name))),
                },
            });
        }
        let (base, inputs, shape) = self.align_vocab(t, base, inputs)?;
        let g = Group { name: t.name.clone(), shape, base, inputs, params: t.params.clone(), seed: self.seed ^ fnv(&t.name), paper: self.paper };
        let mut out = self.method.merge(g)?;
        self.out_type.round(&mut out);
        Ok(out)
    }

    /// Move vocabulary rows to the output tokenizer's ids (task vectors added to the base first).
    #[allow(clippy::type_complexity)]
    fn align_vocab(&self, t: &Planned, base: Option<Vec<f32>>, inputs: Vec<Values>) -> Result<(Option<Vec<f32>>, Vec<Values>, Vec<usize>)> {
        let (Some(p), true) = (&self.perm, t.vocab) else { return Ok((base, inputs, t.shape.clone())) };
        let cols = t.shape[1..].iter().product::<usize>();
        let mut models: Vec<usize> = t.base.iter().map(|b| b.model).collect();
        models.extend(t.inputs.iter().map(|i| i.model));
        let mut all: Vec<Vec<f32>> = base.iter().cloned().collect();
        for v in inputs {
            all.push(match v {
                Values::Full(x) => x,
                Values::Delta(d) => d.iter().zip(base.as_ref().expect("checked")).map(|(a, b)| a + b).collect(),
            });
        }
        let mut moved = p.apply(&models, all, cols).into_iter();
        let base = base.map(|_| moved.next().expect("base row"));
        let mut shape = t.shape.clone();
        shape[0] = p.out_tokens;
        Ok((base, moved.map(Values::Full).collect(), shape))
    }

    /// config.json of the output: the config model's, with the layer count, vocabulary
    /// size and dtype of the merge.
    pub fn out_config(&self) -> serde_json::Value {
        let mut c = self.plan.models[self.config_model].config.clone();
        if let Some(o) = c.as_object_mut() {
            o.remove(source::TASK_VECTOR_KEY);
        }
        let text = if c.get("text_config").is_some() { &mut c["text_config"] } else { &mut c };
        text["num_hidden_layers"] = self.plan.num_layers.into();
        if let Some(p) = &self.perm {
            text["vocab_size"] = p.out_tokens.into();
        }
        if !self.plan.tensors.iter().any(|t| t.name == "lm_head.weight") {
            text["tie_word_embeddings"] = true.into();
        }
        c["torch_dtype"] = self.out_type.torch_name().into();
        c
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Without `dtype`/`out_dtype`: bfloat16 or float16 when every input's embedding is
/// stored so, else float32 (mergekit promotes per tensor the same way).
fn stored_type(plan: &Plan) -> OutType {
    let types: Vec<Option<StoredType>> = plan.models.iter().map(|m| m.stored("model.embed_tokens.weight")).collect();
    if types.iter().all(|t| *t == Some(StoredType::Bf16)) {
        OutType::Bf16
    } else if types.iter().all(|t| *t == Some(StoredType::F16)) {
        OutType::F16
    } else {
        OutType::F32
    }
}

/// Files copied from a HF directory's tokenizer (mergekit's `_copy_tokenizer` list).
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "added_tokens.json",
    "merges.txt",
    "vocab.json",
    "chat_template.jinja",
    "generation_config.json",
    "chat_template.json",
];

/// A model's tokenizer files: those its directory has, or built from a GGUF's metadata.
pub fn model_tokenizer_files(model: &Model) -> Result<Vec<(String, Vec<u8>)>> {
    Ok(match &model.source {
        crate::hub::ModelSource::HfDir(d) => TOKENIZER_FILES.iter().filter_map(|f| std::fs::read(d.join(f)).ok().map(|b| (f.to_string(), b))).collect(),
        crate::hub::ModelSource::Gguf(_) => model.tokenizer()?.hf_files().into_iter().map(|(n, b)| (n.to_string(), b)).collect(),
    })
}

/// The chat template `chat_template:` asks for (mergekit's `_set_chat_template`).
fn chat_template(m: &Merge) -> Result<Option<String>> {
    let Some(t) = m.cfg.chat_template.as_deref() else { return Ok(None) };
    if t == "auto" {
        let mut counts: Vec<(String, usize)> = vec![];
        for model in &m.plan.models {
            if let Some(s) = model.tokenizer().ok().and_then(|t| t.chat_template) {
                match counts.iter_mut().find(|(x, _)| *x == s.trim()) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((s.trim().to_string(), 1)),
                }
            }
        }
        return Ok(counts.into_iter().max_by_key(|(_, n)| *n).map(|(s, _)| s));
    }
    if ["chatml", "llama3", "alpaca"].contains(&t) {
        return Ok(Some(crate::tokenizer::template::named(t)?));
    }
    if t.len() < 20 || !t.contains('{') {
        return Err(Error::Input(format!("chat_template {t:?}: expected auto, chatml, llama3, alpaca or a Jinja template")));
    }
    Ok(Some(t.to_string()))
}

/// Tokenizer files of the output: copied from the tokenizer model's directory, or built
/// from a GGUF's metadata; `chat_template` replaces the template.
pub fn tokenizer_files(m: &Merge) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = model_tokenizer_files(&m.plan.models[m.tokenizer_model])?;
    if let Some(t) = chat_template(m)? {
        files.retain(|(n, _)| n != "chat_template.jinja" && n != "chat_template.json");
        let i = files.iter().position(|(n, _)| n == "tokenizer_config.json");
        let mut cfg: serde_json::Value = i.and_then(|i| serde_json::from_slice(&files[i].1).ok()).unwrap_or_else(|| serde_json::json!({}));
        cfg["chat_template"] = t.into();
        let bytes = serde_json::to_vec_pretty(&cfg).expect("json");
        match i {
            Some(i) => files[i].1 = bytes,
            None => files.push(("tokenizer_config.json".into(), bytes)),
        }
    }
    Ok(files)
}

fn readme(m: &Merge) -> String {
    let models: Vec<String> = m.plan.models.iter().map(|x| format!("- {}", x.label)).collect();
    format!(
        "---\nlibrary_name: transformers\ntags:\n- merge\n- instill\n---\n# merged\n\nMerged with `instill merge` using the {} method (mergekit 0.1.5 definitions).\n\n## Models\n\n{}\n\n## Configuration\n\n```yaml\n{}\n```\n",
        m.method.name(),
        models.join("\n"),
        m.cfg.text.trim_end()
    )
}

/// Run a merge to a HF directory, a GGUF file (`out` ends in `.gguf`) or a LoRA adapter
/// (`lora_rank`); `progress(done, total, name)` is called after each tensor.
pub fn run(cfg: MergeConfig, opts: &Options, progress: &mut dyn FnMut(usize, usize, &str)) -> Result<Summary> {
    let m = Merge::open(cfg, opts.seed, opts.paper)?;
    if let Some(r) = opts.lora_rank {
        return lora_out::write(&m, r, &opts.out, progress);
    }
    if opts.out.extension().is_some_and(|e| e == "gguf") {
        return gguf_out::write(&m, opts.quant.unwrap_or(crate::export::quant::Quant::F16), &opts.out, progress);
    }
    if opts.quant.is_some() {
        return Err(Error::Input("--quant sets GGUF tensor types: give --out a .gguf file".into()));
    }
    write_hf(&m, &opts.out, opts.shard_bytes, progress)
}

fn write_hf(m: &Merge, out: &Path, shard_bytes: usize, progress: &mut dyn FnMut(usize, usize, &str)) -> Result<Summary> {
    let shapes = m.shapes();
    let mut w = HfWriter::new(out, &shapes, m.out_type, shard_bytes)?;
    let n = shapes.len();
    for (i, (name, _)) in shapes.iter().enumerate() {
        let r = m.tensor(i).and_then(|t| w.write(i, &t));
        if let Err(e) = r {
            w.abandon();
            return Err(e);
        }
        progress(i + 1, n, name);
    }
    let mut files = vec![("config.json".to_string(), serde_json::to_vec_pretty(&m.out_config()).expect("json"))];
    files.extend(tokenizer_files(m)?);
    files.push(("mergekit_config.yml".into(), m.cfg.text.clone().into_bytes()));
    files.push(("README.md".into(), readme(m).into_bytes()));
    let bytes = w.finish(&files)?;
    Ok(Summary { method: m.method.name(), tensors: n, bytes, out: out.to_path_buf() })
}
