//! A GGUF v3 writer: metadata, tensor index, tensor data aligned to 32 bytes.
//!
//! Written by hand rather than with candle's `gguf_file::write` because that one writes
//! version 2, keeps every tensor in memory as a `QTensor`, and cannot write the Q4_K/Q6_K
//! bytes we quantize ourselves (see `kquants.rs`). The metadata values are candle's
//! `gguf_file::Value`, so a file read with candle copies straight across.
use super::quant::TensorType;
use crate::{Error, Result};
use candle_core::quantized::gguf_file::Value;
use std::io::Write;
use std::path::Path;

pub const ALIGNMENT: usize = 32;
const MAGIC: &[u8; 4] = b"GGUF";
const VERSION: u32 = 3;

/// A tensor's index entry: GGUF name, candle dims (the last one varies fastest), type.
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<usize>,
    pub ty: TensorType,
}

impl TensorInfo {
    pub fn bytes(&self) -> usize {
        let n: usize = self.dims.iter().product();
        n / self.ty.block_size() * type_size(self.ty)
    }
}

fn type_size(t: TensorType) -> usize {
    match t {
        TensorType::F32 => 4,
        TensorType::F16 | TensorType::Bf16 => 2,
        TensorType::Q4_0 => 18,
        TensorType::Q5_0 => 22,
        TensorType::Q8_0 => 34,
        TensorType::Q4K => super::kquants::Q4K_BYTES,
        TensorType::Q6K => super::kquants::Q6K_BYTES,
    }
}

fn value_type(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    w.extend((s.len() as u64).to_le_bytes());
    w.extend(s.as_bytes());
}

fn put_value(w: &mut Vec<u8>, key: &str, v: &Value) -> Result<()> {
    match v {
        Value::U8(x) => w.push(*x),
        Value::I8(x) => w.extend(x.to_le_bytes()),
        Value::U16(x) => w.extend(x.to_le_bytes()),
        Value::I16(x) => w.extend(x.to_le_bytes()),
        Value::U32(x) => w.extend(x.to_le_bytes()),
        Value::I32(x) => w.extend(x.to_le_bytes()),
        Value::U64(x) => w.extend(x.to_le_bytes()),
        Value::I64(x) => w.extend(x.to_le_bytes()),
        Value::F32(x) => w.extend(x.to_le_bytes()),
        Value::F64(x) => w.extend(x.to_le_bytes()),
        Value::Bool(x) => w.push(u8::from(*x)),
        Value::String(s) => put_str(w, s),
        Value::Array(items) => {
            let ty = items.first().map_or(value_type(&Value::U32(0)), value_type);
            if items.iter().any(|i| value_type(i) != ty) {
                return Err(Error::Input(format!("GGUF metadata {key:?}: an array mixes value types")));
            }
            w.extend(ty.to_le_bytes());
            w.extend((items.len() as u64).to_le_bytes());
            for i in items {
                put_value(w, key, i)?;
            }
        }
    }
    Ok(())
}

fn pad(n: usize) -> usize {
    n.div_ceil(ALIGNMENT) * ALIGNMENT - n
}

/// The header: magic, version, counts, metadata, tensor index, padding to the data.
fn header(metadata: &[(String, Value)], tensors: &[TensorInfo]) -> Result<Vec<u8>> {
    let mut w = Vec::new();
    w.extend(MAGIC);
    w.extend(VERSION.to_le_bytes());
    w.extend((tensors.len() as u64).to_le_bytes());
    w.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut w, k);
        w.extend(value_type(v).to_le_bytes());
        put_value(&mut w, k, v)?;
    }
    let mut offset = 0usize;
    for t in tensors {
        put_str(&mut w, &t.name);
        w.extend((t.dims.len() as u32).to_le_bytes());
        for &d in t.dims.iter().rev() {
            w.extend((d as u64).to_le_bytes());
        }
        w.extend(t.ty.ggml_id().to_le_bytes());
        w.extend((offset as u64).to_le_bytes());
        offset += t.bytes() + pad(t.bytes());
    }
    w.extend(vec![0u8; pad(w.len())]);
    Ok(w)
}

/// Write a GGUF file atomically (a temp file renamed into place; removed on failure).
/// `data(i)` gives the bytes of tensor `i`, so only one tensor is held encoded at a time.
pub fn write(path: &Path, metadata: &[(String, Value)], tensors: &[TensorInfo], data: impl FnMut(usize) -> Result<Vec<u8>>) -> Result<()> {
    let tmp = path.with_extension(format!("partial.{}", std::process::id()));
    let result = write_to(&tmp, metadata, tensors, data).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::file(path, e.to_string())));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_to(tmp: &Path, metadata: &[(String, Value)], tensors: &[TensorInfo], mut data: impl FnMut(usize) -> Result<Vec<u8>>) -> Result<()> {
    let io = |e: std::io::Error| Error::file(tmp, e.to_string());
    let mut f = std::io::BufWriter::new(std::fs::File::create(tmp).map_err(io)?);
    f.write_all(&header(metadata, tensors)?).map_err(io)?;
    for (i, t) in tensors.iter().enumerate() {
        let bytes = data(i)?;
        if bytes.len() != t.bytes() {
            return Err(Error::Input(format!("tensor {:?}: {} bytes encoded, {} expected for {} {:?}", t.name, bytes.len(), t.bytes(), t.ty.name(), t.dims)));
        }
        f.write_all(&bytes).map_err(io)?;
        f.write_all(&vec![0u8; pad(bytes.len())]).map_err(io)?;
    }
    f.into_inner().map_err(|e| Error::file(tmp, e.to_string()))?.sync_all().map_err(io)
}
