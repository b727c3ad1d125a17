//! Batched decoding at K-quant weights (`kquant::matmul`): m activation rows in one call
//! against m calls of one row, at Qwen2.5-1.5B's shapes. `cargo run --release --example qbatch`.
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use instill::model::kernels::kquant;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    for (n, k) in [(8960, 1536), (1536, 1536)] {
        for dt in [GgmlDType::Q4K, GgmlDType::Q6K] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
            let b = QTensor::quantize(&w, dt).unwrap().data().unwrap().to_vec();
            let x1: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
            let t1 = best(30, || drop(std::hint::black_box(kquant::matmul(dt, &b, n, k, &x1, 1))));
            for m in [4usize, 8, 16] {
                let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
                let tm = best(20, || drop(std::hint::black_box(kquant::matmul(dt, &b, n, k, &x, m))));
                let g = |s: f64, rows: usize| (n * k * rows) as f64 / s / 1e9;
                println!(
                    "{dt:?} {n}x{k} m={m:<2} {:7.0} us {:5.1} GMAC/s; one row {:6.0} us {:5.1} GMAC/s; m rows together {:.2}x faster per row",
                    tm * 1e6,
                    g(tm, m),
                    t1 * 1e6,
                    g(t1, 1),
                    t1 * m as f64 / tm
                );
            }
        }
    }
}
