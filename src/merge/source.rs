//! The models a merge reads, each tensor read on demand by its Hugging Face name:
//! safetensors directories (sharded or not; the header memory-mapped and parsed, each
//! tensor then read with one positioned read: pages of a mapping would count towards
//! the process's resident set, the page cache does not), GGUF files (one tensor read
//! and dequantized to f32 at a time, renamed and un-permuted into HF layout by the
//! architecture's rules), LoRA adapters over a base (`base+lora` or a bare PEFT
//! directory: the base's tensor plus `scale * B A`), and task-vector directories (the
//! stored tensor *is* the delta over the merge's base).
use crate::hub::ModelSource;
use crate::model::arch::{self, Architecture};
use crate::model::config::ModelConfig;
use crate::model::gguf::Metadata;
use crate::{Error, Result, Tokenizer};
use candle_core::Device;
use memmap2::Mmap;
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The config.json key that marks a task-vector directory (see `task_vector.rs`).
pub const TASK_VECTOR_KEY: &str = "instill_task_vector";

/// A tensor's values: the model's own, or a delta to add to the merge's base.
pub enum Data {
    Full(Vec<f32>),
    Delta(Vec<f32>),
}

/// The storage type of a tensor, for the default output dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredType {
    F32,
    F16,
    Bf16,
    F64,
    /// GGUF blocks (dequantized to f32).
    Quant,
}

struct Shard {
    file: std::fs::File,
    path: PathBuf,
    header: usize,
}

/// The raw bytes of the last tensor read, reused (no fresh pages per tensor).
static SCRATCH: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct StEntry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    range: (usize, usize),
}

/// Memory-mapped safetensors files of a directory.
pub struct Safetensors {
    pub dir: PathBuf,
    shards: Vec<Shard>,
    index: BTreeMap<String, StEntry>,
}

impl Safetensors {
    pub fn open(dir: &Path) -> Result<Self> {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(dir).map_err(|e| Error::file(dir, e.to_string()))?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "safetensors")).collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::file(dir, "no *.safetensors files: is this a Hugging Face model directory?"));
        }
        let mut shards = vec![];
        let mut index = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            let file = std::fs::File::open(f).map_err(|e| Error::file(f, e.to_string()))?;
            let bad = |m: String| Error::file(f, format!("not a safetensors file: {m}"));
            // Only the header is mapped (to parse it); tensors are read with positioned reads.
            // SAFETY: the file is opened read-only; a concurrent writer would be a user error, as with any mmap reader.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::file(f, e.to_string()))?;
            let (n, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| bad(e.to_string()))?;
            for (name, info) in meta.tensors() {
                index.insert(name, StEntry { shard: i, dtype: info.dtype, shape: info.shape.clone(), range: info.data_offsets });
            }
            drop(map);
            shards.push(Shard { file, path: f.clone(), header: 8 + n });
        }
        Ok(Safetensors { dir: dir.to_path_buf(), shards, index })
    }

    pub fn names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.index.get(name).map(|e| e.shape.clone())
    }

    pub fn stored(&self, name: &str) -> Option<StoredType> {
        self.index.get(name).map(|e| match e.dtype {
            Dtype::F16 => StoredType::F16,
            Dtype::BF16 => StoredType::Bf16,
            Dtype::F64 => StoredType::F64,
            _ => StoredType::F32,
        })
    }

    /// The tensor as f32 (F32, F16, BF16, F64 stored).
    pub fn load(&self, name: &str) -> Result<Option<Vec<f32>>> {
        let Some(e) = self.index.get(name) else { return Ok(None) };
        let s = &self.shards[e.shard];
        let n = e.range.1 - e.range.0;
        let mut scratch = SCRATCH.lock().expect("scratch");
        if scratch.len() < n {
            scratch.resize(n, 0);
        }
        let bytes = &mut scratch[..n];
        std::os::unix::fs::FileExt::read_exact_at(&s.file, bytes, (s.header + e.range.0) as u64).map_err(|x| Error::file(&s.path, format!("reading tensor {name:?}: {x}")))?;
        use rayon::prelude::*;
        let v: Vec<f32> = match e.dtype {
            Dtype::F32 => bytes.par_chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => bytes.par_chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.par_chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::F64 => bytes.par_chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
            other => return Err(Error::file(&self.dir, format!("tensor {name:?} has type {other:?}; merging reads F32, F16, BF16 and F64"))),
        };
        Ok(Some(v))
    }
}

/// A GGUF file read one tensor at a time, under HF names.
pub struct GgufModel {
    md: Metadata,
    pub arch: &'static dyn Architecture,
    pub cfg: ModelConfig,
    /// HF name -> GGUF name.
    names: BTreeMap<String, String>,
}

