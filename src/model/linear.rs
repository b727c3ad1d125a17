//! The projection every block uses. It is the seam where later work plugs in
//! adapters (LoRA) and quantized bases: callers only see `forward`.
use super::kernels::{dequant, gemm, kquant, qgemm, qgemv};
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
    /// A trainable addition to the frozen projection (LoRA).
    pub adapter: Option<Arc<dyn Delta>>,
}

/// Something added to a projection's output: `y = base(x) + delta(x)`.
pub trait Delta: std::fmt::Debug + Send + Sync {
    fn delta(&self, x: &Tensor) -> Result<Tensor>;
    /// Its trainable tensors (gradient checkpointing differentiates them block by block).
    fn params(&self) -> Vec<Tensor>;
    /// Switched on? A disabled delta adds nothing (the base model, e.g. as a reference).
    fn enabled(&self) -> bool {
        true
    }
    /// `base(x) + delta(x)` as one op, where the delta has one (LoRA under training:
    /// `peft::lora_op`); None: the caller adds the two.
    fn fused(&self, _base: &Linear, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// Quantized products on the CPU run on our rayon pool: the 32-value block types through
/// our SIMD kernels (`qgemv`: candle has only scalar Q4_1 / Q5_0 / Q5_1 dot products), the
/// K-quants through our AVX2 ports of candle's (`kquant`), chosen at run time.
fn qgemv_forward(q: &QTensor, x: &Tensor) -> Result<Option<Tensor>> {
    use qgemv::Format;
    if !q.device().is_cpu() {
        return Ok(None);
    }
    let (n, k) = q.shape().dims2()?;
    let rows = x.elem_count() / k;
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let w = q.data()?;
    let y = match q.dtype() {
        GgmlDType::Q4_1 => qgemv::matmul(Format::Q4_1, &w, n, k, &xs, rows),
        GgmlDType::Q5_0 => qgemv::matmul(Format::Q5_0, &w, n, k, &xs, rows),
        GgmlDType::Q8_0 => qgemv::matmul(Format::Q8_0, &w, n, k, &xs, rows),
        GgmlDType::Q4_0 => qgemv::matmul(Format::Q4_0, &w, n, k, &xs, rows),
        GgmlDType::Q5_1 => qgemv::matmul(Format::Q5_1, &w, n, k, &xs, rows),
        dtype => match kquant::matmul(dtype, &w, n, k, &xs, rows) {
            Some(y) => y,
            None => return Ok(None),
        },
    };
    let mut shape = x.dims().to_vec();
    *shape.last_mut().expect("rank >= 1") = n;
    Ok(Some(Tensor::from_vec(y, shape, x.device())?))
}

/// Several tokens against a quantized weight through the int8 GEMM; None where it has no
/// kernel for the format or this CPU.
fn qgemm_forward(q: &QTensor, x: &Tensor) -> Result<Option<Tensor>> {
    if !q.device().is_cpu() || !qgemm::enabled() {
        return Ok(None);
    }
    let (n, k) = q.shape().dims2()?;
    let rows = x.elem_count() / k;
    let xs = x.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let Some(y) = qgemm::matmul(q.dtype(), &q.data()?, n, k, &xs, rows) else { return Ok(None) };
    let mut shape = x.dims().to_vec();
    *shape.last_mut().expect("rank >= 1") = n;
    Ok(Some(Tensor::from_vec(y, shape, x.device())?))
}

/// The GEMM for a weight of this dtype: with a bf16 weight (exact in bf16) and AMX, x
/// enters as two bf16 parts (`AmxSplit`), so the product keeps f32-like accuracy at AMX
/// speed; an f32 weight uses the f32 kernel.
pub fn precision(weight: candle_core::DType) -> gemm::Precision {
    if weight == candle_core::DType::BF16 {
        gemm::Precision::AmxSplit
    } else {
        gemm::Precision::F32
    }
}

/// `T` of a `(B, T, in)` input; the row count of a `(rows, in)` one.
fn tokens_per_row(x: &Tensor) -> usize {
    let d = x.dims();
    if d.len() >= 2 {
        d[d.len() - 2]
    } else {
        1
    }
}

impl Linear {
    pub fn dense(w: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight: LinearWeight::Dense(w), bias, adapter: None }
    }

    pub fn quantized(q: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        let mm = QMatMul::from_arc(q.clone())?;
        Ok(Linear { weight: LinearWeight::Quant(q, mm), bias, adapter: None })
    }

    /// `x (..., in) -> (..., out)`, with the adapter's delta when there is one. Under
    /// training, a frozen weight passes gradients to `x` only (`ops::frozen_linear`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(a) = self.adapter.as_ref().filter(|a| a.enabled()) {
            if let Some(y) = a.fused(self, x)? {
                return Ok(y);
            }
        }
        let y = self.forward_base(x)?;
        match &self.adapter {
            Some(a) if a.enabled() => Ok((y + a.delta(x)?)?),
            _ => Ok(y),
        }
    }

    /// The projection without its adapter, as [`Self::forward`] computes it (a frozen
    /// weight passes gradients to `x` only); adapters that wrap the projection
    /// (`Delta::fused`) call it.
    pub fn forward_base(&self, x: &Tensor) -> Result<Tensor> {
        let trainable = matches!(&self.weight, LinearWeight::Dense(w) if w.track_op());
        if trainable {
            self.forward_plain(x)
        } else if let Some(y) = self.int8_prefill(x)? {
            Ok(y)
        } else {
            super::ops::frozen_linear(self, x)
        }
    }

    /// Several tokens per sequence against a quantized weight, where no gradient flows
    /// through `x` (inference: prefill, scoring), with `--int8-prefill`: int8 products on
    /// the blocks as they are, activations quantized per 32 values as llama.cpp does
    /// (`kernels/qgemm.rs`). Training keeps the f32 product that its backward pass is the
    /// gradient of (`forward_plain`).
    fn int8_prefill(&self, x: &Tensor) -> Result<Option<Tensor>> {
        match &self.weight {
            LinearWeight::Quant(q, _) if tokens_per_row(x) > 1 && !x.track_op() => Ok(qgemm_forward(q, x)?.map(|y| self.add_bias(y)).transpose()?),
            _ => Ok(None),
        }
    }

    /// The projection alone (no adapter), as candle differentiates it.
    pub fn forward_plain(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            LinearWeight::Dense(w) => {
                let dims = x.dims().to_vec();
                let (in_f, rows) = (dims[dims.len() - 1], x.elem_count() / dims[dims.len() - 1]);
                // Our GEMM reads W^T as a strided view and a bf16 weight as it is.
                let y = gemm::tensor::matmul_with(&x.reshape((rows, in_f))?, &w.t()?, precision(w.dtype()))?;
                let mut out = dims;
                *out.last_mut().expect("rank >= 1") = w.dim(0)?;
                y.reshape(out)?
            }
            LinearWeight::Quant(q, _) if tokens_per_row(x) > 1 => {
                // Several tokens per sequence (prefill, training): dequantizing once and
                // using the GEMM beats block dot products, whose cost grows with every
                // row (measured: 120 -> 468 prompt tok/s on SmolLM2). Deciding by tokens per
                // row, not total rows, keeps a sequence's numerics independent of how many
                // others share its batch.
                // f32: rounding the dequantized weight to bf16 for AMX changed greedy tokens
                // against llama.cpp on gemma3's Q8_0 export (tests/gguf_export.rs).
                let w = dequant::dequantize(q)?;
                let (in_f, rows) = (w.dim(1)?, x.elem_count() / w.dim(1)?);
                let y = gemm::tensor::matmul_with(&x.reshape((rows, in_f))?, &w.t()?, gemm::Precision::F32)?;
                let mut out = x.dims().to_vec();
                *out.last_mut().expect("rank >= 1") = w.dim(0)?;
                y.reshape(out)?
            }
            LinearWeight::Quant(q, mm) => match qgemv_forward(q, x)? {
                Some(y) => y,
                None => mm.forward(x)?,
            },
        };
        self.add_bias(y)
    }

    fn add_bias(&self, y: Tensor) -> Result<Tensor> {
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// `(out, in)`.
    pub fn shape(&self) -> Result<(usize, usize)> {
        Ok(match &self.weight {
            LinearWeight::Dense(w) => w.dims2()?,
            LinearWeight::Quant(q, _) => q.shape().dims2()?,
        })
    }

    /// The weight as a dense `(out, in)` f32 tensor.
    pub fn dense_weight(&self) -> Result<Tensor> {
        Ok(match &self.weight {
            LinearWeight::Dense(w) => w.to_dtype(candle_core::DType::F32)?,
            LinearWeight::Quant(q, _) => dequant::dequantize(q)?,
        })
    }

    /// Rows `r0..r1` of the weight as f32 values, row-major, without a dense copy of
    /// the rest (a quantized weight dequantizes just those rows).
    pub fn dense_rows(&self, r0: usize, r1: usize) -> Result<Vec<f32>> {
        Ok(match &self.weight {
            LinearWeight::Dense(w) => w.narrow(0, r0, r1 - r0)?.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            LinearWeight::Quant(q, _) => dequant::dequantize_rows(q, r0, r1)?,
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
