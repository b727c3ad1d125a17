//! GGUF metadata access with errors that name the file and key.
use crate::error::first_line;
use crate::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use std::path::{Path, PathBuf};

pub struct Metadata {
    pub path: PathBuf,
    pub content: Content,
}

impl Metadata {
    /// Read only the header (metadata + tensor index) of a GGUF file.
    pub fn read(path: &Path) -> Result<Self> {
        let mut f = std::fs::File::open(path).map_err(|e| Error::file(path, e.to_string()))?;
        let len = f.metadata()?.len();
        let content = Content::read(&mut f).map_err(|e| {
            let msg = first_line(&e);
            match msg.strip_prefix("unknown dtype for tensor ") {
                Some(id) => Error::file(
                    path,
                    format!("uses GGML tensor type id {id}, which instill cannot read (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K-Q8_K); re-quantize it to one of those"),
                ),
                None => Error::file(path, format!("not a readable GGUF file ({msg}); re-download it or check the path")),
            }
        })?;
        // A truncated download still has a valid header: check the data is all there.
        let end = content
            .tensor_infos
            .values()
            .map(|t| {
                let bytes = t.shape.elem_count() / t.ggml_dtype.block_size() * t.ggml_dtype.type_size();
                content.tensor_data_offset + t.offset + bytes as u64
            })
            .max()
            .unwrap_or(0);
        if end > len {
            return Err(Error::file(path, format!("truncated: tensor data needs {end} bytes, file has {len}")));
        }
        Ok(Metadata { path: path.to_path_buf(), content })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn missing(&self, key: &str) -> Error {
        Error::file(&self.path, format!("GGUF metadata key {key:?} is missing or has the wrong type"))
    }

    pub fn str(&self, key: &str) -> Result<&str> {
        self.get(key).and_then(|v| v.to_string().ok()).map(String::as_str).ok_or_else(|| self.missing(key))
    }

    pub fn opt_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| v.to_string().ok()).map(String::as_str)
    }

    /// Any integer type, as usize.
    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key).ok_or_else(|| self.missing(key))
    }

    pub fn opt_usize(&self, key: &str) -> Option<usize> {
        let v = self.get(key)?;
        v.to_u32().map(|x| x as usize).or_else(|_| v.to_i32().map(|x| x as usize)).or_else(|_| v.to_u64().map(|x| x as usize)).or_else(|_| v.to_i64().map(|x| x as usize)).ok()
    }

    pub fn opt_f64(&self, key: &str) -> Option<f64> {
        let v = self.get(key)?;
        v.to_f32().map(|x| x as f64).or_else(|_| v.to_f64()).ok()
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key).ok_or_else(|| self.missing(key))
    }

    pub fn opt_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.to_bool().ok())
    }

    pub fn str_array(&self, key: &str) -> Result<Vec<String>> {
        let arr = self.get(key).and_then(|v| v.to_vec().ok()).ok_or_else(|| self.missing(key))?;
        arr.iter().map(|v| v.to_string().cloned().map_err(|_| self.missing(key))).collect()
    }

    pub fn f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let arr = self.get(key).and_then(|v| v.to_vec().ok()).ok_or_else(|| self.missing(key))?;
        arr.iter().map(|v| v.to_f32().map_err(|_| self.missing(key))).collect()
    }

    pub fn i32_array(&self, key: &str) -> Result<Vec<i32>> {
        let arr = self.get(key).and_then(|v| v.to_vec().ok()).ok_or_else(|| self.missing(key))?;
        arr.iter().map(|v| v.to_i32().or_else(|_| v.to_u32().map(|x| x as i32)).map_err(|_| self.missing(key))).collect()
    }

    pub fn arch(&self) -> Result<&str> {
        self.str("general.architecture")
    }
}
