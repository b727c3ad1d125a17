//! Loop one GEMM shape (for profiling the kernels): `gemm_loop M N K [f32|bf16|avx2] [iters]`.
use instill::model::kernels::gemm::{self, Isa, MatRef, Precision};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (m, n, k): (usize, usize, usize) = (a[1].parse().unwrap(), a[2].parse().unwrap(), a[3].parse().unwrap());
    let kind = a.get(4).map_or("f32", |s| s.as_str());
    let iters: usize = a.get(5).map_or(20, |s| s.parse().unwrap());
    let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
    let wb: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
    let mut c = vec![0f32; m * n];
    let (xt, wt) = (candle_core::Tensor::from_slice(&x, (m, k), &candle_core::Device::Cpu).unwrap(), candle_core::Tensor::from_slice(&w, (n, k), &candle_core::Device::Cpu).unwrap());
    let t = std::time::Instant::now();
    instill::model::on_workers(|| {
        for _ in 0..iters {
            match kind {
                "split" => gemm::run(m, n, k, MatRef::new(&x[..], k, 1), MatRef::new(&wb[..], 1, k), &mut c, n, false, gemm::isa(), Precision::AmxSplit),
                "candle" => drop(xt.matmul(&wt.t().unwrap()).unwrap()),
                "amx" => gemm::run(m, n, k, MatRef::new(&x[..], k, 1), MatRef::new(&wb[..], 1, k), &mut c, n, false, gemm::isa(), Precision::Amx),
                "bf16" => gemm::run(m, n, k, MatRef::new(&x[..], k, 1), MatRef::new(&wb[..], 1, k), &mut c, n, false, gemm::isa(), Precision::Bf16),
                "avx2" => gemm::run(m, n, k, MatRef::new(&x[..], k, 1), MatRef::new(&w[..], 1, k), &mut c, n, false, Isa::Avx2, Precision::F32),
                _ => gemm::run(m, n, k, MatRef::new(&x[..], k, 1), MatRef::new(&w[..], 1, k), &mut c, n, false, gemm::isa(), Precision::F32),
            }
        }
    });
    let s = t.elapsed().as_secs_f64();
    println!("{kind} {m}x{n}x{k}: {:.1} GFLOP/s", iters as f64 * 2.0 * (m * n * k) as f64 / s / 1e9);
}