impl GgufModel {
    fn open(path: &Path) -> Result<Self> {
        let md = Metadata::read(path)?;
        let arch = arch::by_name(md.arch()?)?;
        let cfg = arch.config_from_gguf(&md)?;
        let mut names = BTreeMap::new();
        for g in md.content.tensor_infos.keys() {
            let h = arch::gguf_to_hf(arch, g).ok_or_else(|| Error::file(path, format!("tensor {g:?} has no Hugging Face name for {}", arch.name())))?;
            names.insert(h, g.clone());
        }
        Ok(GgufModel { md, arch, cfg, names })
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let g = self.names.get(name)?;
        Some(self.md.content.tensor_infos[g].shape.dims().to_vec())
    }

    fn load(&self, name: &str) -> Result<Option<Vec<f32>>> {
        let Some(g) = self.names.get(name) else { return Ok(None) };
        let mut f = std::fs::File::open(&self.md.path).map_err(|e| Error::file(&self.md.path, e.to_string()))?;
        let q = self.md.content.tensor(&mut f, g, &Device::Cpu).map_err(|e| Error::file(&self.md.path, format!("tensor {g:?}: {}", crate::error::first_line(&e))))?;
        let t = self.arch.convert(g, q.dequantize(&Device::Cpu)?, &self.cfg, true)?;
        Ok(Some(t.flatten_all()?.to_vec1()?))
    }
}

/// A PEFT LoRA adapter: per HF module, `A` [r, in], `B` [out, r] and the scale.
pub struct LoraDelta {
    pub dir: PathBuf,
    pub scale: f64,
    pub rank: usize,
    pub modules: BTreeMap<String, (Vec<f32>, Vec<f32>, usize, usize)>,
    /// The adapter's `base_model_name_or_path`.
    pub base_name: Option<String>,
}

impl LoraDelta {
    pub fn open(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::file(&cfg_path, e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&cfg_path, format!("invalid JSON: {e}")))?;
        if v["peft_type"] != "LORA" {
            return Err(Error::file(&cfg_path, format!("peft_type {}: only LORA adapters merge", v["peft_type"])));
        }
        let r = v["r"].as_u64().ok_or_else(|| Error::file(&cfg_path, "\"r\" is missing"))? as f64;
        let alpha = v["lora_alpha"].as_f64().unwrap_or(8.0);
        let scale = if v["use_rslora"].as_bool().unwrap_or(false) { alpha / r.sqrt() } else { alpha / r };
        let st = Safetensors::open(dir)?;
        let mut modules = BTreeMap::new();
        for name in st.names() {
            let Some(module) = name.strip_suffix(".lora_A.weight") else { continue };
            let b_name = format!("{module}.lora_B.weight");
            let (a, b) = (st.load(&name)?.expect("listed"), st.load(&b_name)?.ok_or_else(|| Error::file(dir, format!("{b_name} is missing")))?);
            let (sa, sb) = (st.shape(&name).expect("listed"), st.shape(&b_name).expect("listed"));
            if sa.len() != 2 || sb.len() != 2 || sa[0] != sb[1] {
                return Err(Error::file(dir, format!("{module}: lora_A {sa:?} and lora_B {sb:?} do not multiply")));
            }
            let module = module.strip_prefix("base_model.model.").unwrap_or(module).to_string();
            modules.insert(format!("{module}.weight"), (a, b, sb[0], sa[1]));
        }
        if modules.is_empty() {
            return Err(Error::file(dir, "no lora_A/lora_B tensors"));
        }
        Ok(LoraDelta { dir: dir.to_path_buf(), scale, rank: r as usize, modules, base_name: v["base_model_name_or_path"].as_str().map(str::to_string) })
    }

    /// `scale * B A` for a weight, if the adapter targets it.
    pub fn delta(&self, name: &str) -> Option<Vec<f32>> {
        let (a, b, out_f, in_f) = self.modules.get(name)?;
        let r = a.len() / in_f;
        let mut d = vec![0f32; out_f * in_f];
        use rayon::prelude::*;
        d.par_chunks_mut(*in_f).enumerate().for_each(|(i, row)| {
            for k in 0..r {
                let c = (b[i * r + k] as f64 * self.scale) as f32;
                let ak = &a[k * in_f..(k + 1) * in_f];
                row.iter_mut().zip(ak).for_each(|(x, y)| *x += c * y);
            }
        });
        Some(d)
    }
}

pub enum Kind {
    Hf(Safetensors),
    Gguf(Box<GgufModel>),
    /// A LoRA over another model.
    Lora(Box<Model>, LoraDelta),
    /// A task-vector directory: deltas over the merge's base.
    TaskVector(Safetensors),
}

/// One input model.
pub struct Model {
    pub label: String,
    pub kind: Kind,
    /// config.json (built from GGUF metadata for GGUF files).
    pub config: serde_json::Value,
    /// Where the tokenizer comes from.
    pub source: ModelSource,
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid JSON: {e}")))
}

