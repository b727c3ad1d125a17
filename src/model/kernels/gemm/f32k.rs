//! The f32 micro-kernels (AVX-512 12x32, AVX2 6x16, portable 4x16) and their packers.
use super::{Elem, Kernel, MatRef};

/// A's rows in panels of `MR`: step `p` of panel `q` holds rows `q*MR..` at column `p`.
pub(super) fn pack_a<const MR: usize, A: Elem>(a: MatRef<A>, mc: usize, kc: usize, out: &mut [f32]) {
    for (q, panel) in out.chunks_mut(MR * kc).take(mc.div_ceil(MR)).enumerate() {
        let rows = MR.min(mc - q * MR);
        if rows < MR {
            panel.fill(0.0);
        }
        if rows == MR && gather_rows(a.offset(q * MR, 0), MR, kc, panel) {
            // Row-major f32 A: a masked hardware gather per step (the scalar loop below
            // stores at a stride of MR floats and was ~9% of a training step).
            continue;
        }
        if a.rs == 1 && rows == MR {
            // Column-major A (a transposed operand): each step is MR contiguous values.
            let base = a.offset(q * MR, 0);
            for p in 0..kc {
                let col = &base.data[p * a.cs..][..MR];
                for (o, v) in panel[p * MR..(p + 1) * MR].iter_mut().zip(col) {
                    *o = v.f32();
                }
            }
            continue;
        }
        for i in 0..rows {
            let r = a.offset(q * MR + i, 0);
            if r.cs == 1 {
                for (p, v) in r.data[..kc].iter().enumerate() {
                    panel[p * MR + i] = v.f32();
                }
            } else {
                for p in 0..kc {
                    panel[p * MR + i] = r.data[p * r.cs].f32();
                }
            }
        }
    }
}

/// B's columns in panels of `NR`: step `p` of panel `q` holds row `p`, columns `q*NR..`.
pub(super) fn pack_b<const NR: usize, B: Elem>(b: MatRef<B>, kc: usize, nc: usize, out: &mut [f32]) {
    for (q, panel) in out.chunks_mut(NR * kc).take(nc.div_ceil(NR)).enumerate() {
        let cols = NR.min(nc - q * NR);
        if cols < NR {
            panel.fill(0.0);
        }
        if b.cs == 1 {
            for p in 0..kc {
                let row = &b.data[p * b.rs + q * NR..][..cols];
                for (o, v) in panel[p * NR..p * NR + cols].iter_mut().zip(row) {
                    *o = v.f32();
                }
            }
        } else if let Some(done) = gather_columns(b, q * NR, cols, kc, panel, NR) {
            // Column-major f32 B (a transposed row-major weight): 16 or 8 columns per
            // hardware gather, `done` of them.
            for j in done..cols {
                let col = &b.data[(q * NR + j) * b.cs..];
                for p in 0..kc {
                    panel[p * NR + j] = col[p * b.rs].f32();
                }
            }
        } else {
            // Column-major B (a transposed row-major weight): each column is contiguous.
            for j in 0..cols {
                let col = &b.data[(q * NR + j) * b.cs..];
                for p in 0..kc {
                    panel[p * NR + j] = col[p * b.rs].f32();
                }
            }
        }
    }
}

/// `panel[p * rows + i] = a[i][p]` for a row-major (`cs == 1`) f32 A with AVX-512 masked
/// gathers (`rows <= 16`); false where it does not apply (then the caller packs).
fn gather_rows<A: Elem>(a: MatRef<A>, rows: usize, kc: usize, panel: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let Some(data) = A::as_f32(a.data) {
        let ok = a.cs == 1 && rows <= 16 && kc > 0 && a.rs <= i32::MAX as usize / 16 && super::isa() == super::Isa::Avx512;
        if ok && (rows - 1) * a.rs + kc <= data.len() && panel.len() >= kc * rows {
            // SAFETY: AVX-512 was detected; the last row's last value is inside `data` and
            // every masked store lands inside `panel`.
            unsafe { x86::gather_masked(data.as_ptr(), a.rs, kc, panel.as_mut_ptr(), rows, rows) };
            return true;
        }
    }
    let _ = (a, rows, kc, panel);
    false
}

