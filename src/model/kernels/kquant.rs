//! Matrix-vector products against GGUF K-quant blocks (Q2_K .. Q6_K, the bulk of
//! llama.cpp's `_K_M` files), with activations quantized to Q8_K as ggml does.
//!
//! The AVX2 dot products are candle's `quantized/avx.rs` (a port of ggml's; both MIT /
//! Apache-2.0) moved onto raw GGUF bytes, with the same operations in the same order, so
//! results match candle's bit for bit. They are chosen at run time; without AVX2, candle's
//! own `vec_dot` runs (NEON on aarch64, plain code elsewhere).
use super::ggml_gemv;
use candle_core::quantized::k_quants::*;
use candle_core::quantized::GgmlDType;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx2") && has!("fma") && has!("f16c")
}

/// `x` (a multiple of 256 values) as Q8_K blocks: candle's `from_float`, bit for bit.
pub fn quantize_q8k(x: &[f32]) -> Vec<BlockQ8K> {
    assert!(x.len().is_multiple_of(QK_K));
    let mut q = vec![BlockQ8K::zeros(); x.len() / QK_K];
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        for (blk, xs) in q.iter_mut().zip(x.chunks_exact(QK_K)) {
            // SAFETY: features detected; `blk` is one BlockQ8K, `xs` 256 values.
            unsafe { x86::quantize_q8k(xs, blk as *mut BlockQ8K as *mut u8) };
        }
        return q;
    }
    BlockQ8K::from_float(x, &mut q);
    q
}

/// One weight row (raw blocks) against one quantized activation row.
type Dot = unsafe fn(&[u8], &[BlockQ8K]) -> f32;
/// One weight row against four activation rows, each result equal to `Dot`'s.
type Dot4 = unsafe fn(&[u8], [&[BlockQ8K]; 4]) -> [f32; 4];

/// The four-row kernel for a K-quant type (Q4_K and Q6_K, the formats of Q4_K_M files),
/// when this CPU has AVX2.
fn avx2_dot4(dtype: GgmlDType) -> Option<Dot4> {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        return match dtype {
            GgmlDType::Q4K => Some(x86::dot_q4k_x4 as Dot4),
            GgmlDType::Q6K => Some(x86::dot_q6k_x4 as Dot4),
            _ => None,
        };
    }
    let _ = dtype;
    None
}

/// Block bytes and our AVX2 dot product for a K-quant type, when this CPU has AVX2.
fn avx2_dot(dtype: GgmlDType) -> Option<(usize, Dot)> {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        return match dtype {
            GgmlDType::Q2K => Some((84, x86::dot_q2k as Dot)),
            GgmlDType::Q3K => Some((110, x86::dot_q3k as Dot)),
            GgmlDType::Q4K => Some((144, x86::dot_q4k as Dot)),
            GgmlDType::Q5K => Some((176, x86::dot_q5k as Dot)),
            GgmlDType::Q6K => Some((210, x86::dot_q6k as Dot)),
            _ => None,
        };
    }
    let _ = dtype;
    None
}

