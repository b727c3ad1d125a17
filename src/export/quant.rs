//! Which GGML type each tensor is written in, and its bytes.
//!
//! The choice is a port of llama.cpp's `llama_tensor_get_type` (src/llama-quant.cpp) for
//! the file types we write, so `--quant q4_k_m` picks per tensor what `llama-quantize`
//! picks for the same model: Q6_K for the output (or the tied embedding), for some
//! layers' `attn_v` and `ffn_down`, and the fallbacks for rows that are not a multiple
//! of 256 (Q4_K -> Q5_0, Q6_K -> Q8_0, output -> Q8_0).
use super::kquants::{self, QK_K};
use crate::{Error, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;
use rayon::prelude::*;

/// A GGML tensor type we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    Bf16,
    Q4_0,
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
}

impl TensorType {
    /// The `ggml_type` id stored in the file.
    pub fn ggml_id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q4_0 => 2,
            TensorType::Q5_0 => 6,
            TensorType::Q8_0 => 8,
            TensorType::Q4K => 12,
            TensorType::Q6K => 14,
            TensorType::Bf16 => 30,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TensorType::F32 => "F32",
            TensorType::F16 => "F16",
            TensorType::Bf16 => "BF16",
            TensorType::Q4_0 => "Q4_0",
            TensorType::Q5_0 => "Q5_0",
            TensorType::Q8_0 => "Q8_0",
            TensorType::Q4K => "Q4_K",
            TensorType::Q6K => "Q6_K",
        }
    }

    pub fn block_size(self) -> usize {
        match self {
            TensorType::F32 | TensorType::F16 | TensorType::Bf16 => 1,
            TensorType::Q4_0 | TensorType::Q5_0 | TensorType::Q8_0 => 32,
            TensorType::Q4K | TensorType::Q6K => QK_K,
        }
    }

    fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Candle's type, where candle's quantizer is a faithful port of ggml's reference
    /// (`quantize_row_*_ref`, the same as the `gguf` Python package): F16/BF16 round to
    /// nearest even, Q8_0 rounds away from zero, Q4_0/Q5_0 truncate `x + 8.5`/`x + 16.5`.
    fn candle(self) -> Option<GgmlDType> {
        match self {
            TensorType::F16 => Some(GgmlDType::F16),
            TensorType::Bf16 => Some(GgmlDType::BF16),
            TensorType::Q4_0 => Some(GgmlDType::Q4_0),
            TensorType::Q5_0 => Some(GgmlDType::Q5_0),
            TensorType::Q8_0 => Some(GgmlDType::Q8_0),
            TensorType::F32 | TensorType::Q4K | TensorType::Q6K => None,
        }
    }
}

/// What `--quant` asks for: a llama.cpp file type (`general.file_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4KM,
    Q6K,
}

pub const QUANT_NAMES: &str = "f32, f16, bf16, q8_0, q4_0, q4_k_m, q6_k";

impl Quant {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => Quant::F32,
            "f16" => Quant::F16,
            "bf16" => Quant::Bf16,
            "q8_0" => Quant::Q8_0,
            "q4_0" => Quant::Q4_0,
            "q4_k_m" => Quant::Q4KM,
            "q6_k" => Quant::Q6K,
            other => return Err(Error::Input(format!("--quant {other:?}: expected one of {QUANT_NAMES}"))),
        })
    }

    /// llama.cpp's `llama_ftype` value.
    pub fn file_type(self) -> u32 {
        match self {
            Quant::F32 => 0,
            Quant::F16 => 1,
            Quant::Q4_0 => 2,
            Quant::Q8_0 => 7,
            Quant::Q4KM => 15,
            Quant::Q6K => 18,
            Quant::Bf16 => 32,
        }
    }

    fn default_type(self) -> TensorType {
        match self {
            Quant::F32 => TensorType::F32,
            Quant::F16 => TensorType::F16,
            Quant::Bf16 => TensorType::Bf16,
            Quant::Q8_0 => TensorType::Q8_0,
            Quant::Q4_0 => TensorType::Q4_0,
            Quant::Q4KM => TensorType::Q4K,
            Quant::Q6K => TensorType::Q6K,
        }
    }
}

