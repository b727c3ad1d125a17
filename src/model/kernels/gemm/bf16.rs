//! The bf16 micro-kernel: `vdpbf16ps` multiplies pairs of bf16 values along k and adds
//! both products into an f32 lane, so one instruction does twice the multiply-adds of an
//! f32 FMA. Operands are packed as 32-bit pairs `(k, k+1)`; an odd k is padded with zero.
use super::{Elem, MatRef};

/// `lo | hi << 16` (the lane's first and second bf16).
#[inline(always)]
pub(super) fn pair<T: Elem>(lo: T, hi: Option<T>) -> u32 {
    lo.bf16_bits() as u32 | (hi.map_or(0, |h| h.bf16_bits()) as u32) << 16
}

/// A's rows in panels of `MR`, k in pairs: step `p` of panel `q` holds, for each row,
/// columns `2p` and `2p + 1`.
pub(super) fn pack_a<const MR: usize, A: Elem>(a: MatRef<A>, mc: usize, kc: usize, out: &mut [u32]) {
    let steps = kc.div_ceil(2);
    for (q, panel) in out.chunks_mut(MR * steps).take(mc.div_ceil(MR)).enumerate() {
        let rows = MR.min(mc - q * MR);
        if rows < MR {
            panel.fill(0);
        }
        for i in 0..rows {
            let r = a.offset(q * MR + i, 0);
            for p in 0..steps {
                let hi = (2 * p + 1 < kc).then(|| r.data[(2 * p + 1) * r.cs]);
                panel[p * MR + i] = pair(r.data[2 * p * r.cs], hi);
            }
        }
    }
}

/// B's columns in panels of `NR`, k in pairs: step `p` holds rows `2p`, `2p + 1`.
pub(super) fn pack_b<const NR: usize, B: Elem>(b: MatRef<B>, kc: usize, nc: usize, out: &mut [u32]) {
    let steps = kc.div_ceil(2);
    for (q, panel) in out.chunks_mut(NR * steps).take(nc.div_ceil(NR)).enumerate() {
        let cols = NR.min(nc - q * NR);
        if cols < NR {
            panel.fill(0);
        }
        let done = gather_pairs(b, q * NR, cols, kc, panel, NR);
        for j in done..cols {
            let col = b.offset(0, q * NR + j);
            for p in 0..steps {
                let hi = (2 * p + 1 < kc).then(|| col.data[(2 * p + 1) * col.rs]);
                panel[p * NR + j] = pair(col.data[2 * p * col.rs], hi);
            }
        }
    }
}

/// Columns `j0..` of a column-major (`rs == 1`) bf16 or f32 B, in groups of 16, as pairs
/// into `panel[p * stride + j]` with AVX-512 gathers (an odd last k padded with zero, as
/// the scalar path does); how many columns it packed.
fn gather_pairs<B: Elem>(b: MatRef<B>, j0: usize, cols: usize, kc: usize, panel: &mut [u32], stride: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if b.rs != 1 || kc < 2 || b.cs > i32::MAX as usize / 64 || super::isa() != super::Isa::Avx512 {
            return 0;
        }
        let groups = cols / 16;
        let pairs = kc / 2;
        assert!(panel.len() >= (kc.div_ceil(2) - 1) * stride + groups * 16);
        for g in 0..groups {
            let first = (j0 + g * 16) * b.cs;
            assert!(first + 15 * b.cs + kc <= b.data.len());
            let dst = panel[g * 16..].as_mut_ptr();
            // SAFETY: AVX-512 was detected; the gathered range and the panel are in bounds.
            unsafe {
                if let Some(d) = B::as_bf16(b.data) {
                    x86::gather_bf16(d.as_ptr().add(first) as *const u16, b.cs, pairs, dst, stride);
                } else if let Some(d) = B::as_f32(b.data) {
                    x86::gather_f32(d.as_ptr().add(first), b.cs, pairs, dst, stride);
                } else {
                    return 0;
                }
            }
            if kc % 2 == 1 {
                for l in 0..16 {
                    panel[pairs * stride + g * 16 + l] = pair(b.data[first + l * b.cs + kc - 1], None);
                }
            }
        }
        groups * 16
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (b, j0, cols, kc, panel, stride);
        0
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::Avx512Bf16;

#[cfg(not(target_arch = "x86_64"))]
pub(super) type Avx512Bf16 = super::f32k::Portable;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::{Elem, Kernel, MatRef};
    use std::arch::x86_64::*;

    /// `dst[p * stride + l] = (src[l * cs + 2p], src[l * cs + 2p + 1])` for 16 columns:
    /// a bf16 pair is one 32-bit gather.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_bf16(src: *const u16, cs: usize, pairs: usize, dst: *mut u32, stride: usize) {
        let idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(2 * cs as i32));
        for p in 0..pairs {
            let v = _mm512_i32gather_epi32::<1>(idx, src.add(2 * p) as *const i32);
            _mm512_storeu_si512(dst.add(p * stride) as *mut __m512i, v);
        }
    }

    /// As `gather_bf16` from f32 columns, rounded to nearest even (as `half` does).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_f32(src: *const f32, cs: usize, pairs: usize, dst: *mut u32, stride: usize) {
        let idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(cs as i32));
        let round = |x: __m512| {
            let bits = _mm512_castps_si512(x);
            let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
            _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd)))
        };
        for p in 0..pairs {
            let e = _mm512_i32gather_ps::<4>(idx, src.add(2 * p));
            let o = _mm512_i32gather_ps::<4>(idx, src.add(2 * p + 1));
            let v = _mm512_or_si512(round(e), _mm512_slli_epi32::<16>(round(o)));
            _mm512_storeu_si512(dst.add(p * stride) as *mut __m512i, v);
        }
    }

    /// 12 rows x 32 columns, as the f32 AVX-512 kernel, each step two k values.
    pub struct Avx512Bf16;

    impl Kernel for Avx512Bf16 {
        const MR: usize = 12;
        const NR: usize = 32;
        const KU: usize = 2;
        type P = u32;
        const KC: usize = 512;
        fn pack_a<A: Elem>(a: MatRef<A>, mc: usize, kc: usize, out: &mut [u32]) {
            super::pack_a::<12, A>(a, mc, kc, out)
        }
        fn pack_b<B: Elem>(b: MatRef<B>, kc: usize, nc: usize, out: &mut [u32]) {
            super::pack_b::<32, B>(b, kc, nc, out)
        }
        unsafe fn tile(steps: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize, add: bool) {
            tile(steps, a, b, c, ldc, add)
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile(steps: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize, add: bool) {
        let mut r = [[_mm512_setzero_ps(); 2]; 12];
        for p in 0..steps {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * 32) as *const __m512i));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * 32 + 16) as *const __m512i));
            let ap = a.add(p * 12);
            for (i, ri) in r.iter_mut().enumerate() {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(i) as i32));
                ri[0] = _mm512_dpbf16_ps(ri[0], av, b0);
                ri[1] = _mm512_dpbf16_ps(ri[1], av, b1);
            }
        }
        for (i, ri) in r.iter().enumerate() {
            let d = c.add(i * ldc);
            let (mut v0, mut v1) = (ri[0], ri[1]);
            if add {
                v0 = _mm512_add_ps(v0, _mm512_loadu_ps(d));
                v1 = _mm512_add_ps(v1, _mm512_loadu_ps(d.add(16)));
            }
            _mm512_storeu_ps(d, v0);
            _mm512_storeu_ps(d.add(16), v1);
        }
    }
}
