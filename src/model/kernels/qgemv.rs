//! Matrix-vector products against GGUF's 32-value block types (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0): those of our default models, and those candle has only scalar dot products for.
//!
//! Activations are quantized per 32 values to i8 (like ggml's Q8_1), and each block's dot
//! product runs on u8 x i8 SIMD multiplies. Output rows are split across threads.
use half::f16;
use rayon::prelude::*;

pub const QK: usize = 32;
/// Bytes per block: Q4_1 = d, m (f16) + 16 nibble bytes; Q5_0 = d (f16) + 4 high-bit bytes + 16.
pub const Q4_1_BYTES: usize = 20;
pub const Q5_0_BYTES: usize = 22;
/// Q8_0 = d (f16) + 32 signed bytes.
pub const Q8_0_BYTES: usize = 34;
/// Q4_0 = d (f16) + 16 nibble bytes; Q5_1 = d, m (f16) + 4 high-bit bytes + 16.
pub const Q4_0_BYTES: usize = 18;
pub const Q5_1_BYTES: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Q4_1,
    Q5_0,
    Q8_0,
    Q4_0,
    Q5_1,
}

impl Format {
    pub fn block_bytes(self) -> usize {
        match self {
            Format::Q4_1 => Q4_1_BYTES,
            Format::Q5_0 => Q5_0_BYTES,
            Format::Q8_0 => Q8_0_BYTES,
            Format::Q4_0 => Q4_0_BYTES,
            Format::Q5_1 => Q5_1_BYTES,
        }
    }
}

/// One row of activations quantized to i8 blocks.
pub struct QuantRow {
    pub qs: Vec<i8>,
    /// Per block: scale.
    pub d: Vec<f32>,
    /// Per block: sum of the i8 values.
    pub sum: Vec<i32>,
    /// Per block: the scale repeated 8 times (one SIMD lane per 4 products).
    pub dv: Vec<f32>,
    /// Per block: scale times sum (for the weights' offset terms).
    pub ds: Vec<f32>,
}

pub fn quantize_row(x: &[f32]) -> QuantRow {
    quantize_row_with(x, block_quantizer())
}

/// `quantize_row` with the given per-block quantizer (the tests compare the two).
pub fn quantize_row_with(x: &[f32], quantize: BlockQuantizer) -> QuantRow {
    let nb = x.len() / QK;
    let mut r = QuantRow { qs: vec![0; x.len()], d: vec![0.0; nb], sum: vec![0; nb], dv: vec![0.0; nb * 8], ds: vec![0.0; nb] };
    for b in 0..nb {
        // SAFETY: `block_quantizer` checked the features; both slices hold one block.
        let (d, s) = unsafe { quantize(&x[b * QK..(b + 1) * QK], &mut r.qs[b * QK..(b + 1) * QK]) };
        r.d[b] = d;
        r.sum[b] = s;
        r.dv[b * 8..(b + 1) * 8].fill(d);
        r.ds[b] = d * s as f32;
    }
    r
}

/// 32 values to i8 quants, returning (scale, sum of the quants).
pub type BlockQuantizer = unsafe fn(&[f32], &mut [i8]) -> (f32, i32);

/// The AVX2 quantizer where detected (the plain loop's `round` is a libm call without
/// SSE4.1 in the build's features, ~1 ms per SmolLM2 token).
pub fn block_quantizer() -> BlockQuantizer {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return x86::quantize_block;
    }
    quantize_block_scalar
}

/// Scale max |x| / 127, quants rounded half away from zero (Rust's `round`).
/// # Safety
/// Always safe to call (plain Rust); `unsafe` only to share [`BlockQuantizer`]'s type.
pub unsafe fn quantize_block_scalar(xs: &[f32], qs: &mut [i8]) -> (f32, i32) {
    let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut s = 0i32;
    for (q, &v) in qs.iter_mut().zip(xs) {
        *q = (v * id).round() as i8;
        s += *q as i32;
    }
    (d, s)
}