/// llama.cpp's `tensor_allows_quantization` for the tensors our families have:
/// 2-D weights other than norms. Everything else keeps its type (f32 here).
fn allows_quantization(name: &str, dims: &[usize]) -> bool {
    dims.len() >= 2 && name.ends_with("weight") && !name.contains("_norm.weight")
}

/// llama.cpp's `use_more_bits`.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// `tensor_type_fallback`: a K-quant on rows that are not a multiple of 256.
fn fallback(t: TensorType, ncols: usize) -> TensorType {
    if ncols.is_multiple_of(t.block_size()) {
        return t;
    }
    let r = match t {
        TensorType::Q4K => TensorType::Q5_0,
        TensorType::Q6K => TensorType::Q8_0,
        other => other,
    };
    if ncols.is_multiple_of(r.block_size()) {
        r
    } else {
        TensorType::F16
    }
}

/// The type of every tensor, in file order (llama.cpp counts `attn_v` and `ffn_down`
/// in the order it meets them). `tensors` are (GGUF name, candle dims: rows last-but-one).
pub fn choose_types(quant: Quant, tensors: &[(String, Vec<usize>)], n_layer: usize) -> Vec<TensorType> {
    let default = quant.default_type();
    let tied = !tensors.iter().any(|(n, _)| n == "output.weight");
    let n_attn_v = tensors.iter().filter(|(n, _)| n.contains("attn_v.weight")).count();
    let (mut i_attn_v, mut i_ffn_down) = (0, 0);
    let mut out = Vec::with_capacity(tensors.len());
    for (name, dims) in tensors {
        if !allows_quantization(name, dims) {
            out.push(TensorType::F32);
            continue;
        }
        let ncols = *dims.last().expect("2-D");
        let mut t = default;
        if default.is_quantized() {
            if name == "output.weight" || (tied && name == "token_embd.weight") {
                if !ncols.is_multiple_of(default.block_size()) {
                    t = TensorType::Q8_0;
                } else if default != TensorType::Q8_0 {
                    t = TensorType::Q6K;
                }
            } else if name.contains("attn_v.weight") {
                if quant == Quant::Q4KM && use_more_bits(i_attn_v, n_attn_v) {
                    t = TensorType::Q6K;
                }
                i_attn_v += 1;
            } else if name.contains("ffn_down") {
                if quant == Quant::Q4KM && use_more_bits(i_ffn_down, n_layer) {
                    t = TensorType::Q6K;
                }
                i_ffn_down += 1;
            }
            t = fallback(t, ncols);
        }
        out.push(t);
    }
    out
}

/// Quantizes one block of values into its bytes.
type BlockFn = fn(&[f32], &mut [u8]);

/// The bytes of `t` (f32, any shape) in GGML type `ty`, rows of the last dimension.
pub fn encode(t: &Tensor, ty: TensorType) -> Result<Vec<u8>> {
    let t = t.to_dtype(candle_core::DType::F32)?.contiguous()?;
    if let Some(dt) = ty.candle() {
        return Ok(QTensor::quantize(&t, dt)?.data()?.into_owned());
    }
    let xs: Vec<f32> = t.flatten_all()?.to_vec1()?;
    let (block, bytes, f): (usize, usize, BlockFn) = match ty {
        TensorType::F32 => return Ok(xs.iter().flat_map(|v| v.to_le_bytes()).collect()),
        TensorType::Q4K => (QK_K, kquants::Q4K_BYTES, kquants::q4_k_block),
        TensorType::Q6K => (QK_K, kquants::Q6K_BYTES, kquants::q6_k_block),
        _ => unreachable!("candle encodes {ty:?}"),
    };
    let ncols = *t.dims().last().unwrap_or(&0);
    if !ncols.is_multiple_of(block) {
        return Err(Error::Input(format!("{} needs rows that are a multiple of {block} values, not {ncols}", ty.name())));
    }
    let mut out = vec![0u8; xs.len() / block * bytes];
    out.par_chunks_mut(bytes).zip(xs.par_chunks(block)).for_each(|(o, x)| f(x, o));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_matches_llama_cpp() {
        // n = 30 (SmolLM2): first 3, last 4 (i >= 26), and every third from n/8 + 2.
        let picked: Vec<usize> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(picked, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }
}
