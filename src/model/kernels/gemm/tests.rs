//! Every kernel this CPU runs against the plain reference: odd shapes, tails in every
//! dimension, transposed operands, a bf16 B, accumulation, a C row stride wider than n.
use super::*;
use rand::{Rng, SeedableRng};

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn kernels() -> Vec<(Isa, Precision)> {
    let mut v = vec![(Isa::Portable, Precision::F32)];
    let best = detect();
    if best != Isa::Portable {
        v.push((Isa::Avx2, Precision::F32));
    }
    if best == Isa::Avx512 {
        v.push((Isa::Avx512, Precision::F32));
    }
    if has_bf16_dot() {
        v.push((best, Precision::Bf16));
    }
    if has_amx() {
        v.push((best, Precision::Amx));
        v.push((best, Precision::AmxSplit));
    }
    v
}

fn round_bf16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| Bf16::from_f32(v).to_f32()).collect()
}

/// Max |got - want| relative to the largest |want|.
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).fold(0f32, |m, (g, w)| m.max((g - w).abs())) / scale
}

/// One case: A `(m, k)` (`ta`: stored transposed), B `(k, n)` (`tb`: transposed).
fn case(m: usize, n: usize, k: usize, ta: bool, tb: bool, accumulate: bool) {
    let (av, bv) = (random(m * k, 1 + m as u64), random(k * n, 2 + n as u64));
    let a = if ta { MatRef::new(&av[..], 1, m) } else { MatRef::new(&av[..], k, 1) };
    let b = if tb { MatRef::new(&bv[..], 1, k) } else { MatRef::new(&bv[..], n, 1) };
    let ldc = n + 3;
    let c0 = random(m * ldc, 3);
    for (isa, p) in kernels() {
        let mut want = c0.clone();
        let (ar, br) = match p {
            Precision::F32 => (av.clone(), bv.clone()),
            // Only B is rounded: A's two bf16 parts carry ~16 bits.
            Precision::AmxSplit => (av.clone(), round_bf16(&bv)),
            _ => (round_bf16(&av), round_bf16(&bv)),
        };
        let (ra, rb) = (MatRef { data: &ar[..], ..a }, MatRef { data: &br[..], ..b });
        reference::gemm(m, n, k, ra, rb, &mut want, ldc, accumulate);
        let mut got = c0.clone();
        run(m, n, k, a, b, &mut got, ldc, accumulate, isa, p);
        let tol = 2e-6 * (k as f32).sqrt().max(1.0) + if p == Precision::F32 { 0.0 } else { 1e-5 };
        let e = rel_err(&got, &want);
        assert!(e < tol, "{isa:?} {p:?} m {m} n {n} k {k} ta {ta} tb {tb} acc {accumulate}: error {e}");
        // The padding between rows of C is never written.
        for i in 0..m {
            assert_eq!(&got[i * ldc + n..(i + 1) * ldc], &c0[i * ldc + n..(i + 1) * ldc]);
        }
    }
}

#[test]
fn kernels_match_the_reference_on_odd_shapes() {
    for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (12, 32, 64), (13, 33, 65), (25, 70, 257), (7, 200, 3), (100, 17, 300), (37, 64, 513)] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            case(m, n, k, ta, tb, false);
        }
        case(m, n, k, false, true, true);
    }
}

#[test]
fn threaded_split_matches_the_reference() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    pool.install(|| {
        for &(m, n, k) in &[(300, 250, 70), (40, 1000, 64), (500, 20, 300)] {
            case(m, n, k, false, true, false);
            case(m, n, k, true, false, true);
        }
    });
}

#[test]
fn bf16_weights_are_read_as_they_are() {
    let (m, n, k) = (29, 45, 77);
    let av = random(m * k, 5);
    let w: Vec<Bf16> = random(n * k, 6).into_iter().map(Bf16::from_f32).collect();
    let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
    let mut want = vec![0f32; m * n];
    reference::gemm(m, n, k, MatRef::new(&av[..], k, 1), MatRef::new(&wf[..], 1, k), &mut want, n, false);
    let mut got = vec![0f32; m * n];
    sgemm(m, n, k, MatRef::new(&av[..], k, 1), MatRef::new(&w[..], 1, k), &mut got, n, false);
    assert!(rel_err(&got, &want) < 1e-5);
}

