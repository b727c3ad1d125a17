//! Streaming Hugging Face output: every tensor's shape is known before the first is
//! merged, so each shard's safetensors header is written first and tensors are appended
//! as they are merged (one in memory at a time). Everything goes into `DIR.partial`,
//! renamed to `DIR` at the end (removed on failure).
use crate::{Error, Result};
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The floating type tensors are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    Bf16,
}

impl OutType {
    /// mergekit's dtype names (`float32`, `float16`, `bfloat16`; `float64` is written as f32).
    pub fn from_name(s: &str) -> Self {
        match s {
            "float16" => OutType::F16,
            "bfloat16" => OutType::Bf16,
            _ => OutType::F32,
        }
    }

    pub fn torch_name(self) -> &'static str {
        match self {
            OutType::F32 => "float32",
            OutType::F16 => "float16",
            OutType::Bf16 => "bfloat16",
        }
    }

    fn st_name(self) -> &'static str {
        match self {
            OutType::F32 => "F32",
            OutType::F16 => "F16",
            OutType::Bf16 => "BF16",
        }
    }

    pub fn size(self) -> usize {
        match self {
            OutType::F32 => 4,
            _ => 2,
        }
    }

    /// Round `x` to this type (kept as f32).
    pub fn round(self, x: &mut [f32]) {
        match self {
            OutType::F32 => {}
            OutType::F16 => x.par_iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32()),
            OutType::Bf16 => x.par_iter_mut().for_each(|v| *v = half::bf16::from_f32(*v).to_f32()),
        }
    }

    /// Little-endian bytes of `x` in this type.
    pub fn encode(self, x: &[f32]) -> Vec<u8> {
        let size = self.size();
        let mut out = vec![0u8; x.len() * size];
        out.par_chunks_mut(size * 4096).zip(x.par_chunks(4096)).for_each(|(o, x)| {
            for (o, v) in o.chunks_exact_mut(size).zip(x) {
                match self {
                    OutType::F32 => o.copy_from_slice(&v.to_le_bytes()),
                    OutType::F16 => o.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes()),
                    OutType::Bf16 => o.copy_from_slice(&half::bf16::from_f32(*v).to_le_bytes()),
                }
            }
        });
        out
    }
}

struct ShardPlan {
    file: String,
    /// Indices into the writer's tensor list.
    tensors: Vec<usize>,
}

/// Writes a HF directory shard by shard; tensors must arrive in order.
pub struct HfWriter {
    dir: PathBuf,
    tmp: PathBuf,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    ty: OutType,
    shards: Vec<ShardPlan>,
    current: Option<(usize, std::io::BufWriter<std::fs::File>)>,
    next: usize,
    bytes: u64,
}

impl HfWriter {
    pub fn new(dir: &Path, tensors: &[(String, Vec<usize>)], ty: OutType, shard_bytes: usize) -> Result<Self> {
        let tmp = dir.with_extension("partial");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::file(&tmp, e.to_string()))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::file(&tmp, e.to_string()))?;
        let mut shards: Vec<ShardPlan> = vec![ShardPlan { file: String::new(), tensors: vec![] }];
        let mut size = 0;
        for (i, (_, shape)) in tensors.iter().enumerate() {
            let b = shape.iter().product::<usize>() * ty.size();
            if size > 0 && size + b > shard_bytes {
                shards.push(ShardPlan { file: String::new(), tensors: vec![] });
                size = 0;
            }
            size += b;
            shards.last_mut().expect("non-empty").tensors.push(i);
        }
        let n = shards.len();
        for (i, s) in shards.iter_mut().enumerate() {
            s.file = if n == 1 { "model.safetensors".into() } else { format!("model-{:05}-of-{n:05}.safetensors", i + 1) };
        }
        let (names, shapes) = tensors.iter().cloned().unzip();
        Ok(HfWriter { dir: dir.to_path_buf(), tmp, names, shapes, ty, shards, current: None, next: 0, bytes: 0 })
    }

    fn header(&self, shard: &ShardPlan) -> Vec<u8> {
        let mut h = serde_json::Map::new();
        h.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let mut offset = 0;
        for &i in &shard.tensors {
            let b = self.shapes[i].iter().product::<usize>() * self.ty.size();
            h.insert(self.names[i].clone(), serde_json::json!({"dtype": self.ty.st_name(), "shape": self.shapes[i], "data_offsets": [offset, offset + b]}));
            offset += b;
        }
        let mut text = serde_json::to_vec(&h).expect("json");
        while !text.len().is_multiple_of(8) {
            text.push(b' ');
        }
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend(text);
        out
    }

    /// Append tensor `i` (the next one in order).
    pub fn write(&mut self, i: usize, data: &[f32]) -> Result<()> {
        assert_eq!(i, self.next, "tensors are written in order");
        let expected: usize = self.shapes[i].iter().product();
        if data.len() != expected {
            return Err(Error::Input(format!("tensor {}: {} values merged, {expected} expected for {:?}", self.names[i], data.len(), self.shapes[i])));
        }
        let shard = self.shards.iter().position(|s| s.tensors.contains(&i)).expect("planned");
        if self.current.as_ref().map(|c| c.0) != Some(shard) {
            self.close_current()?;
            let path = self.tmp.join(&self.shards[shard].file);
            let f = std::fs::File::create(&path).map_err(|e| Error::file(&path, e.to_string()))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 22, f);
            w.write_all(&self.header(&self.shards[shard])).map_err(|e| Error::file(&path, e.to_string()))?;
            self.current = Some((shard, w));
        }
        let (s, w) = self.current.as_mut().expect("open");
        let file = &self.shards[*s].file;
        // Encoded a slice at a time: no second copy of a large tensor.
        for chunk in data.chunks(1 << 20) {
            let bytes = self.ty.encode(chunk);
            self.bytes += bytes.len() as u64;
            w.write_all(&bytes).map_err(|e| Error::file(self.tmp.join(file), e.to_string()))?;
        }
        self.next += 1;
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((s, w)) = self.current.take() {
            let path = self.tmp.join(&self.shards[s].file);
            w.into_inner().map_err(|e| Error::file(&path, e.to_string()))?;
        }
        Ok(())
    }

    /// Close the last shard, write the index and `files`, and move the directory into place.
    pub fn finish(mut self, files: &[(String, Vec<u8>)]) -> Result<u64> {
        if self.next != self.names.len() {
            return Err(Error::Input(format!("{} of {} tensors were written", self.next, self.names.len())));
        }
        self.close_current()?;
        if self.shards.len() > 1 {
            let mut map = serde_json::Map::new();
            for s in &self.shards {
                for &i in &s.tensors {
                    map.insert(self.names[i].clone(), s.file.clone().into());
                }
            }
            let idx = serde_json::json!({"metadata": {"total_size": self.bytes}, "weight_map": map});
            std::fs::write(self.tmp.join("model.safetensors.index.json"), serde_json::to_vec_pretty(&idx).expect("json"))?;
        }
        for (name, bytes) in files {
            let p = self.tmp.join(name);
            std::fs::write(&p, bytes).map_err(|e| Error::file(&p, e.to_string()))?;
        }
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(|e| Error::file(&self.dir, e.to_string()))?;
        }
        std::fs::rename(&self.tmp, &self.dir).map_err(|e| Error::file(&self.dir, e.to_string()))?;
        Ok(self.bytes)
    }

    /// Remove the partial directory (after a failure).
    pub fn abandon(self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}