/// `y (m, n) = x (m, k) . W^T` for a K-quant `W` given as `n` rows of raw GGUF blocks;
/// `None` when `dtype` is not a K-quant.
pub fn matmul(dtype: GgmlDType, w: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Option<Vec<f32>> {
    let Some((bytes, dot)) = avx2_dot(dtype) else {
        return plain(dtype, w, n, k, x, m);
    };
    assert!(k.is_multiple_of(QK_K) && x.len() == m * k && w.len() == n * (k / QK_K) * bytes);
    let xq: Vec<Vec<BlockQ8K>> = (0..m).map(|i| quantize_q8k(&x[i * k..(i + 1) * k])).collect();
    let row_bytes = k / QK_K * bytes;
    let dot4 = avx2_dot4(dtype);
    let mut out_t = vec![0f32; n * m]; // (n, m): each task writes its own weight rows
    const CHUNK: usize = 16;
    out_t.par_chunks_mut(CHUNK * m).zip(w.par_chunks(CHUNK * row_bytes)).for_each(|(dst, rows)| {
        for (out, row) in dst.chunks_mut(m).zip(rows.chunks(row_bytes)) {
            // Batched decoding: four activation rows share each weight block's unpacking.
            let mut i = 0;
            if let Some(dot4) = dot4 {
                while i + 4 <= m {
                    // SAFETY: avx2_dot4 checked the features; each row holds k / 256 blocks.
                    out[i..i + 4].copy_from_slice(&unsafe { dot4(row, [&xq[i], &xq[i + 1], &xq[i + 2], &xq[i + 3]]) });
                    i += 4;
                }
            }
            for (o, xr) in out[i..].iter_mut().zip(&xq[i..]) {
                // SAFETY: avx2_dot checked the features; `row` and `xr` hold k / 256 blocks.
                *o = unsafe { dot(row, xr) };
            }
        }
    });
    Some(super::qgemv::transpose_out(out_t, n, m))
}

/// `matmul` through candle's per-block `vec_dot` (its own SIMD choice, or plain code).
pub fn plain(dtype: GgmlDType, w: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Option<Vec<f32>> {
    Some(match dtype {
        GgmlDType::Q2K => ggml_gemv::matmul::<BlockQ2K>(w, n, k, x, m),
        GgmlDType::Q3K => ggml_gemv::matmul::<BlockQ3K>(w, n, k, x, m),
        GgmlDType::Q4K => ggml_gemv::matmul::<BlockQ4K>(w, n, k, x, m),
        GgmlDType::Q5K => ggml_gemv::matmul::<BlockQ5K>(w, n, k, x, m),
        GgmlDType::Q6K => ggml_gemv::matmul::<BlockQ6K>(w, n, k, x, m),
        _ => return None,
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::qgemv::x86::{f16_ptr, f16x2, hmax, pack_i8, round_i8};
    use super::{BlockQ8K, QK_K};
    use std::arch::x86_64::*;

    /// candle's `BlockQ8K` (repr(C)): d (f32), 256 i8 quants, 16 sums of 16 quants (i16).
    const Q8K_QS: usize = 4;
    const Q8K_BSUMS: usize = 4 + QK_K;
    const _: () = assert!(std::mem::size_of::<BlockQ8K>() == Q8K_BSUMS + 2 * QK_K / 16);

    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }

    /// 16-bit lanes shifted right by a count known at each (unrolled) call site.
    #[inline(always)]
    unsafe fn srl(x: __m256i, n: usize) -> __m256i {
        _mm256_srl_epi16(x, _mm_cvtsi32_si128(n as i32))
    }

    #[inline(always)]
    unsafe fn sll(x: __m256i, n: usize) -> __m256i {
        _mm256_sll_epi16(x, _mm_cvtsi32_si128(n as i32))
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// The Q8_K block `y`: (pointer to its bytes, its scale).
    #[inline(always)]
    unsafe fn q8k(y: &BlockQ8K) -> (*const u8, f32) {
        let p = y as *const BlockQ8K as *const u8;
        (p, *(p as *const f32))
    }

    /// Shuffle broadcasting 16-bit scale `i` of a 128-bit lane to the whole lane.
    #[inline(always)]
    unsafe fn word(i: usize) -> __m128i {
        _mm_set1_epi16((((2 * i + 1) << 8) | (2 * i)) as i16)
    }

    /// Shuffle for scales duplicated in both lanes: scale `i` everywhere (candle's
    /// `get_scale_shuffle_k4`).
    #[inline(always)]
    unsafe fn shuffle_k4(i: usize) -> __m256i {
        _mm256_set_m128i(word(i), word(i))
    }

    /// Scale `2i` in the low lane, `2i + 1` in the high one (`get_scale_shuffle_q3k`).
    #[inline(always)]
    unsafe fn shuffle_q3k(i: usize) -> __m256i {
        _mm256_set_m128i(word(2 * i + 1), word(2 * i))
    }

    /// Q4_K / Q5_K's 12 bytes of 6-bit scales and mins as 8 scales then 8 mins (u8).
    #[inline(always)]
    unsafe fn k4_scales(p: *const u8) -> __m128i {
        const KMASK1: u32 = 0x3f3f3f3f;
        const KMASK2: u32 = 0x0f0f0f0f;
        const KMASK3: u32 = 0x03030303;
        let u = |i: usize| u32::from_le_bytes([*p.add(4 * i), *p.add(4 * i + 1), *p.add(4 * i + 2), *p.add(4 * i + 3)]);
        let (u0, u1, u2) = (u(0), u(1), u(2));
        let t3 = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
        let t1 = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
        _mm_set_epi32(t3 as i32, (u1 & KMASK1) as i32, t1 as i32, (u0 & KMASK1) as i32)
    }

    /// Q4_K block: d, dmin (f16), 12 bytes of scales / mins, 128 bytes of nibbles.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        let m4 = _mm256_set1_epi8(0xF);
        let (mut acc, mut acc_m) = (_mm256_setzero_ps(), _mm_setzero_ps());
        for (b, y) in w.chunks_exact(144).zip(x) {
            let (p, (q8, yd)) = (b.as_ptr(), q8k(y));
            let (d, dmin) = f16x2(p);
            let (d, dmin) = (yd * d, -yd * dmin);
            let mins_and_scales = _mm256_cvtepu8_epi16(k4_scales(p.add(4)));
            // The mins' term against the activations' 16-value sums.
            let q8sums = load(q8.add(Q8K_BSUMS));
            let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(q8sums), _mm256_extracti128_si256(q8sums, 1));
            let prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
            acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
            let sc128 = _mm256_castsi256_si128(mins_and_scales);
            let scales = _mm256_set_m128i(sc128, sc128);
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let q4bits = load(p.add(16 + 32 * j));
                let q4l = _mm256_and_si256(q4bits, m4);
                let q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
                let p16l = _mm256_maddubs_epi16(q4l, load(q8.add(Q8K_QS + 64 * j)));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_shuffle_epi8(scales, shuffle_k4(2 * j)), p16l));
                let p16h = _mm256_maddubs_epi16(q4h, load(q8.add(Q8K_QS + 64 * j + 32)));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_shuffle_epi8(scales, shuffle_k4(2 * j + 1)), p16h));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        let acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
        hsum(acc) + _mm_cvtss_f32(_mm_add_ss(acc_m, _mm_movehdup_ps(acc_m)))
    }

    /// Q5_K block: d, dmin, 12 bytes of scales / mins, 32 bytes of high bits, 128 of nibbles.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q5k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        let (m4, mone) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(1));
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0f32;
        for (b, y) in w.chunks_exact(176).zip(x) {
            let (p, (q8, yd)) = (b.as_ptr(), q8k(y));
            let (d, dmin) = f16x2(p);
            let (d, dmin) = (yd * d, -yd * dmin);
            let mins_and_scales = _mm256_cvtepu8_epi16(k4_scales(p.add(4)));
            let q8sums = load(q8.add(Q8K_BSUMS));
            let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(q8sums), _mm256_extracti128_si256(q8sums, 1));
            let prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
            let zero = _mm_setzero_si128();
            summs += dmin * _mm_extract_epi32(_mm_hadd_epi32(_mm_hadd_epi32(prod, zero), zero), 0) as f32;
            let sc128 = _mm256_castsi256_si128(mins_and_scales);
            let scales = _mm256_set_m128i(sc128, sc128);
            let hbits = load(p.add(16));
            let mut hmask = mone;
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let q5bits = load(p.add(48 + 32 * j));
                let q5_0 = _mm256_add_epi8(_mm256_and_si256(q5bits, m4), _mm256_slli_epi16(srl(_mm256_and_si256(hbits, hmask), 2 * j), 4));
                hmask = _mm256_slli_epi16(hmask, 1);
                let q5l_1 = _mm256_and_si256(_mm256_srli_epi16(q5bits, 4), m4);
                let q5_1 = _mm256_add_epi8(q5l_1, _mm256_slli_epi16(srl(_mm256_and_si256(hbits, hmask), 2 * j + 1), 4));
                hmask = _mm256_slli_epi16(hmask, 1);
                let p16_0 = _mm256_maddubs_epi16(q5_0, load(q8.add(Q8K_QS + 64 * j)));
                let p16_1 = _mm256_maddubs_epi16(q5_1, load(q8.add(Q8K_QS + 64 * j + 32)));
                let p16_0 = _mm256_madd_epi16(_mm256_shuffle_epi8(scales, shuffle_k4(2 * j)), p16_0);
                let p16_1 = _mm256_madd_epi16(_mm256_shuffle_epi8(scales, shuffle_k4(2 * j + 1)), p16_1);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_1));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum(acc) + summs
    }

    /// Half `j` of a Q6_K block's quants (unsigned, 0..63), as four vectors of 32.
    #[inline(always)]
    unsafe fn q6k_quants(p: *const u8, j: usize, m4: __m256i, m2: __m256i) -> [__m256i; 4] {
        let (bits1, bits2, bits_h) = (load(p.add(64 * j)), load(p.add(64 * j + 32)), load(p.add(128 + 32 * j)));
        let high = |s: usize| _mm256_slli_epi16(_mm256_and_si256(srl(bits_h, s), m2), 4);
        [
            _mm256_or_si256(_mm256_and_si256(bits1, m4), high(0)),
            _mm256_or_si256(_mm256_and_si256(bits2, m4), high(2)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits1, 4), m4), high(4)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits2, 4), m4), high(6)),
        ]
    }

    /// Q6_K block: 128 bytes of low nibbles, 64 of 2-bit highs, 16 i8 scales, d (f16).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q6k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        let (m4, m2, m32s) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(3), _mm256_set1_epi8(32));
        let mut acc = _mm256_setzero_ps();
        for (b, y) in w.chunks_exact(210).zip(x) {
            let (p, (q8, yd)) = (b.as_ptr(), q8k(y));
            let d = yd * f16_ptr(p.add(208));
            let scales = _mm_loadu_si128(p.add(192) as *const __m128i);
            let mut sumi = _mm256_setzero_si256();
            for j in 0..2 {
                let qs = q6k_quants(p, j, m4, m2);
                let mut p16 = [_mm256_setzero_si256(); 4];
                for (i, q) in qs.into_iter().enumerate() {
                    let q8 = load(q8.add(Q8K_QS + 128 * j + 32 * i));
                    // Weights are q - 32: the 32 * x part comes off the unsigned product.
                    let p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, q8), _mm256_maddubs_epi16(m32s, q8));
                    // Scales 8j + 2i and 8j + 2i + 1, 8 copies each (`get_scale_shuffle`).
                    let s = (8 * j + 2 * i) as i64 * 0x0101010101010101;
                    let sc = _mm_shuffle_epi8(scales, _mm_set_epi64x(s + 0x0101010101010101, s));
                    p16[i] = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc), p);
                }
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16[0], p16[1]));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16[2], p16[3]));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum(acc)
    }

    /// `dot_q4k` of one weight row against 4 activation rows: each block's nibbles and
    /// scales are unpacked once for all four; every row's sums run in `dot_q4k`'s order, so
    /// each result is bit-identical to it.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4k_x4(w: &[u8], xs: [&[BlockQ8K]; 4]) -> [f32; 4] {
        let m4 = _mm256_set1_epi8(0xF);
        let (mut acc, mut acc_m) = ([_mm256_setzero_ps(); 4], [_mm_setzero_ps(); 4]);
        for (bi, b) in w.chunks_exact(144).enumerate() {
            let p = b.as_ptr();
            let (d, dmin) = f16x2(p);
            let mins_and_scales = _mm256_cvtepu8_epi16(k4_scales(p.add(4)));
            let mins = _mm256_extracti128_si256(mins_and_scales, 1);
            let sc128 = _mm256_castsi256_si128(mins_and_scales);
            let scales = _mm256_set_m128i(sc128, sc128);
            let mut sumi = [_mm256_setzero_si256(); 4];
            let mut q8p = [std::ptr::null::<u8>(); 4];
            for r in 0..4 {
                let (q8, yd) = q8k(&xs[r][bi]);
                q8p[r] = q8;
                let q8sums = load(q8.add(Q8K_BSUMS));
                let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(q8sums), _mm256_extracti128_si256(q8sums, 1));
                acc_m[r] = _mm_fmadd_ps(_mm_set1_ps(-yd * dmin), _mm_cvtepi32_ps(_mm_madd_epi16(mins, q8s)), acc_m[r]);
            }
            for j in 0..4 {
                let q4bits = load(p.add(16 + 32 * j));
                let q4l = _mm256_and_si256(q4bits, m4);
                let q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
                let (sl, sh) = (_mm256_shuffle_epi8(scales, shuffle_k4(2 * j)), _mm256_shuffle_epi8(scales, shuffle_k4(2 * j + 1)));
                for r in 0..4 {
                    let p16l = _mm256_maddubs_epi16(q4l, load(q8p[r].add(Q8K_QS + 64 * j)));
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(sl, p16l));
                    let p16h = _mm256_maddubs_epi16(q4h, load(q8p[r].add(Q8K_QS + 64 * j + 32)));
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(sh, p16h));
                }
            }
            for r in 0..4 {
                let yd = *(q8p[r] as *const f32);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(yd * d), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
            }
        }
        let mut out = [0f32; 4];
        for r in 0..4 {
            let m = _mm_add_ps(acc_m[r], _mm_movehl_ps(acc_m[r], acc_m[r]));
            out[r] = hsum(acc[r]) + _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
        }
        out
    }

    /// `dot_q6k` of one weight row against 4 activation rows (the weights unpacked once;
    /// each result bit-identical to `dot_q6k`'s).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q6k_x4(w: &[u8], xs: [&[BlockQ8K]; 4]) -> [f32; 4] {
        let (m4, m2, m32s) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(3), _mm256_set1_epi8(32));
        let mut acc = [_mm256_setzero_ps(); 4];
        for (bi, b) in w.chunks_exact(210).enumerate() {
            let p = b.as_ptr();
            let wd = f16_ptr(p.add(208));
            let scales = _mm_loadu_si128(p.add(192) as *const __m128i);
            let q8p: [*const u8; 4] = std::array::from_fn(|r| q8k(&xs[r][bi]).0);
            let mut sumi = [_mm256_setzero_si256(); 4];
            for j in 0..2 {
                let qs = q6k_quants(p, j, m4, m2);
                let sc: [__m256i; 4] = std::array::from_fn(|i| {
                    let s = (8 * j + 2 * i) as i64 * 0x0101010101010101;
                    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, _mm_set_epi64x(s + 0x0101010101010101, s)))
                });
                for r in 0..4 {
                    let mut p16 = [_mm256_setzero_si256(); 4];
                    for i in 0..4 {
                        let q8 = load(q8p[r].add(Q8K_QS + 128 * j + 32 * i));
                        let pr = _mm256_sub_epi16(_mm256_maddubs_epi16(qs[i], q8), _mm256_maddubs_epi16(m32s, q8));
                        p16[i] = _mm256_madd_epi16(sc[i], pr);
                    }
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(p16[0], p16[1]));
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(p16[2], p16[3]));
                }
            }
            for r in 0..4 {
                let d = *(q8p[r] as *const f32) * wd;
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
            }
        }
        acc.map(|a| hsum(a))
    }

    /// Q3_K block: 32 bytes of high bits, 64 of 2-bit lows, 12 bytes of 6-bit scales, d.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q3k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        const KMASK1: u32 = 0x03030303;
        const KMASK2: u32 = 0x0f0f0f0f;
        let (m3, mone) = (_mm256_set1_epi8(3), _mm256_set1_epi8(1));
        let mut acc = _mm256_setzero_ps();
        for (b, y) in w.chunks_exact(110).zip(x) {
            let (p, (q8, yd)) = (b.as_ptr(), q8k(y));
            let d = yd * f16_ptr(p.add(108));
            let u = |i: usize| u32::from_le_bytes([*p.add(96 + 4 * i), *p.add(97 + 4 * i), *p.add(98 + 4 * i), *p.add(99 + 4 * i)]);
            let (a0, a1, a2) = (u(0), u(1), u(2));
            let scales128 = _mm_set_epi32(
                (((a1 >> 4) & KMASK2) | (((a2 >> 6) & KMASK1) << 4)) as i32,
                (((a0 >> 4) & KMASK2) | (((a2 >> 4) & KMASK1) << 4)) as i32,
                ((a1 & KMASK2) | (((a2 >> 2) & KMASK1) << 4)) as i32,
                ((a0 & KMASK2) | ((a2 & KMASK1) << 4)) as i32,
            );
            let all = _mm256_cvtepi8_epi16(_mm_sub_epi8(scales128, _mm_set1_epi8(32)));
            let (l, h) = (_mm256_castsi256_si128(all), _mm256_extracti128_si256(all, 1));
            let scales = [_mm256_set_m128i(l, l), _mm256_set_m128i(h, h)];
            let hbits = load(p);
            let mut sumi = _mm256_setzero_si256();
            for (j, scale) in scales.iter().enumerate() {
                let q3bits = load(p.add(32 + 32 * j));
                let mut p16 = [_mm256_setzero_si256(); 4];
                for (i, out) in p16.iter_mut().enumerate() {
                    let s = 4 * j + i;
                    let q3l = _mm256_and_si256(srl(q3bits, 2 * i), m3);
                    // 4 where the high bit is clear: subtracted from the 2 low bits.
                    let q3h = _mm256_slli_epi16(srl(_mm256_andnot_si256(hbits, sll(mone, s)), s), 2);
                    let q8v = load(q8.add(Q8K_QS + 128 * j + 32 * i));
                    let p = _mm256_sub_epi16(_mm256_maddubs_epi16(q3l, q8v), _mm256_maddubs_epi16(q3h, q8v));
                    *out = _mm256_madd_epi16(_mm256_shuffle_epi8(*scale, shuffle_q3k(i)), p);
                }
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_add_epi32(p16[0], p16[1]), _mm256_add_epi32(p16[2], p16[3])));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum(acc)
    }

    /// Q2_K block: 16 bytes of 4-bit scales and mins, 64 of 2-bit quants, d, dmin (f16).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q2k(w: &[u8], x: &[BlockQ8K]) -> f32 {
        let (m3, m4) = (_mm256_set1_epi8(3), _mm_set1_epi8(0xF));
        let mut acc = _mm256_setzero_ps();
        for (b, y) in w.chunks_exact(84).zip(x) {
            let (p, (q8, yd)) = (b.as_ptr(), q8k(y));
            // d, dmin end the block: 4 readable bytes, not f16x2's 8.
            let (d, dmin) = (yd * f16_ptr(p.add(80)), -yd * f16_ptr(p.add(82)));
            let mins_and_scales = _mm_loadu_si128(p as *const __m128i);
            let mins = _mm256_cvtepi8_epi16(_mm_and_si128(_mm_srli_epi16(mins_and_scales, 4), m4));
            let prod = _mm256_madd_epi16(mins, load(q8.add(Q8K_BSUMS)));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);
            let all = _mm256_cvtepi8_epi16(_mm_and_si128(mins_and_scales, m4));
            let (l, h) = (_mm256_castsi256_si128(all), _mm256_extracti128_si256(all, 1));
            let mut sumi = _mm256_setzero_si256();
            for (j, scale) in [_mm256_set_m128i(l, l), _mm256_set_m128i(h, h)].into_iter().enumerate() {
                let q2bits = load(p.add(16 + 32 * j));
                let mut p16 = [_mm256_setzero_si256(); 4];
                for (i, out) in p16.iter_mut().enumerate() {
                    let q2 = _mm256_and_si256(srl(q2bits, 2 * i), m3);
                    let prod = _mm256_maddubs_epi16(q2, load(q8.add(Q8K_QS + 128 * j + 32 * i)));
                    *out = _mm256_madd_epi16(_mm256_shuffle_epi8(scale, shuffle_q3k(i)), prod);
                }
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(_mm256_add_epi32(p16[0], p16[1]), _mm256_add_epi32(p16[2], p16[3])));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
        hsum(acc)
    }

    /// candle's `BlockQ8K::from_float` for one block: the scale is -127 over the first
    /// value of largest magnitude, quants round half away from zero (Rust's `round`).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize_q8k(x: &[f32], out: *mut u8) {
        let (xp, sign) = (x.as_ptr(), _mm256_set1_ps(-0.0));
        let mut vmax = _mm256_setzero_ps();
        for i in 0..32 {
            // NaNs lose (the second operand wins), as they do in candle's comparison.
            vmax = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xp.add(8 * i))), vmax);
        }
        let amax = hmax(vmax);
        if amax == 0.0 {
            std::ptr::write_bytes(out, 0, std::mem::size_of::<BlockQ8K>());
            return;
        }
        let max = *x.iter().find(|v| v.abs() == amax).expect("the maximum is one of the values");
        let iscale = -127f32 / max;
        let vs = _mm256_set1_ps(iscale);
        for g in 0..8 {
            let q: [__m256i; 4] = std::array::from_fn(|i| round_i8(_mm256_mul_ps(vs, _mm256_loadu_ps(xp.add(32 * g + 8 * i)))));
            _mm256_storeu_si256(out.add(Q8K_QS + 32 * g) as *mut __m256i, pack_i8(q));
        }
        for j in 0..16 {
            // Sum of 16 i8: biased to u8, summed by SAD, unbiased.
            let v = _mm_xor_si128(_mm_loadu_si128(out.add(Q8K_QS + 16 * j) as *const __m128i), _mm_set1_epi8(-128));
            let s = _mm_sad_epu8(v, _mm_setzero_si128());
            let sum = _mm_cvtsi128_si32(s) + _mm_extract_epi16(s, 4) - 16 * 128;
            (out.add(Q8K_BSUMS + 2 * j) as *mut i16).write_unaligned(sum as i16);
        }
        (out as *mut f32).write_unaligned(1.0 / iscale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn randn(n: usize, seed: f32) -> Vec<f32> {
        // Deterministic, varied magnitudes (a sum of incommensurate sines).
        (0..n).map(|i| ((i as f32 * 0.737 + seed).sin() * 3.0 + (i as f32 * 0.0123).cos()) * (1.0 + (i % 7) as f32)).collect()
    }

    #[test]
    fn q8k_quantizer_matches_candle() {
        let mut x = randn(5 * QK_K, 0.3);
        x[QK_K..2 * QK_K].fill(0.0); // an all-zero block
                                     // Exact halves: with max -127 the scale is 1, so 2.5 and -3.5 round away from zero.
        x[2 * QK_K] = -127.0;
        x[2 * QK_K + 1] = 2.5;
        x[2 * QK_K + 2] = -3.5;
        x[3 * QK_K + 5] = -50.0; // ties in magnitude: the first one sets the sign
        x[3 * QK_K + 9] = 50.0;
        x[3 * QK_K..4 * QK_K].iter_mut().filter(|v| v.abs() > 50.0).for_each(|v| *v /= 10.0);
        let mut want = vec![BlockQ8K::zeros(); 5];
        BlockQ8K::from_float(&x, &mut want);
        assert_eq!(quantize_q8k(&x), want);
    }

    /// Our AVX2 dot product of `T` against candle's plain reference (and its own AVX2, bit
    /// for bit) on random rows of `blocks` blocks.
    fn check_dot<T: GgmlType<VecDotType = BlockQ8K>>(blocks: usize) {
        let Some((bytes, dot)) = avx2_dot(T::DTYPE) else {
            return; // no AVX2 here: `plain` serves (checked by `matmul_matches_dequantized`)
        };
        let k = blocks * QK_K;
        let w = Tensor::from_vec(randn(3 * k, 1.1), (3, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, T::DTYPE).unwrap();
        let raw = q.data().unwrap();
        let wb = ggml_gemv::as_blocks::<T>(&raw, 3 * blocks);
        let xq = quantize_q8k(&randn(k, 2.9));
        for r in 0..3 {
            // SAFETY: avx2_dot detected the features; the row holds `blocks` blocks.
            let got = unsafe { dot(&raw[r * blocks * bytes..(r + 1) * blocks * bytes], &xq) };
            let row = &wb[r * blocks..(r + 1) * blocks];
            let reference = T::vec_dot_unopt(k, row, &xq);
            assert!((got - reference).abs() <= 1e-4 * (1.0 + reference.abs()), "{:?}: {got} vs plain {reference}", T::DTYPE);
            assert_eq!(got.to_bits(), T::vec_dot(k, row, &xq).to_bits(), "{:?}: differs from candle's AVX2", T::DTYPE);
        }
    }

    #[test]
    fn avx2_dots_match_candle() {
        for blocks in [1, 3] {
            check_dot::<BlockQ2K>(blocks);
            check_dot::<BlockQ3K>(blocks);
            check_dot::<BlockQ4K>(blocks);
            check_dot::<BlockQ5K>(blocks);
            check_dot::<BlockQ6K>(blocks);
        }
    }

    #[test]
    fn four_row_kernels_equal_the_one_row_dot_bit_for_bit() {
        let dev = Device::Cpu;
        let (n, k) = (5, 4 * QK_K);
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
            let Some(dot4) = avx2_dot4(dtype) else { return };
            let (bytes, dot) = avx2_dot(dtype).unwrap();
            let q = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap(), dtype).unwrap();
            let w = q.data().unwrap();
            let xs: Vec<Vec<BlockQ8K>> = (0..4).map(|i| quantize_q8k(&randn(k, 3.0 + i as f32))).collect();
            for row in w.chunks(k / QK_K * bytes) {
                // SAFETY: avx2_dot4 returned Some, so the CPU has AVX2.
                let four = unsafe { dot4(row, [&xs[0], &xs[1], &xs[2], &xs[3]]) };
                for (r, x) in xs.iter().enumerate() {
                    assert_eq!(four[r].to_bits(), unsafe { dot(row, x) }.to_bits(), "{dtype:?} row {r}");
                }
            }
            // Through matmul: 7 rows = one group of four and three single rows.
            let x = randn(7 * k, 9.0);
            let got = matmul(dtype, &w, n, k, &x, 7).unwrap();
            for i in 0..7 {
                let alone = matmul(dtype, &w, n, k, &x[i * k..(i + 1) * k], 1).unwrap();
                assert_eq!(got[i * n..(i + 1) * n], alone[..], "{dtype:?} row {i} of 7");
            }
        }
    }

    #[test]
    fn matmul_matches_dequantized() {
        let dev = Device::Cpu;
        let (n, k) = (37, 3 * QK_K); // a partial last chunk of rows
        for dtype in [GgmlDType::Q2K, GgmlDType::Q3K, GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K] {
            let q = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap(), dtype).unwrap();
            let wd = q.dequantize(&dev).unwrap();
            for m in [1, 3] {
                let x = randn(m * k, m as f32);
                // The kernels multiply Q8_K activations: compare with exactly those.
                let mut xd = vec![0f32; m * k];
                BlockQ8K::to_float(&(0..m).flat_map(|i| quantize_q8k(&x[i * k..(i + 1) * k])).collect::<Vec<_>>(), &mut xd);
                let xd = Tensor::from_vec(xd, (m, k), &dev).unwrap();
                let want = xd.matmul(&wd.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let got = matmul(dtype, &q.data().unwrap(), n, k, &x, m).unwrap();
                let fallback = plain(dtype, &q.data().unwrap(), n, k, &x, m).unwrap();
                for ((g, f), w) in got.iter().zip(&fallback).zip(&want) {
                    let tol = 1e-3 * (1.0 + w.abs());
                    assert!((g - w).abs() < tol && (f - w).abs() < tol, "{dtype:?} m={m}: {g} / candle {f} vs {w}");
                }
            }
        }
        assert!(matmul(GgmlDType::Q8_0, &[], 0, 32, &[], 0).is_none());
    }
}
