//! Our GEMM: packed, cache-blocked, with AVX-512 and AVX2 micro-kernels chosen at run
//! time (a portable one elsewhere), for f32 and bf16 inputs with f32 accumulation.
//!
//! Why our own: the `gemm` crate (candle's) runs 139-198 GFLOP/s at the model's shapes on
//! this 2-core machine, it has no bf16 dot-product path (`vdpbf16ps`), and a bf16 weight
//! had to be widened to a fresh f32 copy before every product. Here B's elements are
//! converted while packing, so a bf16 weight is read as it is.
//!
//! Layout: `C (m, n) = A (m, k) B (k, n)`, A and B with any strides (a transposed operand
//! is a stride swap, never a copy), C row-major. The loops are BLIS's: B is packed in
//! `KC x NR` panels, A in `MR x KC` panels; the micro-kernel keeps an `MR x NR` tile of C
//! in registers. Two or more threads split C into disjoint rectangles.
#[cfg(target_arch = "x86_64")]
mod amx;
mod bf16;
mod f32k;
pub mod reference;
pub mod tensor;

use half::bf16 as Bf16;
use std::sync::OnceLock;

/// A read-only matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

/// An element the packers widen to f32 (f32 itself, or a bf16 weight).
pub trait Elem: Copy + Send + Sync + 'static {
    fn f32(self) -> f32;
    /// The bf16 bits (rounded to nearest even), for the bf16 kernels.
    fn bf16_bits(self) -> u16;
    /// The data as f32, when it is f32 (the packers' SIMD paths).
    fn as_f32(_data: &[Self]) -> Option<&[f32]> {
        None
    }
    /// The data as bf16, when it is bf16.
    fn as_bf16(_data: &[Self]) -> Option<&[Bf16]> {
        None
    }
}

impl Elem for f32 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn bf16_bits(self) -> u16 {
        Bf16::from_f32(self).to_bits()
    }
    fn as_f32(data: &[f32]) -> Option<&[f32]> {
        Some(data)
    }
}

impl Elem for Bf16 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn bf16_bits(self) -> u16 {
        self.to_bits()
    }
    fn as_bf16(data: &[Bf16]) -> Option<&[Bf16]> {
        Some(data)
    }
}

impl<'a, T: Elem> MatRef<'a, T> {
    pub fn new(data: &'a [T], rs: usize, cs: usize) -> Self {
        MatRef { data, rs, cs }
    }

    #[inline(always)]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs].f32()
    }

    /// The view starting at `(i, j)`.
    fn offset(&self, i: usize, j: usize) -> MatRef<'a, T> {
        MatRef { data: &self.data[i * self.rs + j * self.cs..], rs: self.rs, cs: self.cs }
    }
}

/// The instruction set the kernels use on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

/// Detected once: the best f32 kernel this CPU runs (`INSTILL_GEMM_ISA=avx2|portable`
/// forces a lower one, for tests and comparisons).
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = detect();
        match std::env::var("INSTILL_GEMM_ISA").as_deref() {
            Ok("portable") => Isa::Portable,
            Ok("avx2") if best != Isa::Portable => Isa::Avx2,
            _ => best,
        }
    })
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// Does this CPU have `vdpbf16ps` (AVX512-BF16)?
pub fn has_bf16_dot() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512bf16") && std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// `C = A B` (or `C += A B` with `accumulate`), f32 arithmetic, on the calling thread's
/// rayon pool. `c` holds `m` rows of stride `ldc`.
#[allow(clippy::too_many_arguments)] // BLAS's shape: dimensions, operands, output, stride, mode
pub fn sgemm<A: Elem, B: Elem>(m: usize, n: usize, k: usize, a: MatRef<A>, b: MatRef<B>, c: &mut [f32], ldc: usize, accumulate: bool) {
    run(m, n, k, a, b, c, ldc, accumulate, isa(), Precision::F32);
}

