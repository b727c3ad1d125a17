//! The AMX bf16 micro-kernel (Sapphire Rapids and later): `tdpbf16ps` multiplies a
//! 16 x 32 bf16 tile by a 32 x 16 one into a 16 x 16 f32 tile, 8,192 multiply-adds per
//! instruction. A 32 x 32 tile of C lives in four tile registers (tmm0-3); per 32 values
//! of k it loads two A tiles (tmm4-5) and two B tiles (tmm6-7).
//!
//! Written with `asm!` (the AMX intrinsics are not stable Rust). The tile registers are
//! never touched by compiled code, so each instruction is its own `asm!` block.
use super::bf16::pair;
use super::{Bf16, Elem, Kernel, MatRef};
use std::arch::asm;
use std::sync::OnceLock;

/// AMX-BF16 in the CPU, and the kernel's permission to use the tile data (Linux asks each
/// process to request it: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`).
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        if std::env::var("INSTILL_GEMM_AMX").as_deref() == Ok("0") {
            return false;
        }
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (tile, bf16) = (leaf7.edx >> 24 & 1 == 1, leaf7.edx >> 22 & 1 == 1);
        if !(tile && bf16 && std::arch::is_x86_feature_detected!("avx512f")) {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain syscall; it fails cleanly on kernels without AMX support.
        unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    })
}

/// Panel layout of A: `[k block of 32][row of MR][16 pairs]`, so a 16-row tile is 1 KiB
/// contiguous (stride 64 bytes). With `SPLIT`, each block is followed by the block of
/// residuals `a - bf16(a)`, also in bf16: `A B = A_hi B + A_lo B` to ~16 bits, exact when
/// B is bf16 (a bf16 weight).
fn pack_a<const SPLIT: bool, A: Elem>(a: MatRef<A>, mc: usize, kc: usize, out: &mut [u32]) {
    let blocks = kc.div_ceil(32);
    let rep = if SPLIT { 2 } else { 1 };
    for (q, panel) in out.chunks_mut(32 * 16 * blocks * rep).take(mc.div_ceil(32)).enumerate() {
        let rows = 32.min(mc - q * 32);
        if rows < 32 || !kc.is_multiple_of(32) {
            panel.fill(0);
        }
        for i in 0..rows {
            let r = a.offset(q * 32 + i, 0);
            let done = convert_row::<SPLIT, A>(r, kc, &mut panel[i * 16..], rep);
            for p in done * 16..kc.div_ceil(2) {
                let lo = r.data[2 * p * r.cs].f32();
                let hi = if 2 * p + 1 < kc { r.data[(2 * p + 1) * r.cs].f32() } else { 0.0 };
                let at = |part: usize| ((p / 16 * rep + part) * 32 + i) * 16 + p % 16;
                let (blo, bhi) = (Bf16::from_f32(lo), Bf16::from_f32(hi));
                panel[at(0)] = pair(blo, Some(bhi));
                if SPLIT {
                    panel[at(1)] = pair(lo - blo.to_f32(), Some(hi - bhi.to_f32()));
                }
            }
        }
    }
}

/// Whole 32-value blocks of a contiguous f32 row, rounded with `vcvtne2ps2bf16` (the
/// same round-to-nearest-even as the scalar path) into `out[(kb * rep + part) * 512..]`;
/// how many blocks it did (0 where the row is not contiguous f32).
fn convert_row<const SPLIT: bool, A: Elem>(r: MatRef<A>, kc: usize, out: &mut [u32], rep: usize) -> usize {
    let Some(data) = A::as_f32(r.data) else { return 0 };
    if r.cs != 1 || !super::has_bf16_dot() {
        return 0;
    }
    let blocks = kc / 32;
    assert!(data.len() >= blocks * 32 && out.len() >= ((blocks * rep).max(1) - 1) * 512 + 16);
    for kb in 0..blocks {
        // SAFETY: AVX512-BF16 was detected; bounds are asserted above.
        unsafe {
            let hi = out.as_mut_ptr().add(kb * rep * 512);
            let lo = if SPLIT { Some(out.as_mut_ptr().add((kb * rep + 1) * 512)) } else { None };
            convert_block(data.as_ptr().add(kb * 32), hi, lo);
        }
    }
    blocks
}

/// 32 f32 -> 16 bf16 pairs at `hi`; with `lo`, the residuals `x - bf16(x)` too.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert_block(src: *const f32, hi: *mut u32, lo: Option<*mut u32>) {
    use std::arch::x86_64::*;
    let (x0, x1) = (_mm512_loadu_ps(src), _mm512_loadu_ps(src.add(16)));
    let h: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(x1, x0));
    _mm512_storeu_si512(hi as *mut __m512i, h);
    if let Some(lo) = lo {
        // bf16 -> f32 is a 16-bit shift.
        let widen = |v: __m256i| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(v)));
        let (h0, h1) = (widen(_mm512_castsi512_si256(h)), widen(_mm512_extracti64x4_epi64::<1>(h)));
        let l: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(_mm512_sub_ps(x1, h1), _mm512_sub_ps(x0, h0)));
        _mm512_storeu_si512(lo as *mut __m512i, l);
    }
}