#[test]
fn empty_k_clears_or_keeps_c() {
    let mut c = vec![5f32; 6];
    let (a, b): (Vec<f32>, Vec<f32>) = (vec![], vec![]);
    sgemm(2, 3, 0, MatRef::new(&a[..], 0, 1), MatRef::new(&b[..], 3, 1), &mut c, 3, true);
    assert_eq!(c, vec![5.0; 6]);
    sgemm(2, 3, 0, MatRef::new(&a[..], 0, 1), MatRef::new(&b[..], 3, 1), &mut c, 3, false);
    assert_eq!(c, vec![0.0; 6]);
}

/// A row's result does not depend on how many rows share the product (the server's
/// batch-invariant decoding relies on it): bit for bit, m = 1 against m = 300.
#[test]
fn rows_are_batch_invariant() {
    let (m, n, k) = (300, 70, 600);
    let (av, bv) = (random(m * k, 7), random(k * n, 8));
    let b = MatRef::new(&bv[..], 1, k);
    for (isa, p) in kernels() {
        let mut all = vec![0f32; m * n];
        run(m, n, k, MatRef::new(&av[..], k, 1), b, &mut all, n, false, isa, p);
        for i in [0, 13, 299] {
            let mut one = vec![0f32; n];
            run(1, n, k, MatRef::new(&av[i * k..], k, 1), b, &mut one, n, false, isa, p);
            assert_eq!(one, all[i * n..(i + 1) * n], "{isa:?} {p:?} row {i}");
        }
    }
}

/// The SIMD packers (gathers, `vcvtne2ps2bf16`) give the scalar packers' bits.
#[test]
fn simd_packing_equals_scalar_packing() {
    let (kc, nc) = (37, 40);
    let w = random(nc * kc, 9);
    let wb: Vec<Bf16> = w.iter().map(|&v| Bf16::from_f32(v)).collect();
    let want = |at: &dyn Fn(usize, usize) -> f32| {
        let mut out = vec![0u32; 2 * 32 * kc.div_ceil(2)];
        for (q, panel) in out.chunks_mut(32 * kc.div_ceil(2)).enumerate() {
            for j in 0..32.min(nc - q * 32) {
                for p in 0..kc.div_ceil(2) {
                    let hi = (2 * p + 1 < kc).then(|| at(2 * p + 1, q * 32 + j));
                    panel[p * 32 + j] = bf16::pair(at(2 * p, q * 32 + j), hi);
                }
            }
        }
        out
    };
    let mut got = vec![0u32; 2 * 32 * kc.div_ceil(2)];
    bf16::pack_b::<32, f32>(MatRef::new(&w[..], 1, kc), kc, nc, &mut got);
    assert_eq!(got, want(&|p, j| w[j * kc + p]));
    bf16::pack_b::<32, Bf16>(MatRef::new(&wb[..], 1, kc), kc, nc, &mut got);
    assert_eq!(got, want(&|p, j| wb[j * kc + p].to_f32()));
    // f32 column-major into the f32 kernels' panels.
    let mut got = vec![0f32; 2 * 32 * kc];
    f32k::pack_b::<32, f32>(MatRef::new(&w[..], 1, kc), kc, nc, &mut got);
    for (q, panel) in got.chunks(32 * kc).enumerate() {
        for p in 0..kc {
            for j in 0..32.min(nc - q * 32) {
                assert_eq!(panel[p * 32 + j], w[(q * 32 + j) * kc + p]);
            }
        }
    }
    // Row-major f32 A (strided rows, a ragged last panel) into 12-row panels.
    let (mc, lda) = (29, kc + 3);
    let x = random(mc * lda, 10);
    let mut got = vec![f32::NAN; 12 * kc * mc.div_ceil(12)];
    f32k::pack_a::<12, f32>(MatRef::new(&x[..], lda, 1), mc, kc, &mut got);
    for (q, panel) in got.chunks(12 * kc).enumerate() {
        for p in 0..kc {
            for i in 0..12 {
                let want = if q * 12 + i < mc { x[(q * 12 + i) * lda + p] } else { 0.0 };
                assert_eq!(panel[p * 12 + i], want, "panel {q} step {p} row {i}");
            }
        }
    }
}