/// `y[m][n] = sum_k x[m][k] * W[n][k]` for `W` given as `n` rows of blocks.
/// `x` is `(m, k)` row-major; returns `(m, n)` row-major.
static UNIFORM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Use one kernel for every row count (batch-invariant results; the server sets it).
pub fn set_uniform_kernels(on: bool) {
    UNIFORM.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub fn matmul(format: Format, w: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    // One row: the AVX2 dot products (Zen 4 runs 512-bit ops as two 256-bit halves, and
    // the tiles' set-up does not pay off). Several rows (batched decoding): the AVX-512
    // VNNI tiles reuse each expanded weight block and run ~2x faster (`cargo run --release
    // --example qbench`). With uniform kernels (the server) the tiles serve every row
    // count, so a row's result is the same bits whatever else is in its batch.
    let uniform = UNIFORM.load(std::sync::atomic::Ordering::Relaxed);
    matmul_with(format, w, n, k, x, m, (m >= 2 || uniform) && avx512())
}

/// `matmul`, choosing the AVX-512 VNNI tiles (`wide`, where this CPU has them) or the
/// AVX2 / scalar dot products.
pub fn matmul_with(format: Format, w: &[u8], n: usize, k: usize, x: &[f32], m: usize, wide: bool) -> Vec<f32> {
    let wide = wide && avx512();
    assert!(k.is_multiple_of(QK) && x.len() == m * k && w.len() == n * (k / QK) * format.block_bytes());
    let rows: Vec<QuantRow> = (0..m).map(|i| quantize_row(&x[i * k..(i + 1) * k])).collect();
    let row_bytes = (k / QK) * format.block_bytes();
    let mut out_t = vec![0f32; n * m]; // (n, m): each task writes its own weight rows
    const CHUNK: usize = 16;
    let dot = dot_kernel(format);
    out_t.par_chunks_mut(CHUNK * m).enumerate().for_each(|(c, dst)| {
        for (j, wrow) in w[c * CHUNK * row_bytes..].chunks(row_bytes).take(dst.len() / m).enumerate() {
            let out = &mut dst[j * m..(j + 1) * m];
            if wide {
                // SAFETY: avx512() checked the features; rows hold k / QK blocks each.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    x86::rows_avx512(format, wrow, &rows, out)
                };
            } else {
                for (o, xr) in out.iter_mut().zip(&rows) {
                    // SAFETY: dot_kernel checked the features; sizes by the assert above.
                    *o = unsafe { dot(wrow, xr) };
                }
            }
        }
    });
    transpose_out(out_t, n, m)
}

/// `(n, m)` results, as the workers wrote them, to the `(m, n)` layout callers want.
pub fn transpose_out(out_t: Vec<f32>, n: usize, m: usize) -> Vec<f32> {
    if m == 1 {
        return out_t;
    }
    let mut out = vec![0f32; m * n];
    for j in 0..n {
        for i in 0..m {
            out[i * n + j] = out_t[j * m + i];
        }
    }
    out
}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vnni") && has!("f16c") && has!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A weight row's dot product with one activation row.
pub type DotFn = unsafe fn(&[u8], &QuantRow) -> f32;

/// The fastest dot product of `format` on this CPU: AVX2, or for the 5-bit formats the
/// same loop with AVX-512 BW/VL, whose mask registers expand the high bits (13% fewer
/// cycles for Q5_0 on a Xeon); the scalar reference without AVX2.
pub fn dot_kernel(format: Format) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") && has!("f16c") {
            let vl = has!("avx512bw") && has!("avx512vl");
            return match format {
                Format::Q5_0 if vl => x86::dot_q5_0_vl as DotFn,
                Format::Q5_1 if vl => x86::dot_q5_1_vl as DotFn,
                Format::Q4_1 => x86::dot_q4_1 as DotFn,
                Format::Q5_0 => x86::dot_q5_0 as DotFn,
                Format::Q8_0 => x86::dot_q8_0 as DotFn,
                Format::Q4_0 => x86::dot_q4_0 as DotFn,
                Format::Q5_1 => x86::dot_q5_1 as DotFn,
            };
        }
    }
    scalar_kernel(format)
}

