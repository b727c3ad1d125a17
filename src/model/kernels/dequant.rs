//! GGUF blocks to f32, as prefill needs them before the f32 GEMM. candle's
//! `QTensor::dequantize` runs one thread of plain loops (whose speed depends on the
//! compile-time target features); this spreads the blocks over the rayon pool and, where
//! AVX2 is detected at run time, expands the block types of real GGUF files with SIMD.
//! Results are bit-identical to candle's `to_float` (same operations, same order).
use crate::Result;
use candle_core::quantized::k_quants::*;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

/// Values per rayon task: large enough to amortise the task, small enough to balance.
const TASK_VALUES: usize = 32 * 1024;

/// `q` as a dense f32 tensor of its shape.
pub fn dequantize(q: &QTensor) -> Result<Tensor> {
    if !q.device().is_cpu() {
        return Ok(q.dequantize(&q.device())?);
    }
    let w = q.data()?;
    let n = q.shape().elem_count();
    let ys = match q.dtype() {
        GgmlDType::Q4_0 => run::<BlockQ4_0>(&w, n),
        GgmlDType::Q4_1 => run::<BlockQ4_1>(&w, n),
        GgmlDType::Q5_0 => run::<BlockQ5_0>(&w, n),
        GgmlDType::Q5_1 => run::<BlockQ5_1>(&w, n),
        GgmlDType::Q8_0 => run::<BlockQ8_0>(&w, n),
        GgmlDType::Q2K => run::<BlockQ2K>(&w, n),
        GgmlDType::Q3K => run::<BlockQ3K>(&w, n),
        GgmlDType::Q4K => run::<BlockQ4K>(&w, n),
        GgmlDType::Q5K => run::<BlockQ5K>(&w, n),
        GgmlDType::Q6K => run::<BlockQ6K>(&w, n),
        _ => return Ok(q.dequantize(&q.device())?),
    };
    Ok(Tensor::from_vec(ys, q.shape(), &Device::Cpu)?)
}

/// Rows `r0..r1` of a 2-D `q (rows, cols)` as f32, row-major: a slice of the whole
/// dequantization (bit-identical), without dequantizing the rest. GGUF rows are whole
/// blocks, so a row range is a byte range. Block types without our expansion dequantize
/// the whole tensor and copy the rows out.
pub fn dequantize_rows(q: &QTensor, r0: usize, r1: usize) -> Result<Vec<f32>> {
    let (rows, cols) = q.shape().dims2()?;
    if r0 > r1 || r1 > rows {
        return Err(candle_core::Error::Msg(format!("dequantize_rows: rows {r0}..{r1} of {rows}")).into());
    }
    let block = q.dtype().block_size();
    if !q.device().is_cpu() || cols % block != 0 {
        return Ok(dequantize(q)?.narrow(0, r0, r1 - r0)?.flatten_all()?.to_vec1::<f32>()?);
    }
    let w = q.data()?;
    let row_bytes = cols / block * q.dtype().type_size();
    let part = &w[r0 * row_bytes..r1 * row_bytes];
    let n = (r1 - r0) * cols;
    Ok(match q.dtype() {
        GgmlDType::Q4_0 => run::<BlockQ4_0>(part, n),
        GgmlDType::Q4_1 => run::<BlockQ4_1>(part, n),
        GgmlDType::Q5_0 => run::<BlockQ5_0>(part, n),
        GgmlDType::Q5_1 => run::<BlockQ5_1>(part, n),
        GgmlDType::Q8_0 => run::<BlockQ8_0>(part, n),
        GgmlDType::Q2K => run::<BlockQ2K>(part, n),
        GgmlDType::Q3K => run::<BlockQ3K>(part, n),
        GgmlDType::Q4K => run::<BlockQ4K>(part, n),
        GgmlDType::Q5K => run::<BlockQ5K>(part, n),
        GgmlDType::Q6K => run::<BlockQ6K>(part, n),
        _ => dequantize(q)?.narrow(0, r0, r1 - r0)?.flatten_all()?.to_vec1::<f32>()?,
    })
}

/// One task's work: raw blocks to their values.
type Kernel = unsafe fn(&[u8], &mut [f32]);