/// `C = A B` with both operands rounded to bf16 and products summed in f32 (AMX or
/// `vdpbf16ps`); the f32 kernel where the CPU has neither.
#[allow(clippy::too_many_arguments)] // BLAS's shape: dimensions, operands, output, stride, mode
pub fn bgemm<A: Elem, B: Elem>(m: usize, n: usize, k: usize, a: MatRef<A>, b: MatRef<B>, c: &mut [f32], ldc: usize, accumulate: bool) {
    run(m, n, k, a, b, c, ldc, accumulate, isa(), bf16_precision());
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// bf16 operands, `vdpbf16ps` (AVX512-BF16).
    Bf16,
    /// bf16 operands, AMX tiles.
    Amx,
    /// A bf16 B, and A as two bf16 parts (high, residual), AMX tiles: about 16 bits of A,
    /// so with a bf16 weight the product is as close to f32 as the f32 kernels'.
    AmxSplit,
}

/// Does this CPU have AMX-BF16, and may this process use it?
pub fn has_amx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        amx::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The precision a bf16 weight gets ([`crate::model::linear::precision`]): AMX with A in
/// two parts where there is AMX, else f32.
pub fn bf16_precision_split() -> Precision {
    if has_amx() {
        Precision::AmxSplit
    } else {
        Precision::F32
    }
}

/// The fastest bf16 path here: AMX, then `vdpbf16ps`, else f32.
pub fn bf16_precision() -> Precision {
    if has_amx() {
        Precision::Amx
    } else if has_bf16_dot() {
        Precision::Bf16
    } else {
        Precision::F32
    }
}

/// Any kernel by name (tests compare each with the reference).
#[allow(clippy::too_many_arguments)]
pub fn run<A: Elem, B: Elem>(m: usize, n: usize, k: usize, a: MatRef<A>, b: MatRef<B>, c: &mut [f32], ldc: usize, accumulate: bool, isa: Isa, p: Precision) {
    assert!(ldc >= n && (m == 0 || c.len() >= (m - 1) * ldc + n), "gemm: C is too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.chunks_mut(ldc).take(m).for_each(|r| r[..n].fill(0.0));
        }
        return;
    }
    let out = Out { ptr: c.as_mut_ptr(), ldc };
    match (p, isa) {
        #[cfg(target_arch = "x86_64")]
        (Precision::Amx, _) if has_amx() => split::<amx::Amx<false>, A, B>(m, n, k, a, b, out, accumulate),
        #[cfg(target_arch = "x86_64")]
        (Precision::AmxSplit, _) if has_amx() => split::<amx::Amx<true>, A, B>(m, n, k, a, b, out, accumulate),
        // Without AMX a split product is the f32 one.
        (Precision::AmxSplit, isa) => run(m, n, k, a, b, c, ldc, accumulate, isa, Precision::F32),
        (Precision::Bf16 | Precision::Amx, _) if has_bf16_dot() => split::<bf16::Avx512Bf16, A, B>(m, n, k, a, b, out, accumulate),
        (Precision::Bf16 | Precision::Amx, _) => split::<f32k::Portable, A, B>(m, n, k, a, b, out, accumulate),
        (_, Isa::Avx512) => split::<f32k::Avx512, A, B>(m, n, k, a, b, out, accumulate),
        (_, Isa::Avx2) => split::<f32k::Avx2, A, B>(m, n, k, a, b, out, accumulate),
        (_, Isa::Portable) => split::<f32k::Portable, A, B>(m, n, k, a, b, out, accumulate),
    }
}

/// C's rows as a raw pointer: threads write disjoint rectangles of it.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    ldc: usize,
}
// SAFETY: every thread gets a disjoint rectangle (see `split`).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    fn offset(self, i: usize, j: usize) -> Out {
        // SAFETY: callers stay inside C (checked by `run`'s assert).
        Out { ptr: unsafe { self.ptr.add(i * self.ldc + j) }, ldc: self.ldc }
    }
}

