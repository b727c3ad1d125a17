//! Reading weights from GGUF (kept quantized or dequantized) and HF safetensors
//! directories (sharded too), and writing HF directories.
use super::arch::{self, Architecture};
use super::config::ModelConfig;
use super::gguf::Metadata;
use crate::{Error, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A tensor as stored: GGUF blocks, or a dense f32 tensor.
#[derive(Debug, Clone)]
pub enum Weight {
    Quant(Arc<QTensor>),
    Dense(Tensor),
}

impl Weight {
    pub fn dense(&self) -> Result<Tensor> {
        Ok(match self {
            Weight::Quant(q) => q.dequantize(&q.device())?,
            Weight::Dense(t) => t.clone(),
        })
    }

    /// Float-typed GGUF tensors are always used dense.
    pub fn is_block_quantized(&self) -> bool {
        matches!(self, Weight::Quant(q) if !matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16))
    }
}

/// Tensors by GGUF name, plus where they came from (for error messages).
pub struct WeightStore {
    pub path: PathBuf,
    pub map: HashMap<String, Weight>,
}

impl WeightStore {
    pub fn get(&self, name: &str) -> Result<&Weight> {
        self.map.get(name).ok_or_else(|| Error::file(&self.path, format!("tensor {name:?} is missing")))
    }

    pub fn opt(&self, name: &str) -> Option<&Weight> {
        self.map.get(name)
    }

    /// Read every tensor of a GGUF file, keeping block quantization.
    pub fn from_gguf(md: &Metadata, dev: &Device) -> Result<Self> {
        let mut f = std::fs::File::open(&md.path)?;
        let mut map = HashMap::new();
        for name in md.content.tensor_infos.keys() {
            let q = md.content.tensor(&mut f, name, dev).map_err(|e| Error::file(&md.path, format!("tensor {name:?}: {}", crate::error::first_line(&e))))?;
            map.insert(name.clone(), Weight::Quant(Arc::new(q)));
        }
        Ok(WeightStore { path: md.path.clone(), map })
    }

    /// Read a HF safetensors directory and map names/layouts onto GGUF conventions.
    pub fn from_hf_dir(dir: &Path, arch: &dyn Architecture, cfg: &ModelConfig, dev: &Device) -> Result<Self> {
        let files = safetensor_files(dir)?;
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }.map_err(|e| Error::file(dir, format!("reading safetensors: {}", crate::error::first_line(&e))))?;
        let mut map = HashMap::new();
        for (name, _) in st.tensors() {
            let Some(g) = arch::hf_to_gguf(arch, &name) else {
                continue; // e.g. rotary inv_freq buffers
            };
            let t = st.load(&name, dev)?.to_dtype(DType::F32)?;
            map.insert(g.clone(), Weight::Dense(arch.convert(&g, t, cfg, false)?));
        }
        Ok(WeightStore { path: dir.to_path_buf(), map })
    }
}

fn safetensor_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(|e| Error::file(dir, e.to_string()))?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "safetensors")).collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::file(dir, "no *.safetensors files: is this a Hugging Face model directory?"));
    }
    Ok(files)
}

/// Write `tensors` (GGUF names, f32) as a HF directory: config.json and
/// model.safetensors, or shards of at most `shard_bytes` with an index.
/// Files are written into a temp directory that is renamed into place.
pub fn save_hf_dir(dir: &Path, arch: &dyn Architecture, cfg: &ModelConfig, tensors: Vec<(String, Tensor)>, dtype: DType, shard_bytes: usize, extra_files: &[(&str, Vec<u8>)]) -> Result<()> {
    save_hf_dir_with(dir, arch, cfg, tensors, vec![], &|_| {}, dtype, shard_bytes, extra_files)
}

/// A tensor of a HF directory by its own (HF) name, if it has one.
pub fn load_hf_tensor(dir: &Path, name: &str, dev: &Device) -> Result<Option<Tensor>> {
    let files = safetensor_files(dir)?;
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }.map_err(|e| Error::file(dir, format!("reading safetensors: {}", crate::error::first_line(&e))))?;
    match st.get(name) {
        Ok(_) => Ok(Some(st.load(name, dev)?.to_dtype(DType::F32)?)),
        Err(_) => Ok(None),
    }
}

/// [`save_hf_dir`] with tensors that have HF names already (a reward model's
/// `score.weight`) and a change to config.json.
#[allow(clippy::too_many_arguments)]
pub fn save_hf_dir_with(
    dir: &Path,
    arch: &dyn Architecture,
    cfg: &ModelConfig,
    tensors: Vec<(String, Tensor)>,
    hf_named: Vec<(String, Tensor)>,
    patch_config: &dyn Fn(&mut serde_json::Value),
    dtype: DType,
    shard_bytes: usize,
    extra_files: &[(&str, Vec<u8>)],
) -> Result<()> {
    let tmp = dir.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let mut hf = Vec::with_capacity(tensors.len());
    for (g, t) in tensors {
        if cfg.tie_embeddings && g == "output.weight" {
            continue;
        }
        let name = arch::gguf_to_hf(arch, &g).ok_or_else(|| Error::Unsupported(format!("no Hugging Face name for tensor {g:?}")))?;
        hf.push((name, arch.convert(&g, t, cfg, true)?.to_dtype(dtype)?));
    }
    for (name, t) in hf_named {
        hf.push((name, t.to_dtype(dtype)?));
    }
    hf.sort_by(|a, b| a.0.cmp(&b.0));
    let shards = split_shards(hf, shard_bytes);
    let n = shards.len();
    let mut index = serde_json::Map::new();
    for (i, shard) in shards.into_iter().enumerate() {
        let file = if n == 1 { "model.safetensors".to_string() } else { format!("model-{:05}-of-{n:05}.safetensors", i + 1) };
        for (name, _) in &shard {
            index.insert(name.clone(), file.clone().into());
        }
        candle_core::safetensors::save(&shard.into_iter().collect::<HashMap<_, _>>(), tmp.join(&file))?;
    }
    if n > 1 {
        let idx = serde_json::json!({"metadata": {}, "weight_map": index});
        std::fs::write(tmp.join("model.safetensors.index.json"), serde_json::to_vec_pretty(&idx).expect("json"))?;
    }
    let mut config = arch.hf_config(cfg);
    config["torch_dtype"] = match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
    .into();
    patch_config(&mut config);
    std::fs::write(tmp.join("config.json"), serde_json::to_vec_pretty(&config).expect("json"))?;
    for (name, bytes) in extra_files {
        std::fs::write(tmp.join(name), bytes)?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::rename(&tmp, dir)?;
    Ok(())
}

fn split_shards(tensors: Vec<(String, Tensor)>, max_bytes: usize) -> Vec<Vec<(String, Tensor)>> {
    let mut shards: Vec<Vec<(String, Tensor)>> = vec![vec![]];
    let mut size = 0;
    for (name, t) in tensors {
        let bytes = t.elem_count() * t.dtype().size_in_bytes();
        if size > 0 && size + bytes > max_bytes {
            shards.push(vec![]);
            size = 0;
        }
        size += bytes;
        shards.last_mut().expect("non-empty").push((name, t));
    }
    shards
}