/// Panel layout of B: `[k pair][32 columns]` (the AVX512-BF16 kernel's), zero-padded to
/// whole blocks of 32 k values; a tile is 16 pairs of 16 columns at stride 128 bytes.
/// With `SPLIT`, every block appears twice (for A's high and low parts).
fn pack_b<const SPLIT: bool, B: Elem>(b: MatRef<B>, kc: usize, nc: usize, out: &mut [u32]) {
    let blocks = kc.div_ceil(32);
    let rep = if SPLIT { 2 } else { 1 };
    let real = kc.div_ceil(2);
    let block = 32 * 16;
    for (q, panel) in out.chunks_mut(block * blocks * rep).take(nc.div_ceil(32)).enumerate() {
        let plain = &mut panel[..block * blocks];
        super::bf16::pack_b::<32, B>(b.offset(0, q * 32), kc, 32.min(nc - q * 32), &mut plain[..32 * real]);
        plain[32 * real..].fill(0);
        if SPLIT {
            // Spread [b0 b1 ..] to [b0 b0 b1 b1 ..], from the end so nothing is overwritten.
            for kb in (0..blocks).rev() {
                panel.copy_within(kb * block..(kb + 1) * block, 2 * kb * block);
                panel.copy_within(2 * kb * block..(2 * kb + 1) * block, (2 * kb + 1) * block);
            }
        }
    }
}

/// `SPLIT = false`: A rounded to bf16 (one product). `SPLIT = true`: A as bf16 high and
/// low parts (two products, f32-like accuracy for a bf16 B).
pub(super) struct Amx<const SPLIT: bool>;

impl<const SPLIT: bool> Kernel for Amx<SPLIT> {
    const MR: usize = 32;
    const NR: usize = 32;
    const KU: usize = 2;
    const STEP_ALIGN: usize = 16;
    const K_REPEAT: usize = if SPLIT { 2 } else { 1 };
    type P = u32;
    const KC: usize = if SPLIT { 256 } else { 512 };
    const MC: usize = 256;
    fn pack_a<A: Elem>(a: MatRef<A>, mc: usize, kc: usize, out: &mut [u32]) {
        pack_a::<SPLIT, A>(a, mc, kc, out)
    }
    fn pack_b<B: Elem>(b: MatRef<B>, kc: usize, nc: usize, out: &mut [u32]) {
        pack_b::<SPLIT, B>(b, kc, nc, out)
    }
    unsafe fn tile(steps: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize, add: bool) {
        configure();
        tile(steps, a, b, c, ldc, add)
    }
}

thread_local! {
    static CONFIGURED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Load the tile configuration once per thread: eight tiles of 16 rows x 64 bytes.
fn configure() {
    if CONFIGURED.with(|c| c.replace(true)) {
        return;
    }
    let mut cfg = [0u8; 64];
    cfg[0] = 1; // palette 1
    for t in 0..8 {
        cfg[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
        cfg[48 + t] = 16;
    }
    // SAFETY: `available()` returned true before any kernel runs; the config is valid.
    unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack, readonly)) };
}

/// C (32 x 32, stride `ldc`) (+)= A panel x B panel over `steps` k pairs (a multiple of 16).
#[inline(never)]
unsafe fn tile(steps: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize, add: bool) {
    let cs = ldc * 4;
    let c8 = c as *mut u8;
    let quads = [c8, c8.add(64), c8.add(16 * cs), c8.add(16 * cs + 64)];
    if add {
        asm!("tileloadd tmm0, [{p} + {s}]", p = in(reg) quads[0], s = in(reg) cs, options(nostack, readonly));
        asm!("tileloadd tmm1, [{p} + {s}]", p = in(reg) quads[1], s = in(reg) cs, options(nostack, readonly));
        asm!("tileloadd tmm2, [{p} + {s}]", p = in(reg) quads[2], s = in(reg) cs, options(nostack, readonly));
        asm!("tileloadd tmm3, [{p} + {s}]", p = in(reg) quads[3], s = in(reg) cs, options(nostack, readonly));
    } else {
        asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
    }
    for kb in 0..steps / 16 {
        let ap = a.add(kb * 32 * 16) as *const u8;
        let bp = b.add(kb * 16 * 32) as *const u8;
        asm!(
            "tileloadd tmm4, [{a0} + {s64}]",
            "tileloadd tmm5, [{a1} + {s64}]",
            "tileloadd tmm6, [{b0} + {s128}]",
            "tileloadd tmm7, [{b1} + {s128}]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) ap, a1 = in(reg) ap.add(16 * 64), b0 = in(reg) bp, b1 = in(reg) bp.add(64),
            s64 = in(reg) 64usize, s128 = in(reg) 128usize,
            options(nostack, readonly)
        );
    }
    asm!("tilestored [{p} + {s}], tmm0", p = in(reg) quads[0], s = in(reg) cs, options(nostack));
    asm!("tilestored [{p} + {s}], tmm1", p = in(reg) quads[1], s = in(reg) cs, options(nostack));
    asm!("tilestored [{p} + {s}], tmm2", p = in(reg) quads[2], s = in(reg) cs, options(nostack));
    asm!("tilestored [{p} + {s}], tmm3", p = in(reg) quads[3], s = in(reg) cs, options(nostack));
}