/// Our SIMD expansion of `dtype`, when this CPU has it.
fn simd_kernel(dtype: GgmlDType) -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c") {
        return match dtype {
            GgmlDType::Q4_0 => Some(x86::q4_0 as Kernel),
            GgmlDType::Q4_1 => Some(x86::q4_1 as Kernel),
            GgmlDType::Q5_0 => Some(x86::q5_0 as Kernel),
            GgmlDType::Q5_1 => Some(x86::q5_1 as Kernel),
            GgmlDType::Q8_0 => Some(x86::q8_0 as Kernel),
            GgmlDType::Q4K => Some(x86::q4k as Kernel),
            GgmlDType::Q6K => Some(x86::q6k as Kernel),
            _ => None,
        };
    }
    let _ = dtype;
    None
}

/// `w` (raw GGUF bytes of `n` values of block type `T`) to f32, in parallel.
pub fn run<T: GgmlType + Sync>(w: &[u8], n: usize) -> Vec<f32> {
    assert!(n.is_multiple_of(T::BLCK_SIZE));
    let blocks = super::ggml_gemv::as_blocks::<T>(w, n / T::BLCK_SIZE);
    let simd = simd_kernel(T::DTYPE);
    let per_task = (TASK_VALUES / T::BLCK_SIZE).max(1);
    let mut ys = vec![0f32; n];
    let tasks = ys.par_chunks_mut(per_task * T::BLCK_SIZE).zip(w.par_chunks(per_task * std::mem::size_of::<T>()));
    tasks.zip(blocks.par_chunks(per_task)).for_each(|((y, raw), b)| match simd {
        // SAFETY: the kernel's features were detected; `raw` holds y.len() / BLCK_SIZE blocks.
        Some(kernel) => unsafe { kernel(raw, y) },
        None => T::to_float(b, y),
    });
    ys
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::qgemv::x86::{f16_ptr, f16x2, high_bits, nibbles, u32_at};
    use std::arch::x86_64::*;

    /// 32 i8 values times `d` (the first 16 by `d[0]`, the rest by `d[1]`), plus `m` when
    /// `ADD`, to 32 floats: `(q as f32) * d + m`, as candle's scalar code rounds it.
    #[inline(always)]
    unsafe fn put32<const ADD: bool>(q: __m256i, d: [__m256; 2], m: __m256, y: *mut f32) {
        let (lo, hi) = (_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        for (i, part) in [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)].into_iter().enumerate() {
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part)), d[i / 2]);
            _mm256_storeu_ps(y.add(8 * i), if ADD { _mm256_add_ps(v, m) } else { v });
        }
    }

    /// The loop of the 32-value formats: `expand` gives a block's 32 quants (i8), its
    /// scale and its offset.
    #[inline(always)]
    unsafe fn blocks32<const ADD: bool>(w: &[u8], bytes: usize, y: &mut [f32], expand: impl Fn(*const u8) -> (__m256i, f32, f32)) {
        for (b, out) in w.chunks_exact(bytes).zip(y.chunks_exact_mut(32)) {
            let (q, d, m) = expand(b.as_ptr());
            let d = _mm256_set1_ps(d);
            put32::<ADD>(q, [d, d], _mm256_set1_ps(m), out.as_mut_ptr());
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn q4_0(w: &[u8], y: &mut [f32]) {
        // d * (q - 8)
        blocks32::<false>(w, 18, y, |b| (_mm256_sub_epi8(nibbles(b.add(2)), _mm256_set1_epi8(8)), f16x2(b).0, 0.0))
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn q4_1(w: &[u8], y: &mut [f32]) {
        // d * q + m
        blocks32::<true>(w, 20, y, |b| {
            let (d, m) = f16x2(b);
            (nibbles(b.add(4)), d, m)
        })
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn q5_0(w: &[u8], y: &mut [f32]) {
        // d * ((q | h << 4) - 16)
        blocks32::<false>(w, 22, y, |b| {
            let q = _mm256_or_si256(nibbles(b.add(6)), high_bits(u32_at(b.add(2))));
            (_mm256_sub_epi8(q, _mm256_set1_epi8(16)), f16x2(b).0, 0.0)
        })
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn q5_1(w: &[u8], y: &mut [f32]) {
        // d * (q | h << 4) + m
        blocks32::<true>(w, 24, y, |b| {
            let (d, m) = f16x2(b);
            (_mm256_or_si256(nibbles(b.add(8)), high_bits(u32_at(b.add(4)))), d, m)
        })
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn q8_0(w: &[u8], y: &mut [f32]) {
        blocks32::<false>(w, 34, y, |b| (_mm256_loadu_si256(b.add(2) as *const __m256i), f16x2(b).0, 0.0))
    }

    /// Q4_K's 6-bit scale and min of sub-block `j` (ggml's `get_scale_min_k4`).
    #[inline(always)]
    fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
        if j < 4 {
            (q[j] & 63, q[j + 4] & 63)
        } else {
            ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
        }
    }

    /// Q4_K: d, dmin (f16), 12 bytes of scales and mins, 128 bytes of nibbles; 64 values per
    /// 32 bytes (low nibbles by sub-block 2j, high by 2j + 1): `d * sc * q - dmin * m`.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn q4k(w: &[u8], y: &mut [f32]) {
        for (b, out) in w.chunks_exact(144).zip(y.chunks_exact_mut(256)) {
            let (d, min) = f16x2(b.as_ptr());
            let scales = &b[4..16];
            for j in 0..4 {
                let bits = _mm256_loadu_si256(b.as_ptr().add(16 + 32 * j) as *const __m256i);
                let lo = _mm256_and_si256(bits, _mm256_set1_epi8(0xF));
                let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), _mm256_set1_epi8(0xF));
                for (h, q) in [lo, hi].into_iter().enumerate() {
                    let (sc, m) = scale_min_k4(2 * j + h, scales);
                    let dl = _mm256_set1_ps(d * sc as f32);
                    // x - m1 == x + (-m1) in IEEE arithmetic.
                    put32::<true>(q, [dl, dl], _mm256_set1_ps(-(min * m as f32)), out.as_mut_ptr().add(64 * j + 32 * h));
                }
            }
        }
    }

    /// Q6_K: 128 bytes of low nibbles, 64 of 2-bit highs, 16 i8 scales, d (f16); each half
    /// of 128 values takes 64 low bytes and 32 high bytes: `d * sc * (q - 32)`.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn q6k(w: &[u8], y: &mut [f32]) {
        let (m4, m2) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(3));
        for (b, out) in w.chunks_exact(210).zip(y.chunks_exact_mut(256)) {
            let p = b.as_ptr();
            let d = f16_ptr(p.add(208));
            for half in 0..2 {
                let ql0 = _mm256_loadu_si256(p.add(64 * half) as *const __m256i);
                let ql1 = _mm256_loadu_si256(p.add(64 * half + 32) as *const __m256i);
                let qh = _mm256_loadu_si256(p.add(128 + 32 * half) as *const __m256i);
                let high = |s: i32| _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(s)), m2), 4);
                let qs = [
                    _mm256_or_si256(_mm256_and_si256(ql0, m4), high(0)),
                    _mm256_or_si256(_mm256_and_si256(ql1, m4), high(2)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), high(4)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), high(6)),
                ];
                for (i, q) in qs.into_iter().enumerate() {
                    // Values 32i..32i+32 of this half use scales 2i and 2i + 1 (16 each).
                    let sc = |s: usize| _mm256_set1_ps(d * *p.add(192 + 8 * half + 2 * i + s) as i8 as f32);
                    let q = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
                    put32::<false>(q, [sc(0), sc(1)], _mm256_setzero_ps(), out.as_mut_ptr().add(128 * half + 32 * i));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(dtype: GgmlDType, k: usize) {
        // Rows of random values, some blocks all zero, enough blocks for several tasks.
        let n = 2 * TASK_VALUES / k + 3;
        let mut w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        w = w.slice_assign(&[0..1, 0..k], &Tensor::zeros((1, k), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let want = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = dequantize(&q).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got.len(), want.len());
        let bad = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
        assert!(bad.is_none(), "{dtype:?} value {}: {} vs candle {}", bad.unwrap(), got[bad.unwrap()], want[bad.unwrap()]);
    }

    #[test]
    fn dequantize_matches_candle_bit_for_bit() {
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1, GgmlDType::Q8_0] {
            check(dtype, 96);
        }
        for dtype in [GgmlDType::Q2K, GgmlDType::Q3K, GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K] {
            check(dtype, 512);
        }
    }
}