impl Model {
    /// Open `reference` (a path relative to `dir` or as given, or a registry/Hub id).
    pub fn open(label: &str, reference: &str, dir: &Path) -> Result<Self> {
        let local = dir.join(reference);
        let path = if !Path::new(reference).is_absolute() && local.exists() { local } else { PathBuf::from(reference) };
        if path.is_dir() && path.join("adapter_config.json").exists() {
            let lora = LoraDelta::open(&path)?;
            let base = lora.base_name.clone().ok_or_else(|| Error::file(path.join("adapter_config.json"), "base_model_name_or_path is not set: write the merge input as BASE+ADAPTER"))?;
            return Self::with_lora(label, Self::open(&base, &base, dir)?, lora);
        }
        let source = if path.exists() {
            if path.is_dir() {
                ModelSource::HfDir(path)
            } else {
                ModelSource::Gguf(path)
            }
        } else {
            crate::hub::resolve(reference, true)?
        };
        match &source {
            ModelSource::HfDir(d) => {
                let config = read_json(&d.join("config.json"))?;
                let st = Safetensors::open(d)?;
                let kind = if config.get(TASK_VECTOR_KEY).is_some() { Kind::TaskVector(st) } else { Kind::Hf(st) };
                Ok(Model { label: label.to_string(), kind, config, source })
            }
            ModelSource::Gguf(p) => {
                let g = GgufModel::open(p)?;
                let config = g.arch.hf_config(&g.cfg);
                Ok(Model { label: label.to_string(), kind: Kind::Gguf(Box::new(g)), config, source })
            }
        }
    }

    pub fn with_lora(label: &str, base: Model, lora: LoraDelta) -> Result<Self> {
        for m in lora.modules.keys() {
            if base.shape(m).is_none() {
                return Err(Error::file(&lora.dir, format!("the adapter targets {m}, which {} does not have", base.label)));
            }
        }
        let (config, source) = (base.config.clone(), base.source.clone());
        Ok(Model { label: label.to_string(), kind: Kind::Lora(Box::new(base), lora), config, source })
    }

    pub fn names(&self) -> Vec<String> {
        match &self.kind {
            Kind::Hf(s) | Kind::TaskVector(s) => s.names(),
            Kind::Gguf(g) => g.names.keys().cloned().collect(),
            Kind::Lora(b, _) => b.names(),
        }
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match &self.kind {
            Kind::Hf(s) | Kind::TaskVector(s) => s.shape(name),
            Kind::Gguf(g) => g.shape(name),
            Kind::Lora(b, _) => b.shape(name),
        }
    }

    pub fn stored(&self, name: &str) -> Option<StoredType> {
        match &self.kind {
            Kind::Hf(s) | Kind::TaskVector(s) => s.stored(name),
            Kind::Gguf(g) => g.md.content.tensor_infos.get(g.names.get(name)?).map(|t| match t.ggml_dtype {
                candle_core::quantized::GgmlDType::F32 => StoredType::F32,
                candle_core::quantized::GgmlDType::F16 => StoredType::F16,
                candle_core::quantized::GgmlDType::BF16 => StoredType::Bf16,
                _ => StoredType::Quant,
            }),
            Kind::Lora(b, _) => b.stored(name),
        }
    }

    pub fn is_task_vector(&self) -> bool {
        matches!(self.kind, Kind::TaskVector(_))
    }

    /// The tensor, or `None` when this model does not have it.
    pub fn load(&self, name: &str) -> Result<Option<Data>> {
        Ok(match &self.kind {
            Kind::Hf(s) => s.load(name)?.map(Data::Full),
            Kind::TaskVector(s) => s.load(name)?.map(Data::Delta),
            Kind::Gguf(g) => g.load(name)?.map(Data::Full),
            Kind::Lora(base, lora) => match base.load(name)? {
                Some(Data::Full(mut w)) => {
                    if let Some(d) = lora.delta(name) {
                        w.iter_mut().zip(&d).for_each(|(x, y)| *x += y);
                    }
                    Some(Data::Full(w))
                }
                Some(Data::Delta(_)) => return Err(Error::file(&lora.dir, "a LoRA adapter cannot sit on a task vector")),
                None => None,
            },
        })
    }

    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::load(&self.source)
    }

    /// Whether the model ties lm_head to the embedding.
    pub fn tied(&self) -> bool {
        let c = self.config.get("text_config").unwrap_or(&self.config);
        c.get("tie_word_embeddings").and_then(|v| v.as_bool()).unwrap_or(false) || self.shape("lm_head.weight").is_none()
    }

    /// The decoder layer count from config.json.
    pub fn num_layers(&self) -> Option<usize> {
        let c = self.config.get("text_config").unwrap_or(&self.config);
        c.get("num_hidden_layers").and_then(|v| v.as_u64()).map(|v| v as usize)
    }
}