/// Columns `j0..j0 + cols` of a column-major (`rs == 1`) f32 B into `panel[p * stride + j]`
/// with AVX-512 / AVX2 gathers, for as many whole groups of 16 / 8 columns as fit; how
/// many columns it packed (None: not f32, not column-major, or no SIMD).
fn gather_columns<B: Elem>(b: MatRef<B>, j0: usize, cols: usize, kc: usize, panel: &mut [f32], stride: usize) -> Option<usize> {
    let data = B::as_f32(b.data)?;
    if b.rs != 1 || kc == 0 || b.cs > i32::MAX as usize / 16 {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let lanes = match super::isa() {
            super::Isa::Avx512 => 16,
            super::Isa::Avx2 => 8,
            super::Isa::Portable => return None,
        };
        let groups = cols / lanes;
        for g in 0..groups {
            let first = (j0 + g * lanes) * b.cs;
            // The group's last element is inside the view.
            assert!(first + (lanes - 1) * b.cs + kc <= data.len());
            let dst = &mut panel[g * lanes..];
            assert!(dst.len() >= (kc - 1) * stride + lanes);
            // SAFETY: the ISA was detected; source and destination bounds are asserted.
            unsafe { x86::gather(data.as_ptr().add(first), b.cs, kc, dst.as_mut_ptr(), stride, lanes == 16) };
        }
        Some(groups * lanes)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (data, j0, cols, panel, stride);
        None
    }
}

/// Store or add an `MR x NR` register tile (as arrays) into C.
#[inline(always)]
unsafe fn store<const MR: usize, const NR: usize>(acc: &[[f32; NR]; MR], c: *mut f32, ldc: usize, add: bool) {
    for (i, row) in acc.iter().enumerate() {
        let dst = std::slice::from_raw_parts_mut(c.add(i * ldc), NR);
        for (o, v) in dst.iter_mut().zip(row) {
            *o = if add { *o + v } else { *v };
        }
    }
}

/// Plain Rust, 4 x 16 (the compiler vectorizes it for the baseline target).
pub(super) struct Portable;

impl Kernel for Portable {
    const MR: usize = 4;
    const NR: usize = 16;
    const KU: usize = 1;
    type P = f32;
    fn pack_a<A: Elem>(a: MatRef<A>, mc: usize, kc: usize, out: &mut [f32]) {
        pack_a::<4, A>(a, mc, kc, out)
    }
    fn pack_b<B: Elem>(b: MatRef<B>, kc: usize, nc: usize, out: &mut [f32]) {
        pack_b::<16, B>(b, kc, nc, out)
    }
    unsafe fn tile(steps: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, add: bool) {
        let (a, b) = (std::slice::from_raw_parts(a, steps * 4), std::slice::from_raw_parts(b, steps * 16));
        let mut acc = [[0f32; 16]; 4];
        for (ap, bp) in a.chunks_exact(4).zip(b.chunks_exact(16)) {
            for i in 0..4 {
                for j in 0..16 {
                    acc[i][j] += ap[i] * bp[j];
                }
            }
        }
        store(&acc, c, ldc, add)
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Avx2, Avx512};

#[cfg(not(target_arch = "x86_64"))]
pub(super) type Avx512 = Portable;
#[cfg(not(target_arch = "x86_64"))]
pub(super) type Avx2 = Portable;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::{Elem, Kernel, MatRef};
    use std::arch::x86_64::*;

    /// `dst[p * stride + l] = src[l * cs + p]` for `p < kc` and 16 (`wide`) or 8 lanes.
    pub(super) unsafe fn gather(src: *const f32, cs: usize, kc: usize, dst: *mut f32, stride: usize, wide: bool) {
        if wide {
            gather16(src, cs, kc, dst, stride)
        } else {
            gather8(src, cs, kc, dst, stride)
        }
    }