/// The plain reference (and the fallback without AVX2).
pub fn scalar_kernel(format: Format) -> DotFn {
    match format {
        Format::Q4_1 => dot_q4_1_scalar,
        Format::Q5_0 => dot_q5_0_scalar,
        Format::Q8_0 => dot_q8_0_scalar,
        Format::Q4_0 => dot_q4_0_scalar,
        Format::Q5_1 => dot_q5_1_scalar,
    }
}

pub fn dot_q8_0_scalar(w: &[u8], x: &QuantRow) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(Q8_0_BYTES).enumerate() {
        let q = &x.qs[b * QK..];
        let s: i32 = (0..QK).map(|j| blk[2 + j] as i8 as i32 * q[j] as i32).sum();
        acc += f16_at(blk, 0) * x.d[b] * s as f32;
    }
    acc
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

pub fn dot_q4_1_scalar(w: &[u8], x: &QuantRow) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(Q4_1_BYTES).enumerate() {
        let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
        let q = &x.qs[b * QK..];
        let mut s = 0i32;
        for j in 0..16 {
            s += (blk[4 + j] & 0x0F) as i32 * q[j] as i32 + (blk[4 + j] >> 4) as i32 * q[j + 16] as i32;
        }
        acc += d * x.d[b] * s as f32 + m * x.d[b] * x.sum[b] as f32;
    }
    acc
}

pub fn dot_q4_0_scalar(w: &[u8], x: &QuantRow) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(Q4_0_BYTES).enumerate() {
        let q = &x.qs[b * QK..];
        let mut s = 0i32;
        for j in 0..16 {
            s += ((blk[2 + j] & 0x0F) as i32 - 8) * q[j] as i32 + ((blk[2 + j] >> 4) as i32 - 8) * q[j + 16] as i32;
        }
        acc += f16_at(blk, 0) * x.d[b] * s as f32;
    }
    acc
}

pub fn dot_q5_1_scalar(w: &[u8], x: &QuantRow) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(Q5_1_BYTES).enumerate() {
        let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
        let qh = u32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]);
        let q = &x.qs[b * QK..];
        let mut s = 0i32;
        for j in 0..16 {
            let lo = ((blk[8 + j] & 0x0F) as u32 | (((qh >> j) & 1) << 4)) as i32;
            let hi = ((blk[8 + j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4)) as i32;
            s += lo * q[j] as i32 + hi * q[j + 16] as i32;
        }
        acc += d * x.d[b] * s as f32 + m * x.d[b] * x.sum[b] as f32;
    }
    acc
}