/// A micro-kernel and its packing: `MR x NR` tiles of C over packed panels.
pub(crate) trait Kernel {
    const MR: usize;
    const NR: usize;
    /// k values per packed step (2 for the bf16 pair kernels).
    const KU: usize;
    /// Packed steps are padded to a multiple of this (AMX tiles take 16 pairs).
    const STEP_ALIGN: usize = 1;
    /// Packed steps per step of k (2 when A is split into two bf16 parts).
    const K_REPEAT: usize = 1;
    type P: Copy + Default + Send + Sync + 'static;
    const KC: usize = 256;
    const MC: usize = Self::MR * 16;
    const NC: usize = Self::NR * 128;
    fn pack_a<A: Elem>(a: MatRef<A>, mc: usize, kc: usize, out: &mut [Self::P]);
    fn pack_b<B: Elem>(b: MatRef<B>, kc: usize, nc: usize, out: &mut [Self::P]);
    /// `C[MR x NR] (+)= A panel x B panel` over `steps` packed steps (`KU` k values each).
    ///
    /// # Safety
    /// `a`, `b` hold full packed panels of `steps` steps; `c` has `MR` rows of `NR` values
    /// at stride `ldc`.
    unsafe fn tile(steps: usize, a: *const Self::P, b: *const Self::P, c: *mut f32, ldc: usize, accumulate: bool);
    /// The first `mr < MR` rows of a tile straight into C, when the kernel has a variant
    /// for them (false: the caller goes through a scratch tile). Each element's sum runs
    /// in the same order as in `tile`.
    ///
    /// # Safety
    /// As `tile`, with `mr` rows of C.
    unsafe fn tile_rows(_mr: usize, _steps: usize, _a: *const Self::P, _b: *const Self::P, _c: *mut f32, _ldc: usize, _accumulate: bool) -> bool {
        false
    }
}

/// Work below which one thread is faster than two (fork/join costs a few microseconds).
const PARALLEL_FLOPS: usize = 1 << 21;

/// Split C between the pool's threads (by columns when there are enough, else by rows)
/// and run the blocked loops on each part.
fn split<K: Kernel, A: Elem, B: Elem>(m: usize, n: usize, k: usize, a: MatRef<A>, b: MatRef<B>, c: Out, acc: bool) {
    let threads = rayon::current_num_threads().max(1);
    if threads == 1 || m * n * k < PARALLEL_FLOPS {
        return blocked::<K, A, B>(m, n, k, a, b, c, acc);
    }
    let by_cols = n >= threads * K::NR * 4 && (n / K::NR >= m / K::MR || m < threads * K::MR * 2);
    let (len, unit) = if by_cols { (n, K::NR) } else { (m, K::MR) };
    let units = len.div_ceil(unit);
    let parts = threads.min(units);
    rayon::scope(|s| {
        for t in 0..parts {
            let (u0, u1) = (units * t / parts, units * (t + 1) / parts);
            let (lo, hi) = (u0 * unit, (u1 * unit).min(len));
            if lo >= hi {
                continue;
            }
            let job = move || {
                if by_cols {
                    blocked::<K, A, B>(m, hi - lo, k, a, b.offset(0, lo), c.offset(0, lo), acc)
                } else {
                    blocked::<K, A, B>(hi - lo, n, k, a.offset(lo, 0), b, c.offset(lo, 0), acc)
                }
            };
            if t + 1 == parts {
                job();
            } else {
                s.spawn(move |_| job());
            }
        }
    });
}

