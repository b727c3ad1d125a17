//! The projection every block uses. It is the seam where later work plugs in
//! adapters (LoRA) and quantized bases: callers only see `forward`.
use super::kernels::qgemv;
use crate::Result;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Tensor};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// `(out, in)` f32 weight.
    Dense(Tensor),
    /// GGUF blocks, multiplied without dequantizing.
    Quant(Arc<QTensor>, QMatMul),
}

#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: LinearWeight,
    pub bias: Option<Tensor>,
}

/// Formats our own SIMD kernel serves better than candle's scalar dot products (CPU only).
fn own_kernel(q: &QTensor) -> Option<qgemv::Format> {
    if !q.device().is_cpu() {
        return None;
    }
    match q.dtype() {
        GgmlDType::Q4_1 => Some(qgemv::Format::Q4_1),
        GgmlDType::Q5_0 => Some(qgemv::Format::Q5_0),
        GgmlDType::Q8_0 => Some(qgemv::Format::Q8_0),
        _ => None,
    }
}

fn qgemv_forward(format: qgemv::Format, q: &QTensor, x: &Tensor) -> Result<Tensor> {
    let (n, k) = q.shape().dims2()?;
    let rows = x.elem_count() / k;
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let y = qgemv::matmul(format, &q.data()?, n, k, &xs, rows);
    let mut shape = x.dims().to_vec();
    *shape.last_mut().expect("rank >= 1") = n;
    Ok(Tensor::from_vec(y, shape, x.device())?)
}

/// `T` of a `(B, T, in)` input; the row count of a `(rows, in)` one.
fn tokens_per_row(x: &Tensor) -> usize {
    let d = x.dims();
    if d.len() >= 2 { d[d.len() - 2] } else { 1 }
}

impl Linear {
    pub fn dense(w: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight: LinearWeight::Dense(w), bias }
    }

    pub fn quantized(q: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        let mm = QMatMul::from_arc(q.clone())?;
        Ok(Linear { weight: LinearWeight::Quant(q, mm), bias })
    }

    /// `x (..., in) -> (..., out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            LinearWeight::Dense(w) => {
                let dims = x.dims().to_vec();
                let (in_f, rows) = (dims[dims.len() - 1], x.elem_count() / dims[dims.len() - 1]);
                let y = x.reshape((rows, in_f))?.matmul(&w.t()?)?;
                let mut out = dims;
                *out.last_mut().expect("rank >= 1") = w.dim(0)?;
                y.reshape(out)?
            }
            LinearWeight::Quant(q, _) if tokens_per_row(x) > 1 => {
                // Several tokens per sequence (prefill, training): dequantizing once and
                // using the f32 GEMM beats block dot products, whose cost grows with every
                // row (measured: 120 -> 468 prompt tok/s on SmolLM2). Deciding by tokens per
                // row, not total rows, keeps a sequence's numerics independent of how many
                // others share its batch.
                Self::dense(q.dequantize(&q.device())?, None).forward(x)?
            }
            LinearWeight::Quant(q, mm) => match own_kernel(q) {
                Some(format) => qgemv_forward(format, q, x)?,
                None => mm.forward(x)?,
            },
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// The weight as a dense `(out, in)` f32 tensor.
    pub fn dense_weight(&self) -> Result<Tensor> {
        Ok(match &self.weight {
            LinearWeight::Dense(w) => w.clone(),
            LinearWeight::Quant(q, _) => q.dequantize(&q.device())?,
        })
    }

    pub fn storage_bytes(&self) -> usize {
        match &self.weight {
            LinearWeight::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            LinearWeight::Quant(q, _) => q.storage_size_in_bytes(),
        }
    }

    pub fn quant_type(&self) -> Option<GgmlDType> {
        match &self.weight {
            LinearWeight::Dense(_) => None,
            LinearWeight::Quant(q, _) => Some(q.dtype()),
        }
    }
}