pub fn dot_q5_0_scalar(w: &[u8], x: &QuantRow) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(Q5_0_BYTES).enumerate() {
        let d = f16_at(blk, 0);
        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        let q = &x.qs[b * QK..];
        let mut s = 0i32;
        for j in 0..16 {
            let lo = ((blk[6 + j] & 0x0F) as u32 | (((qh >> j) & 1) << 4)) as i32 - 16;
            let hi = ((blk[6 + j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4)) as i32 - 16;
            s += lo * q[j] as i32 + hi * q[j + 16] as i32;
        }
        acc += d * x.d[b] * s as f32;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::{Format, QuantRow, Q4_0_BYTES, Q4_1_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q8_0_BYTES, QK};
    use std::arch::x86_64::*;

    /// `quantize_block_scalar`, bit for bit.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_block(xs: &[f32], qs: &mut [i8]) -> (f32, i32) {
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(xs.as_ptr().add(8 * i)));
        let abs = |x: __m256| _mm256_andnot_ps(_mm256_set1_ps(-0.0), x);
        // NaNs lose (the second operand wins), as with f32::max.
        let m = v.iter().fold(_mm256_setzero_ps(), |m, &x| _mm256_max_ps(abs(x), m));
        let d = hmax(m) / 127.0;
        let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let q: [__m256i; 4] = std::array::from_fn(|i| round_i8(_mm256_mul_ps(v[i], id)));
        _mm256_storeu_si256(qs.as_mut_ptr() as *mut __m256i, pack_i8(q));
        let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        (d, _mm_cvtsi128_si32(s) + _mm_extract_epi32(s, 1))
    }

    /// The largest of 8 lanes.
    #[inline(always)]
    pub unsafe fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
    }

    /// Floats to i32s as Rust's `(v.round()) as i8` gives them: half away from zero,
    /// saturated to the i8 range, NaN to 0.
    #[inline(always)]
    pub unsafe fn round_i8(v: __m256) -> __m256i {
        let sign = _mm256_set1_ps(-0.0);
        let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        let up = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(v, t)), _mm256_set1_ps(0.5), _CMP_GE_OQ);
        let r = _mm256_add_ps(t, _mm256_and_ps(up, _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(v, sign))));
        let r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-128.0)), _mm256_set1_ps(127.0));
        _mm256_cvtps_epi32(_mm256_and_ps(r, _mm256_cmp_ps(v, v, _CMP_ORD_Q)))
    }

    /// 4 x 8 i32s in the i8 range to 32 bytes, in order.
    #[inline(always)]
    pub unsafe fn pack_i8(q: [__m256i; 4]) -> __m256i {
        let packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        // The packs interleave 128-bit lanes: put the 4-byte groups back in order.
        _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// 16 bytes of nibbles -> 32 bytes: low nibbles first (elements 0..16), then high.
    #[inline(always)]
    pub unsafe fn nibbles(p: *const u8) -> __m256i {
        let v = _mm_loadu_si128(p as *const __m128i);
        let lo = _mm_and_si128(v, _mm_set1_epi8(0x0F));
        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F));
        _mm256_set_m128i(hi, lo)
    }

    /// Sum of u8 x i8 products, as 8 i32 lanes turned into floats.
    #[inline(always)]
    unsafe fn dot_u8_i8(w: __m256i, x: __m256i) -> __m256 {
        let p16 = _mm256_maddubs_epi16(w, x);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Blocks per loop step: independent accumulators hide FMA latency.
    const U: usize = 4;

    /// Shared loop of the unsigned-weight formats: `expand` turns a block into 32 u8
    /// weights in activation order, its scale, and the coefficient c of its offset term,
    /// so that block . x = scale * x_d * (w_u8 . x_i8) + c * x_d * x_sum.
    #[inline(always)]
    unsafe fn dot_unsigned(w: &[u8], bytes: usize, x: &QuantRow, expand: impl Fn(*const u8) -> (__m256i, f32, f32)) -> f32 {
        let nb = w.len() / bytes;
        let (wp, xq, xd, xs) = (w.as_ptr(), x.qs.as_ptr(), x.d.as_ptr(), x.sum.as_ptr());
        let mut acc = [_mm256_setzero_ps(); U];
        let mut offs = [0f32; U];
        each_block(nb, |b, u| {
            let (wq, scale, coef) = expand(wp.add(b * bytes));
            let d = *xd.add(b);
            let q = _mm256_loadu_si256(xq.add(b * QK) as *const __m256i);
            acc[u] = _mm256_fmadd_ps(_mm256_set1_ps(scale * d), dot_u8_i8(wq, q), acc[u]);
            offs[u] += coef * d * *xs.add(b) as f32;
        });
        let acc = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        hsum(acc) + offs.iter().sum::<f32>()
    }

    /// `step(block, lane)` for `nb` blocks, block b on accumulator lane b % U, in groups of
    /// a fixed size and a tail of constant lanes: with a variable trip count, LLVM kept
    /// the accumulators on the stack in the x86-64 build (~25% slower than native).
    #[inline(always)]
    unsafe fn each_block(nb: usize, mut step: impl FnMut(usize, usize)) {
        const _: () = assert!(U == 4);
        let mut b = 0;
        while b + U <= nb {
            for u in 0..U {
                step(b + u, u);
            }
            b += U;
        }
        for u in 0..U - 1 {
            if b + u < nb {
                step(b + u, u);
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_1(w: &[u8], x: &QuantRow) -> f32 {
        // value = d * q + m
        dot_unsigned(w, Q4_1_BYTES, x, |blk| {
            let (d, m) = f16x2(blk);
            (nibbles(blk.add(4)), d, m)
        })
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q5_0(w: &[u8], x: &QuantRow) -> f32 {
        // value = d * (q - 16), q = 4 low bits | 1 high bit << 4
        dot_unsigned(w, Q5_0_BYTES, x, |blk| {
            let d = f16x2(blk).0;
            (_mm256_or_si256(nibbles(blk.add(6)), high_bits(u32_at(blk.add(2)))), d, -16.0 * d)
        })
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_0(w: &[u8], x: &QuantRow) -> f32 {
        // value = d * (q - 8)
        dot_unsigned(w, Q4_0_BYTES, x, |blk| {
            let d = f16x2(blk).0;
            (nibbles(blk.add(2)), d, -8.0 * d)
        })
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q5_1(w: &[u8], x: &QuantRow) -> f32 {
        // value = d * q + m, q = 4 low bits | 1 high bit << 4
        dot_unsigned(w, Q5_1_BYTES, x, |blk| {
            let (d, m) = f16x2(blk);
            (_mm256_or_si256(nibbles(blk.add(8)), high_bits(u32_at(blk.add(4)))), d, m)
        })
    }

    /// `dot_q5_0` with AVX-512 BW/VL: the high bits by a mask register, and 32 registers.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub unsafe fn dot_q5_0_vl(w: &[u8], x: &QuantRow) -> f32 {
        dot_unsigned(w, Q5_0_BYTES, x, |blk| {
            let d = f16x2(blk).0;
            (_mm256_or_si256(nibbles(blk.add(6)), high_bits_vl(u32_at(blk.add(2)))), d, -16.0 * d)
        })
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub unsafe fn dot_q5_1_vl(w: &[u8], x: &QuantRow) -> f32 {
        dot_unsigned(w, Q5_1_BYTES, x, |blk| {
            let (d, m) = f16x2(blk);
            (_mm256_or_si256(nibbles(blk.add(8)), high_bits_vl(u32_at(blk.add(4)))), d, m)
        })
    }

    /// `high_bits` through a mask register (AVX-512 BW/VL).
    #[inline(always)]
    unsafe fn high_bits_vl(qh: u32) -> __m256i {
        _mm256_maskz_mov_epi8(qh, _mm256_set1_epi8(0x10))
    }

    #[inline(always)]
    pub unsafe fn u32_at(p: *const u8) -> u32 {
        u32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
    }

    // f16 scales by F16C, in asm. Through the intrinsics, LLVM narrowed the load to a
    // 16-bit `vpinsrw` merging into whatever register it chose (in `dot_q5_0`, the offset
    // accumulator): a false dependency that chained every block's scale to the previous
    // block's sum, ~50% more cycles than the native build, which used AVX512-FP16 loads.
    // (`half`'s conversion would also check for F16C on every call in this build.)

    /// The two f16s at `p` as f32s; 8 bytes from `p` must be readable.
    #[inline(always)]
    pub unsafe fn f16x2(p: *const u8) -> (f32, f32) {
        let v: __m128;
        std::arch::asm!("vcvtph2ps {v}, qword ptr [{p}]", p = in(reg) p, v = out(xmm_reg) v, options(pure, readonly, nostack, preserves_flags));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }

    /// The f16 at `p`, where only its 2 bytes are readable (a block's last field).
    #[inline(always)]
    pub unsafe fn f16_ptr(p: *const u8) -> f32 {
        let v: __m128;
        std::arch::asm!(
            "movzx {t:e}, word ptr [{p}]",
            "vmovd {v}, {t:e}",
            "vcvtph2ps {v}, {v}",
            p = in(reg) p, t = out(reg) _, v = out(xmm_reg) v,
            options(pure, readonly, nostack, preserves_flags)
        );
        _mm_cvtss_f32(v)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_0(w: &[u8], x: &QuantRow) -> f32 {
        let nb = w.len() / Q8_0_BYTES;
        let (wp, xq, xd) = (w.as_ptr(), x.qs.as_ptr(), x.d.as_ptr());
        let mut acc = [_mm256_setzero_ps(); U];
        each_block(nb, |b, u| {
            let blk = wp.add(b * Q8_0_BYTES);
            let wq = _mm256_loadu_si256(blk.add(2) as *const __m256i);
            let q = _mm256_loadu_si256(xq.add(b * QK) as *const __m256i);
            // i8 x i8 through the u8 x i8 multiply: |w| times x carrying w's sign.
            let p = dot_u8_i8(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(q, wq));
            acc[u] = _mm256_fmadd_ps(_mm256_set1_ps(f16x2(blk).0 * *xd.add(b)), p, acc[u]);
        });
        hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])))
    }

    /// Two consecutive blocks' weights as 64 unsigned bytes in activation order, their two
    /// scales (lanes 0-7, 8-15) and the per-block offset coefficients c such that
    /// dot = scale * (u8 . i8) + c * (x_scale * x_sum).
    #[inline(always)]
    unsafe fn pair(format: Format, blk: *const u8) -> (__m512i, __m512, f32, f32) {
        let bytes = format.block_bytes();
        let b2 = blk.add(bytes);
        let ((da, ma), (db, mb)) = (f16x2(blk), f16x2(b2));
        let scales = _mm512_insertf32x8(_mm512_set1_ps(da), _mm256_set1_ps(db), 1);
        match format {
            Format::Q8_0 => {
                let lo = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                let hi = _mm256_loadu_si256(b2.add(2) as *const __m256i);
                let w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
                // Signed weights made unsigned by +128; the sum term takes it back.
                (_mm512_xor_si512(w, _mm512_set1_epi8(-128)), scales, -128.0 * da, -128.0 * db)
            }
            Format::Q4_1 => (nibble_pair(blk.add(4), b2.add(4)), scales, ma, mb),
            Format::Q5_0 => (five_bit_pair(blk, b2, 2), scales, -16.0 * da, -16.0 * db),
            Format::Q4_0 => (nibble_pair(blk.add(2), b2.add(2)), scales, -8.0 * da, -8.0 * db),
            Format::Q5_1 => (five_bit_pair(blk, b2, 4), scales, ma, mb),
        }
    }

    /// Two blocks' 5-bit quants (4 high-bit bytes at `qh`, then 16 nibble bytes) as 64 bytes.
    #[inline(always)]
    unsafe fn five_bit_pair(a: *const u8, b: *const u8, qh: usize) -> __m512i {
        let (ha, hb) = (u32_at(a.add(qh)) as u64, u32_at(b.add(qh)) as u64);
        let high = _mm512_maskz_mov_epi8(ha | (hb << 32), _mm512_set1_epi8(0x10));
        _mm512_or_si512(nibble_pair(a.add(qh + 4), b.add(qh + 4)), high)
    }

    /// Two blocks of 16 nibble bytes -> [a.lo, a.hi, b.lo, b.hi] as 64 bytes.
    #[inline(always)]
    unsafe fn nibble_pair(a: *const u8, b: *const u8) -> __m512i {
        let v = _mm256_set_m128i(_mm_loadu_si128(b as *const __m128i), _mm_loadu_si128(a as *const __m128i));
        let lo = _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F));
        let idx = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
        _mm512_permutex2var_epi64(_mm512_castsi256_si512(lo), idx, _mm512_castsi256_si512(hi))
    }

    /// One weight row against every activation row: `out[r] = W_row . x_r`.
    /// Weights are expanded once per pair of blocks and reused across rows in groups of 8.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni,fma,f16c")]
    pub unsafe fn rows_avx512(format: Format, w: &[u8], rows: &[QuantRow], out: &mut [f32]) {
        let mut r0 = 0;
        while r0 < rows.len() {
            let g = &rows[r0..(r0 + 8).min(rows.len())];
            let o = &mut out[r0..r0 + g.len()];
            match g.len() {
                8 => group::<8>(format, w, g, o),
                7 => group::<7>(format, w, g, o),
                6 => group::<6>(format, w, g, o),
                5 => group::<5>(format, w, g, o),
                4 => group::<4>(format, w, g, o),
                3 => group::<3>(format, w, g, o),
                2 => group::<2>(format, w, g, o),
                _ => group::<1>(format, w, g, o),
            }
            r0 += g.len();
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni,fma,f16c")]
    unsafe fn group<const R: usize>(format: Format, w: &[u8], rows: &[QuantRow], out: &mut [f32]) {
        let bytes = format.block_bytes();
        let nb = w.len() / bytes;
        let mut acc = [_mm512_setzero_ps(); R];
        let mut offs = [0f32; R];
        let mut b = 0;
        while b + 2 <= nb {
            let (wq, ws, ca, cb) = pair(format, w.as_ptr().add(b * bytes));
            for r in 0..R {
                let x = &rows[r];
                let q = _mm512_loadu_si512(x.qs.as_ptr().add(b * QK) as *const _);
                let p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, q));
                let scale = _mm512_mul_ps(ws, _mm512_loadu_ps(x.dv.as_ptr().add(b * 8)));
                acc[r] = _mm512_fmadd_ps(p, scale, acc[r]);
                offs[r] += ca * *x.ds.get_unchecked(b) + cb * *x.ds.get_unchecked(b + 1);
            }
            b += 2;
        }
        for r in 0..R {
            let mut v = _mm512_reduce_add_ps(acc[r]) + offs[r];
            if b < nb {
                // Odd block count: the last block through the AVX2 path.
                let tail = &w[b * bytes..];
                let x = &rows[r];
                let sub = QuantRow { qs: x.qs[b * QK..].to_vec(), d: x.d[b..].to_vec(), sum: x.sum[b..].to_vec(), dv: vec![], ds: vec![] };
                v += match format {
                    Format::Q4_1 => dot_q4_1(tail, &sub),
                    Format::Q5_0 => dot_q5_0(tail, &sub),
                    Format::Q8_0 => dot_q8_0(tail, &sub),
                    Format::Q4_0 => dot_q4_0(tail, &sub),
                    Format::Q5_1 => dot_q5_1(tail, &sub),
                };
            }
            out[r] = v;
        }
    }

    /// 32 high bits -> 32 bytes holding 0x10 where the bit is set.
    #[inline(always)]
    pub unsafe fn high_bits(qh: u32) -> __m256i {
        let shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000);
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), shuf);
        let bit = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    fn check(dtype: GgmlDType, format: Format) {
        check_shape(dtype, format, 37, 256, 3);
        check_shape(dtype, format, 19, 96, 7); // odd block count, a partial row group
    }

    fn check_shape(dtype: GgmlDType, format: Format, n: usize, k: usize, m: usize) {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let wd = q.dequantize(&dev).unwrap();
        let xs = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // The kernel multiplies 8-bit activations: compare with exactly those, dequantized.
        let xq: Vec<f32> = (0..m)
            .flat_map(|i| {
                let r = quantize_row(&xs[i * k..(i + 1) * k]);
                (0..k).map(move |j| r.qs[j] as f32 * r.d[j / QK]).collect::<Vec<_>>()
            })
            .collect();
        let x = Tensor::from_vec(xq, (m, k), &dev).unwrap();
        let want = x.matmul(&wd.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bytes = q.data().unwrap();
        let got = matmul(format, &bytes, n, k, &xs, m);
        let narrow = matmul_with(format, &bytes, n, k, &xs, m, false);
        for (a, b) in got.iter().zip(&narrow) {
            assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "{format:?}: AVX-512 {a} vs AVX2/scalar {b}");
        }
        let row = quantize_row(&xs[..k]);
        let wrow = &bytes[..(k / QK) * format.block_bytes()];
        // SAFETY: the scalar kernel needs no CPU features.
        let scalar = unsafe { scalar_kernel(format)(wrow, &row) };
        assert!((scalar - got[0]).abs() < 1e-3, "SIMD {} vs scalar {scalar}", got[0]);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-3 * (1.0 + w.abs()), "{format:?}: {g} vs {w}");
        }
    }

    /// Every SIMD variant this CPU runs (AVX2, AVX-512 BW/VL), called directly, against
    /// the scalar reference: `matmul` only ever picks the fastest.
    #[test]
    fn every_simd_dot_matches_scalar() {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let (n, k) = (5, 7 * QK); // an odd block count: the 4-block groups' tail
            let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
            let x = quantize_row(&(0..k).map(|i| (i as f32 * 0.3).sin()).collect::<Vec<_>>());
            let mut kernels: Vec<(Format, GgmlDType, DotFn)> = vec![];
            if has!("avx2") && has!("fma") && has!("f16c") {
                kernels.extend([
                    (Format::Q4_0, GgmlDType::Q4_0, x86::dot_q4_0 as DotFn),
                    (Format::Q4_1, GgmlDType::Q4_1, x86::dot_q4_1 as DotFn),
                    (Format::Q5_0, GgmlDType::Q5_0, x86::dot_q5_0 as DotFn),
                    (Format::Q5_1, GgmlDType::Q5_1, x86::dot_q5_1 as DotFn),
                    (Format::Q8_0, GgmlDType::Q8_0, x86::dot_q8_0 as DotFn),
                ]);
            }
            if has!("avx2") && has!("fma") && has!("f16c") && has!("avx512bw") && has!("avx512vl") {
                kernels.push((Format::Q5_0, GgmlDType::Q5_0, x86::dot_q5_0_vl as DotFn));
                kernels.push((Format::Q5_1, GgmlDType::Q5_1, x86::dot_q5_1_vl as DotFn));
            }
            for (format, dtype, kernel) in kernels {
                let bytes = QTensor::quantize(&w, dtype).unwrap().data().unwrap().to_vec();
                for row in bytes.chunks(bytes.len() / n) {
                    // SAFETY: the kernel's features were detected above.
                    let (got, want) = unsafe { (kernel(row, &x), scalar_kernel(format)(row, &x)) };
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{format:?}: {got} vs scalar {want}");
                }
            }
        }
    }

    #[test]
    fn quantizers_agree_bit_for_bit() {
        let mut x: Vec<f32> = (0..8 * QK).map(|i| ((i as f32 * 0.61).sin() * 4.0) * (1 + i % 5) as f32).collect();
        x[QK..2 * QK].fill(0.0);
        // Scale 1 (max 127): exact halves that must round away from zero.
        x[2 * QK] = 127.0;
        x[2 * QK + 1] = 2.5;
        x[2 * QK + 2] = -3.5;
        x[3 * QK + 4] = f32::NAN;
        let want = quantize_row_with(&x, quantize_block_scalar);
        let got = quantize_row_with(&x, block_quantizer());
        assert_eq!((&got.qs, &got.sum), (&want.qs, &want.sum));
        assert_eq!(got.d.iter().map(|d| d.to_bits()).collect::<Vec<_>>(), want.d.iter().map(|d| d.to_bits()).collect::<Vec<_>>());
        assert_eq!((want.qs[2 * QK + 1], want.qs[2 * QK + 2]), (3, -4));
    }

    pub fn check_pub(dtype: GgmlDType, format: Format) {
        check(dtype, format)
    }

    #[test]
    fn q4_1_matches_dequantized_matmul() {
        check(GgmlDType::Q4_1, Format::Q4_1);
    }

    #[test]
    fn q5_0_matches_dequantized_matmul() {
        check(GgmlDType::Q5_0, Format::Q5_0);
    }

    #[test]
    fn q4_0_and_q5_1_match_dequantized_matmul() {
        check(GgmlDType::Q4_0, Format::Q4_0);
        check(GgmlDType::Q5_1, Format::Q5_1);
    }
}

#[cfg(test)]
mod q8_tests {
    #[test]
    fn q8_0_matches_dequantized_matmul() {
        super::tests::check_pub(candle_core::quantized::GgmlDType::Q8_0, super::Format::Q8_0);
    }
}