    /// `dst[p * stride + l] = src[l * cs + p]` for `p < kc` and `l < lanes <= 16`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_masked(src: *const f32, cs: usize, kc: usize, dst: *mut f32, stride: usize, lanes: usize) {
        let idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(cs as i32));
        let mask: __mmask16 = ((1u32 << lanes) - 1) as u16;
        for p in 0..kc {
            let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, idx, src.add(p));
            _mm512_mask_storeu_ps(dst.add(p * stride), mask, v);
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn gather16(src: *const f32, cs: usize, kc: usize, dst: *mut f32, stride: usize) {
        let idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(cs as i32));
        for p in 0..kc {
            _mm512_storeu_ps(dst.add(p * stride), _mm512_i32gather_ps::<4>(idx, src.add(p)));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn gather8(src: *const f32, cs: usize, kc: usize, dst: *mut f32, stride: usize) {
        let idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(cs as i32));
        for p in 0..kc {
            _mm256_storeu_ps(dst.add(p * stride), _mm256_i32gather_ps::<4>(src.add(p), idx));
        }
    }

    /// AVX-512: 12 rows x 32 columns = 24 zmm accumulators, two B loads and 12
    /// broadcasts per step (two FMA ports, 4-cycle latency: 8+ independent chains).
    pub struct Avx512;

    impl Kernel for Avx512 {
        const MR: usize = 12;
        const NR: usize = 32;
        const KU: usize = 1;
        type P = f32;
        fn pack_a<A: Elem>(a: MatRef<A>, mc: usize, kc: usize, out: &mut [f32]) {
            super::pack_a::<12, A>(a, mc, kc, out)
        }
        fn pack_b<B: Elem>(b: MatRef<B>, kc: usize, nc: usize, out: &mut [f32]) {
            super::pack_b::<32, B>(b, kc, nc, out)
        }
        unsafe fn tile(steps: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, add: bool) {
            tile512::<12>(steps, a, b, c, ldc, add)
        }
        unsafe fn tile_rows(mr: usize, steps: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, add: bool) -> bool {
            match mr {
                1 => tile512::<1>(steps, a, b, c, ldc, add),
                2 => tile512::<2>(steps, a, b, c, ldc, add),
                3 => tile512::<3>(steps, a, b, c, ldc, add),
                4 => tile512::<4>(steps, a, b, c, ldc, add),
                5 => tile512::<5>(steps, a, b, c, ldc, add),
                6 => tile512::<6>(steps, a, b, c, ldc, add),
                7 => tile512::<7>(steps, a, b, c, ldc, add),
                8 => tile512::<8>(steps, a, b, c, ldc, add),
                9 => tile512::<9>(steps, a, b, c, ldc, add),
                10 => tile512::<10>(steps, a, b, c, ldc, add),
                11 => tile512::<11>(steps, a, b, c, ldc, add),
                _ => return false,
            }
            true
        }
    }

    /// `R` rows of a 12-row panel (the rest of the panel is padding, skipped).
    #[target_feature(enable = "avx512f")]
    unsafe fn tile512<const R: usize>(steps: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, add: bool) {
        let mut r = [[_mm512_setzero_ps(); 2]; R];
        for p in 0..steps {
            let b0 = _mm512_loadu_ps(b.add(p * 32));
            let b1 = _mm512_loadu_ps(b.add(p * 32 + 16));
            let ap = a.add(p * 12);
            for (i, ri) in r.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(i));
                ri[0] = _mm512_fmadd_ps(av, b0, ri[0]);
                ri[1] = _mm512_fmadd_ps(av, b1, ri[1]);
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

    /// AVX2 + FMA: 6 rows x 16 columns = 12 ymm accumulators.
    pub struct Avx2;

    impl Kernel for Avx2 {
        const MR: usize = 6;
        const NR: usize = 16;
        const KU: usize = 1;
        type P = f32;
        fn pack_a<A: Elem>(a: MatRef<A>, mc: usize, kc: usize, out: &mut [f32]) {
            super::pack_a::<6, A>(a, mc, kc, out)
        }
        fn pack_b<B: Elem>(b: MatRef<B>, kc: usize, nc: usize, out: &mut [f32]) {
            super::pack_b::<16, B>(b, kc, nc, out)
        }
        unsafe fn tile(steps: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, add: bool) {
            tile256::<6>(steps, a, b, c, ldc, add)
        }
        unsafe fn tile_rows(mr: usize, steps: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, add: bool) -> bool {
            match mr {
                1 => tile256::<1>(steps, a, b, c, ldc, add),
                2 => tile256::<2>(steps, a, b, c, ldc, add),
                3 => tile256::<3>(steps, a, b, c, ldc, add),
                4 => tile256::<4>(steps, a, b, c, ldc, add),
                5 => tile256::<5>(steps, a, b, c, ldc, add),
                _ => return false,
            }
            true
        }
    }

    /// `R` rows of a 6-row panel.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile256<const R: usize>(steps: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, add: bool) {
        let mut r = [[_mm256_setzero_ps(); 2]; R];
        for p in 0..steps {
            let b0 = _mm256_loadu_ps(b.add(p * 16));
            let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
            let ap = a.add(p * 6);
            for (i, ri) in r.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*ap.add(i));
                ri[0] = _mm256_fmadd_ps(av, b0, ri[0]);
                ri[1] = _mm256_fmadd_ps(av, b1, ri[1]);
            }
        }
        for (i, ri) in r.iter().enumerate() {
            let d = c.add(i * ldc);
            let (mut v0, mut v1) = (ri[0], ri[1]);
            if add {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(d));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(d.add(8)));
            }
            _mm256_storeu_ps(d, v0);
            _mm256_storeu_ps(d.add(8), v1);
        }
    }
}
