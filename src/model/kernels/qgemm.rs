//! Quantized-weight GEMM for prompt processing: `y = x W^T` with W kept in its GGUF blocks
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), multiplied as int8 on AVX-512 VNNI.
//!
//! Every block is a set of groups (32 values; 16 for Q6_K) with `w = s * u + c`: unsigned
//! quants `u`, a scale `s` and an offset `c` per group. Activations are quantized per 32
//! values to i8 with scale `d` (as `qgemv` and llama.cpp do), so
//! `y[i][j] = sum_g s[j][g] d[i][g] (u[j] . a[i])_g + c[j][g] (d a-sum)[i][g]`.
//! The `u . a` products run on `vpdpbusd` (u8 x i8, 4 at a time) in a 6 x 32 tile with int32
//! accumulators per group, scaled into f32 accumulators at each group's end.
//!
//! Weights are expanded per call into VNNI panels (32 output columns, 4 quants per lane),
//! about a byte per weight: a quarter of the f32 weight the dequantize-then-GEMM path
//! writes. `matmul_reference` is the plain loop the tests compare against; `expand_block`
//! is checked against candle's dequantization.
use candle_core::quantized::GgmlDType;
use rayon::prelude::*;

/// Output columns per panel (two 16-lane vectors) and activation rows per tile.
pub const NR: usize = 32;
pub const MR: usize = 6;
/// Rows of activations whose tiles run against the packed weights before the next rows
/// (their packed quants stay in L2: 192 rows x 4,864 values = 0.9 MB).
const MC: usize = 192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WFormat {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl WFormat {
    pub fn of(d: GgmlDType) -> Option<Self> {
        Some(match d {
            GgmlDType::Q4_0 => Self::Q4_0,
            GgmlDType::Q4_1 => Self::Q4_1,
            GgmlDType::Q5_0 => Self::Q5_0,
            GgmlDType::Q5_1 => Self::Q5_1,
            GgmlDType::Q8_0 => Self::Q8_0,
            GgmlDType::Q4K => Self::Q4K,
            GgmlDType::Q5K => Self::Q5K,
            GgmlDType::Q6K => Self::Q6K,
            _ => return None,
        })
    }

    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    pub fn block_values(self) -> usize {
        match self {
            Self::Q4K | Self::Q5K | Self::Q6K => 256,
            _ => 32,
        }
    }

    /// Values sharing one scale and offset.
    pub fn group(self) -> usize {
        if self == Self::Q6K {
            16
        } else {
            32
        }
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q4_K / Q5_K's 6-bit scale and min of sub-block `j` (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        (((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4)) as f32, ((q[j + 4] >> 4) | ((q[j] >> 6) << 4)) as f32)
    }
}

/// One block as unsigned quants `u` (block order) and a scale `s` and offset `c` per group,
/// so that `w = s * u + c`.
pub fn expand_block(f: WFormat, b: &[u8], u: &mut [u8], s: &mut [f32], c: &mut [f32]) {
    match f {
        WFormat::Q8_0 => {
            let d = f16_at(b, 0);
            (0..32).for_each(|i| u[i] = (b[2 + i] as i8 as i16 + 128) as u8);
            (s[0], c[0]) = (d, -128.0 * d);
        }
        WFormat::Q4_0 | WFormat::Q4_1 => {
            let (d, at) = (f16_at(b, 0), if f == WFormat::Q4_0 { 2 } else { 4 });
            for i in 0..16 {
                (u[i], u[i + 16]) = (b[at + i] & 0xF, b[at + i] >> 4);
            }
            (s[0], c[0]) = (d, if f == WFormat::Q4_0 { -8.0 * d } else { f16_at(b, 2) });
        }
        WFormat::Q5_0 | WFormat::Q5_1 => {
            let (d, at) = (f16_at(b, 0), if f == WFormat::Q5_0 { 2 } else { 4 });
            let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            for i in 0..16 {
                let q = b[at + 4 + i];
                u[i] = (q & 0xF) | ((((qh >> i) & 1) as u8) << 4);
                u[i + 16] = (q >> 4) | ((((qh >> (i + 16)) & 1) as u8) << 4);
            }
            (s[0], c[0]) = (d, if f == WFormat::Q5_0 { -16.0 * d } else { f16_at(b, 2) });
        }
        WFormat::Q4K | WFormat::Q5K => expand_k4(f, b, u, s, c),
        WFormat::Q6K => expand_q6k(b, u, s, c),
    }
}

/// Q4_K and Q5_K: 8 sub-blocks of 32, `w = d sc q - dmin m` (plus a fifth bit for Q5_K).
fn expand_k4(f: WFormat, b: &[u8], u: &mut [u8], s: &mut [f32], c: &mut [f32]) {
    let (d, dmin, scales) = (f16_at(b, 0), f16_at(b, 2), &b[4..16]);
    let (qh, qs) = if f == WFormat::Q5K { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
    for chunk in 0..4 {
        let q = &qs[chunk * 32..chunk * 32 + 32];
        for half in 0..2 {
            let g = chunk * 2 + half;
            let (sc, m) = scale_min_k4(g, scales);
            (s[g], c[g]) = (d * sc, -(dmin * m));
            for l in 0..32 {
                let mut v = if half == 0 { q[l] & 0xF } else { q[l] >> 4 };
                if f == WFormat::Q5K && qh[l] & (1 << g) != 0 {
                    v += 16;
                }
                u[g * 32 + l] = v;
            }
        }
    }
}

/// Q6_K: 16 groups of 16, `w = d sc (q - 32)` with 6-bit `q`.
fn expand_q6k(b: &[u8], u: &mut [u8], s: &mut [f32], c: &mut [f32]) {
    let (ql, qh, sc, d) = (&b[0..128], &b[128..192], &b[192..208], f16_at(b, 208));
    for half in 0..2 {
        let (ql, qh, out) = (&ql[64 * half..], &qh[32 * half..], &mut u[128 * half..]);
        for l in 0..32 {
            out[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
            out[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
            out[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            out[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    for g in 0..16 {
        let scale = d * sc[g] as i8 as f32;
        (s[g], c[g]) = (scale, -32.0 * scale);
    }
}

/// Activations quantized per 32 values: i8 quants, and per group the scale `d` and the
/// scaled quant sum `d * sum(a)` (what an offset `c` multiplies).
pub struct QuantActs {
    pub k: usize,
    pub group: usize,
    pub qs: Vec<i8>,
    pub d: Vec<f32>,
    pub xs: Vec<f32>,
}

/// Quantize `m` rows of `k` values (qgemv's quantizer: scale max|x| / 127, round half away).
pub fn quantize_acts(x: &[f32], m: usize, k: usize, group: usize) -> QuantActs {
    let (ng, quant) = (k / group, super::qgemv::block_quantizer());
    let mut a = QuantActs { k, group, qs: vec![0; m * k], d: vec![0.0; m * ng], xs: vec![0.0; m * ng] };
    let per = 32 / group;
    a.qs.par_chunks_mut(k).zip(a.d.par_chunks_mut(ng)).zip(a.xs.par_chunks_mut(ng)).enumerate().for_each(|(i, ((qs, d), xs))| {
        for b in 0..k / 32 {
            // SAFETY: block_quantizer returned a kernel this CPU runs; 32 values each.
            let (scale, _) = unsafe { quant(&x[i * k + b * 32..i * k + b * 32 + 32], &mut qs[b * 32..b * 32 + 32]) };
            for h in 0..per {
                let g = b * per + h;
                d[g] = scale;
                xs[g] = scale * qs[g * group..(g + 1) * group].iter().map(|&q| q as i32).sum::<i32>() as f32;
            }
        }
    });
    a
}

/// The plain product over the same quantized activations and expanded weights, summed in
/// the kernel's order (per group: the integer dot product, times `s`, times `d`; plus `c`
/// times the activation sum).
pub fn matmul_reference(f: WFormat, w: &[u8], n: usize, k: usize, acts: &QuantActs, m: usize) -> Vec<f32> {
    let (bv, g) = (f.block_values(), f.group());
    let (nb, ng) = (k / bv, k / g);
    let mut y = vec![0f32; m * n];
    let (mut u, mut s, mut c) = (vec![0u8; k], vec![0f32; ng], vec![0f32; ng]);
    for j in 0..n {
        for b in 0..nb {
            let blk = &w[(j * nb + b) * f.block_bytes()..];
            let gb = bv / g;
            expand_block(f, blk, &mut u[b * bv..], &mut s[b * gb..], &mut c[b * gb..]);
        }
        for i in 0..m {
            let mut acc = 0f32;
            for gi in 0..ng {
                let dot: i32 = (0..g).map(|l| u[gi * g + l] as i32 * acts.qs[i * k + gi * g + l] as i32).sum();
                acc += dot as f32 * s[gi] * acts.d[i * ng + gi];
                acc += c[gi] * acts.xs[i * ng + gi];
            }
            y[i * n + j] = acc;
        }
    }
    y
}

/// Weights packed for the kernel: per panel of `NR` columns and per group, `group / 4`
/// steps of two 64-byte vectors (16 columns x 4 quants), then the group's `NR` scales and
/// `NR` offsets. Columns past `n` are zero.
struct PackedW {
    u: Vec<u8>,
    s: Vec<f32>,
    c: Vec<f32>,
    ng: usize,
}

fn pack_weights(f: WFormat, w: &[u8], n: usize, k: usize) -> PackedW {
    let (bv, g) = (f.block_values(), f.group());
    let (nb, ng, panels) = (k / bv, k / g, n.div_ceil(NR));
    let (ppu, pps) = (ng * g * NR, ng * NR);
    let mut p = PackedW { u: vec![0; panels * ppu], s: vec![0.0; panels * pps], c: vec![0.0; panels * pps], ng };
    p.u.par_chunks_mut(ppu).zip(p.s.par_chunks_mut(pps)).zip(p.c.par_chunks_mut(pps)).enumerate().for_each(|(pi, ((pu, ps), pc))| {
        let (mut u, mut s, mut c) = (vec![0u8; bv], vec![0f32; bv / g], vec![0f32; bv / g]);
        for jj in 0..NR.min(n - pi * NR) {
            let j = pi * NR + jj;
            for b in 0..nb {
                expand_block(f, &w[(j * nb + b) * f.block_bytes()..], &mut u, &mut s, &mut c);
                for (h, quads) in u.chunks_exact(g).enumerate() {
                    let gi = b * (bv / g) + h;
                    (ps[gi * NR + jj], pc[gi * NR + jj]) = (s[h], c[h]);
                    for (t, q4) in quads.chunks_exact(4).enumerate() {
                        let at = ((gi * (g / 4) + t) * 2 + jj / 16) * 64 + (jj % 16) * 4;
                        pu[at..at + 4].copy_from_slice(q4);
                    }
                }
            }
        }
    });
    p
}

/// Activations packed per tile of `MR` rows: per group, `group / 4` steps of `MR` 4-quant
/// words, then the group's `MR` scales and `MR` scaled sums. Rows past `m` are zero.
struct PackedA {
    a: Vec<i32>,
    d: Vec<f32>,
    xs: Vec<f32>,
}

fn pack_acts(acts: &QuantActs, m: usize) -> PackedA {
    let (k, g) = (acts.k, acts.group);
    let (ng, tiles) = (k / g, m.div_ceil(MR));
    let (pta, ptd) = (k / 4 * MR, ng * MR);
    let mut p = PackedA { a: vec![0; tiles * pta], d: vec![0.0; tiles * ptd], xs: vec![0.0; tiles * ptd] };
    p.a.par_chunks_mut(pta).zip(p.d.par_chunks_mut(ptd)).zip(p.xs.par_chunks_mut(ptd)).enumerate().for_each(|(ti, ((pa, pd), px))| {
        for r in 0..MR.min(m - ti * MR) {
            let i = ti * MR + r;
            for (w, q4) in acts.qs[i * k..(i + 1) * k].chunks_exact(4).enumerate() {
                pa[w * MR + r] = i32::from_le_bytes([q4[0] as u8, q4[1] as u8, q4[2] as u8, q4[3] as u8]);
            }
            for gi in 0..ng {
                (pd[gi * MR + r], px[gi * MR + r]) = (acts.d[i * ng + gi], acts.xs[i * ng + gi]);
            }
        }
    });
    p
}

/// Whether this CPU runs the kernel (AVX-512 F and VNNI).
pub fn available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        let has = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni");
        #[cfg(not(target_arch = "x86_64"))]
        let has = false;
        has
    })
}

/// Whether quantized prefill takes this kernel: opt-in (`--int8-prefill`, or
/// `INSTILL_QGEMM=1`), on a CPU that runs it. Off by default: i8 activations are what
/// llama.cpp computes with, but they amplify last-bit differences upstream (a sequence's
/// loss alone vs padded into a batch: 0.397 vs 0.402 on SmolLM2, where f32 agrees within
/// 1e-3) and the greedy tokens after a prompt then part from llama.cpp's earlier than with
/// f32 products (gemma3 Q8_0: at token 13 of 32).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| available() && std::env::var("INSTILL_QGEMM").is_ok_and(|v| v == "1"))
}

/// `y = x W^T`, `x` `(m, k)` row-major f32, `W` `n` rows of `dtype` blocks; `(m, n)` out.
/// None where the format or this CPU has no kernel (callers dequantize instead).
pub fn matmul(dtype: GgmlDType, w: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Option<Vec<f32>> {
    let f = WFormat::of(dtype)?;
    if !available() || !k.is_multiple_of(f.block_values()) || w.len() != n * (k / f.block_values()) * f.block_bytes() || x.len() != m * k {
        return None;
    }
    let acts = quantize_acts(x, m, k, f.group());
    Some(matmul_quantized(f, w, n, k, &acts, m))
}

/// The kernel's product over activations already quantized (what the tests call).
pub fn matmul_quantized(f: WFormat, w: &[u8], n: usize, k: usize, acts: &QuantActs, m: usize) -> Vec<f32> {
    assert!(available(), "qgemm needs AVX-512 VNNI");
    let (pw, pa) = (pack_weights(f, w, n, k), pack_acts(acts, m));
    let mut y = vec![0f32; m * n];
    let out = SendPtr(y.as_mut_ptr());
    let (g, ng, panels) = (f.group(), pw.ng, n.div_ceil(NR));
    for t0 in (0..m.div_ceil(MR)).step_by(MC / MR) {
        (0..panels).into_par_iter().for_each(|pi| {
            let out = &out;
            for ti in t0..(t0 + MC / MR).min(m.div_ceil(MR)) {
                let mut tile = [[0f32; NR]; MR];
                let rows = MR.min(m - ti * MR);
                let (a, d, xs) = (&pa.a[ti * (k / 4) * MR..], &pa.d[ti * ng * MR..], &pa.xs[ti * ng * MR..]);
                let (u, s, c) = (&pw.u[pi * ng * g * NR..], &pw.s[pi * ng * NR..], &pw.c[pi * ng * NR..]);
                // SAFETY: available() checked the CPU; the slices hold `ng` groups each.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    x86::tile(g, ng, a, d, xs, u, s, c, &mut tile)
                };
                let cols = NR.min(n - pi * NR);
                for (r, row) in tile.iter().enumerate().take(rows) {
                    // SAFETY: each (tile row, panel) pair writes its own cells of `y`.
                    unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), out.0.add((ti * MR + r) * n + pi * NR), cols) };
                }
            }
        });
    }
    y
}

struct SendPtr(*mut f32);
unsafe impl Sync for SendPtr {}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// One 6 x 32 tile over all `ng` groups, by group size (32: 8 steps; 16: 4 steps).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(g: usize, ng: usize, a: &[i32], d: &[f32], xs: &[f32], u: &[u8], s: &[f32], c: &[f32], out: &mut [[f32; NR]; MR]) {
        if g == 32 {
            tile_g::<8>(ng, a.as_ptr(), d.as_ptr(), xs.as_ptr(), u.as_ptr(), s.as_ptr(), c.as_ptr(), out)
        } else {
            tile_g::<4>(ng, a.as_ptr(), d.as_ptr(), xs.as_ptr(), u.as_ptr(), s.as_ptr(), c.as_ptr(), out)
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn tile_g<const STEPS: usize>(ng: usize, a: *const i32, d: *const f32, xs: *const f32, u: *const u8, s: *const f32, c: *const f32, out: &mut [[f32; NR]; MR]) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for gi in 0..ng {
            let mut p = [[_mm512_setzero_si512(); 2]; MR];
            for t in 0..STEPS {
                let step = gi * STEPS + t;
                let b0 = _mm512_loadu_si512(u.add(step * 128) as *const _);
                let b1 = _mm512_loadu_si512(u.add(step * 128 + 64) as *const _);
                for (r, pr) in p.iter_mut().enumerate() {
                    let av = _mm512_set1_epi32(*a.add(step * MR + r));
                    pr[0] = _mm512_dpbusd_epi32(pr[0], b0, av);
                    pr[1] = _mm512_dpbusd_epi32(pr[1], b1, av);
                }
            }
            let (s0, s1) = (_mm512_loadu_ps(s.add(gi * NR)), _mm512_loadu_ps(s.add(gi * NR + 16)));
            let (c0, c1) = (_mm512_loadu_ps(c.add(gi * NR)), _mm512_loadu_ps(c.add(gi * NR + 16)));
            for (r, (ar, pr)) in acc.iter_mut().zip(&p).enumerate() {
                let (dv, xv) = (_mm512_set1_ps(*d.add(gi * MR + r)), _mm512_set1_ps(*xs.add(gi * MR + r)));
                ar[0] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(pr[0]), s0), dv, ar[0]);
                ar[1] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(pr[1]), s1), dv, ar[1]);
                ar[0] = _mm512_fmadd_ps(c0, xv, ar[0]);
                ar[1] = _mm512_fmadd_ps(c1, xv, ar[1]);
            }
        }
        for (o, ar) in out.iter_mut().zip(&acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), ar[0]);
            _mm512_storeu_ps(o.as_mut_ptr().add(16), ar[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    const FORMATS: [(GgmlDType, WFormat); 8] = [
        (GgmlDType::Q4_0, WFormat::Q4_0),
        (GgmlDType::Q4_1, WFormat::Q4_1),
        (GgmlDType::Q5_0, WFormat::Q5_0),
        (GgmlDType::Q5_1, WFormat::Q5_1),
        (GgmlDType::Q8_0, WFormat::Q8_0),
        (GgmlDType::Q4K, WFormat::Q4K),
        (GgmlDType::Q5K, WFormat::Q5K),
        (GgmlDType::Q6K, WFormat::Q6K),
    ];

    fn weights(dtype: GgmlDType, n: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
        let v: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.45) * (1.0 + (i % 5) as f32)).collect();
        let q = QTensor::quantize(&Tensor::from_vec(v, (n, k), &Device::Cpu).unwrap(), dtype).unwrap();
        let deq = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (q.data().unwrap().to_vec(), deq)
    }

    #[test]
    fn expanded_blocks_equal_candles_dequantization() {
        for (dtype, f) in FORMATS {
            let (n, k) = (3, 512);
            let (w, deq) = weights(dtype, n, k);
            let (bv, g) = (f.block_values(), f.group());
            let (mut u, mut s, mut c) = (vec![0u8; bv], vec![0f32; bv / g], vec![0f32; bv / g]);
            for (bi, blk) in w.chunks_exact(f.block_bytes()).enumerate() {
                expand_block(f, blk, &mut u, &mut s, &mut c);
                for l in 0..bv {
                    let (got, want) = (s[l / g] * u[l] as f32 + c[l / g], deq[bi * bv + l]);
                    assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "{f:?} block {bi} value {l}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn kernel_equals_reference_on_odd_shapes() {
        if !available() {
            return;
        }
        for (dtype, f) in FORMATS {
            for (m, n) in [(1, 1), (5, 33), (7, 64), (13, 95), (200, 40)] {
                let k = if f.block_values() == 256 { 512 } else { 96 };
                let (w, _) = weights(dtype, n, k);
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 31 % 97) as f32 - 48.0) / 17.0).collect();
                let acts = quantize_acts(&x, m, k, f.group());
                let (got, want) = (matmul_quantized(f, &w, n, k, &acts, m), matmul_reference(f, &w, n, k, &acts, m));
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{f:?} {m}x{n}x{k} at {i}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn product_is_close_to_the_dequantized_f32_product() {
        if !available() {
            return;
        }
        for (dtype, f) in FORMATS {
            let (m, n, k) = (9, 40, 512);
            let (w, deq) = weights(dtype, n, k);
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 13 % 101) as f32 - 50.0) / 29.0).collect();
            let got = matmul(dtype, &w, n, k, &x, m).expect("a kernel for every format");
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|l| x[i * k + l] * deq[j * k + l]).sum();
                    let scale: f32 = (0..k).map(|l| (x[i * k + l] * deq[j * k + l]).abs()).sum();
                    // i8 activations: ~0.4% of each block's largest value per term.
                    assert!((got[i * n + j] - want).abs() <= 0.01 * scale, "{f:?} ({i}, {j}): {} vs {want}", got[i * n + j]);
                }
            }
        }
    }
}