thread_local! {
    static BUFS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// A 64-byte-aligned `&mut [P]` of `len` inside `buf` (grown as needed; kept per thread,
/// so steady-state calls allocate nothing).
fn aligned<P: Copy + Default>(buf: &mut Vec<u8>, len: usize) -> &mut [P] {
    let bytes = len * std::mem::size_of::<P>() + 64;
    if buf.len() < bytes {
        buf.resize(bytes, 0);
    }
    let skip = buf.as_ptr().align_offset(64);
    // SAFETY: the region is inside `buf`, aligned for P (64 >= align_of P), and P is a
    // plain number type (f32 / u32) for which any bytes are valid.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().add(skip) as *mut P, len) }
}

/// The BLIS loops on one thread: `jc` (NC columns) / `pc` (KC depth, B packed) / `ic`
/// (MC rows, A packed) / `jr` / `ir` (micro-tiles).
fn blocked<K: Kernel, A: Elem, B: Elem>(m: usize, n: usize, k: usize, a: MatRef<A>, b: MatRef<B>, c: Out, acc: bool) {
    BUFS.with(|bufs| {
        let (ab, bb) = &mut *bufs.borrow_mut();
        let steps = steps::<K>(K::KC.min(k));
        let nc_max = K::NC.min(n.next_multiple_of(K::NR));
        let mc_max = K::MC.min(m.next_multiple_of(K::MR));
        let bpack = aligned::<K::P>(bb, steps * nc_max);
        let apack = aligned::<K::P>(ab, steps * mc_max);
        for jc in (0..n).step_by(K::NC) {
            let nc = K::NC.min(n - jc);
            for pc in (0..k).step_by(K::KC) {
                let kc = K::KC.min(k - pc);
                if m <= K::MC {
                    // One block of A (decoding, short prompts): B is used once per panel,
                    // so each panel is packed just before its tiles, into a buffer that
                    // stays in L1, instead of writing the whole block out first. Same
                    // arithmetic, so a row's result does not depend on m.
                    K::pack_a(a.offset(0, pc), m, kc, apack);
                    for jr in (0..nc).step_by(K::NR) {
                        let nr = K::NR.min(nc - jr);
                        K::pack_b(b.offset(pc, jc + jr), kc, nr, bpack);
                        macro_tile::<K>(m, nr, kc, apack, bpack, c.offset(0, jc + jr), acc || pc > 0);
                    }
                    continue;
                }
                K::pack_b(b.offset(pc, jc), kc, nc, bpack);
                for ic in (0..m).step_by(K::MC) {
                    let mc = K::MC.min(m - ic);
                    K::pack_a(a.offset(ic, pc), mc, kc, apack);
                    macro_tile::<K>(mc, nc, kc, apack, bpack, c.offset(ic, jc), acc || pc > 0);
                }
            }
        }
    })
}

/// Packed steps for `kc` values of k.
fn steps<K: Kernel>(kc: usize) -> usize {
    kc.div_ceil(K::KU).next_multiple_of(K::STEP_ALIGN) * K::K_REPEAT
}

/// All micro-tiles of one packed `mc x nc` block; edge tiles go through a scratch tile.
fn macro_tile<K: Kernel>(mc: usize, nc: usize, kc: usize, apack: &[K::P], bpack: &[K::P], c: Out, acc: bool) {
    let steps = steps::<K>(kc);
    let mut scratch = [0f32; 16 * 64];
    debug_assert!(K::MR * K::NR <= scratch.len());
    for jr in (0..nc).step_by(K::NR) {
        let nr = K::NR.min(nc - jr);
        let bp = &bpack[jr / K::NR * K::NR * steps..];
        for ir in (0..mc).step_by(K::MR) {
            let mr = K::MR.min(mc - ir);
            let ap = &apack[ir / K::MR * K::MR * steps..];
            let dst = c.offset(ir, jr);
            // SAFETY: the panels are packed full (zero-padded) for `steps`; a full tile
            // lies inside C, an edge tile is computed into `scratch` first.
            unsafe {
                if mr == K::MR && nr == K::NR {
                    K::tile(steps, ap.as_ptr(), bp.as_ptr(), dst.ptr, dst.ldc, acc);
                } else if nr == K::NR && K::tile_rows(mr, steps, ap.as_ptr(), bp.as_ptr(), dst.ptr, dst.ldc, acc) {
                } else {
                    // C's part goes in first and the kernel adds to it as it would in place
                    // (AMX accumulates onto the loaded tile), so edge rows round exactly as
                    // full-tile rows do: a row's result does not depend on m. Without
                    // accumulation the kernel writes the tile without reading it.
                    for i in (0..mr).filter(|_| acc) {
                        let row = std::slice::from_raw_parts(dst.ptr.add(i * dst.ldc), nr);
                        scratch[i * K::NR..i * K::NR + nr].copy_from_slice(row);
                    }
                    K::tile(steps, ap.as_ptr(), bp.as_ptr(), scratch.as_mut_ptr(), K::NR, acc);
                    for i in 0..mr {
                        let row = std::slice::from_raw_parts_mut(dst.ptr.add(i * dst.ldc), nr);
                        row.copy_from_slice(&scratch[i * K::NR..i * K::NR + nr]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
