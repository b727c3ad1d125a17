//! Micro-benchmark of the quantized GEMV kernels: `cargo run --release --example qbench`.
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use instill::model::kernels::qgemv::{matmul_with, Format};
use std::time::Instant;

fn main() {
    let (n, k) = (4864, 896);
    for (dt, f) in [(GgmlDType::Q5_0, Format::Q5_0), (GgmlDType::Q4_1, Format::Q4_1), (GgmlDType::Q8_0, Format::Q8_0)] {
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dt).unwrap();
        let bytes = q.data().unwrap().to_vec();
        for m in [1usize, 4, 16, 64] {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            for wide in [false, true] {
                let reps = 2000 / m.max(1) + 5;
                let t = Instant::now();
                for _ in 0..reps {
                    std::hint::black_box(matmul_with(f, &bytes, n, k, &x, m, wide));
                }
                let s = t.elapsed().as_secs_f64() / reps as f64;
                println!("{f:?} m={m:<3} wide={wide:<5} {:8.1} us  {:6.1} GB/s of weights  {:6.1} GMAC/s", s * 1e6, bytes.len() as f64 / s / 1e9, (n * k * m) as f64 / s / 1e9);
            }
        }
    }
}
