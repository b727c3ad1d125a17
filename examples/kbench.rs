//! Micro-benchmark of our GGUF kernels against candle's: K-quant and Q4_0 / Q5_1
//! matrix-vector products, Q8_K activation quantization and prefill's dequantization.
//! `cargo run --release --example kbench`; best of alternated timings, so a busy machine
//! disturbs it less.
use candle_core::quantized::k_quants::*;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use instill::model::kernels::{dequant, ggml_gemv, kquant, qgemv};
use std::time::Instant;

// As in the binary: mimalloc, keeping freed pages (fresh ones would time page faults).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Best times of `reps` calls of `a` and of `b`, alternated so both see the same machine.
fn best2(reps: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    let (mut ta, mut tb) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..=reps {
        ta = ta.min(time(&mut a));
        tb = tb.min(time(&mut b));
    }
    (ta, tb)
}

fn report(what: &str, dtype: GgmlDType, m: usize, s: f64, macs: usize) {
    println!("{what:<24} {dtype:?} m={m}: {:8.1} us {:6.1} GMAC/s", s * 1e6, macs as f64 / s / 1e9);
}

fn bench(dtype: GgmlDType, n: usize, k: usize) {
    let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, dtype).unwrap();
    let bytes = q.data().unwrap().to_vec();
    for m in [1usize, 4] {
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        if kquant::plain(dtype, &bytes, n, k, &x, m).is_some() {
            let ours = || drop(std::hint::black_box(kquant::matmul(dtype, &bytes, n, k, &x, m)));
            let (s, c) = best2(300 / m, ours, || drop(std::hint::black_box(kquant::plain(dtype, &bytes, n, k, &x, m))));
            report("gemv ours", dtype, m, s, n * k * m);
            report("gemv candle vec_dot", dtype, m, c, n * k * m);
        }
    }
    let ours = || drop(std::hint::black_box(dequant::dequantize(&q).unwrap()));
    let (s, c) = best2(30, ours, || drop(std::hint::black_box(q.dequantize(&Device::Cpu).unwrap())));
    println!("dequantize ours        {dtype:?}: {:8.1} us {:6.2} Gvalues/s", s * 1e6, (n * k) as f64 / s / 1e9);
    println!("dequantize candle      {dtype:?}: {:8.1} us {:6.2} Gvalues/s", c * 1e6, (n * k) as f64 / c / 1e9);
}

/// Q4_0 / Q5_1 decode products: ours (`qgemv`) against candle's per-block dot products.
fn bench_32<T: GgmlType>(dtype: GgmlDType, format: qgemv::Format, n: usize, k: usize) {
    let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
    let bytes = QTensor::quantize(&w, dtype).unwrap().data().unwrap().to_vec();
    for m in [1usize, 4] {
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let ours = || drop(std::hint::black_box(qgemv::matmul(format, &bytes, n, k, &x, m)));
        let (s, c) = best2(300 / m, ours, || drop(std::hint::black_box(ggml_gemv::matmul::<T>(&bytes, n, k, &x, m))));
        report("gemv ours", dtype, m, s, n * k * m);
        report("gemv candle vec_dot", dtype, m, c, n * k * m);
    }
}

fn main() {
    // SAFETY: an allocator option, set before any allocation matters (see src/main.rs).
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    // Qwen2.5-0.5B's ffn_down, its K-quant tensors (the other shapes are not multiples of 256).
    let (n, k) = (896, 4864);
    for dtype in [GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q5K, GgmlDType::Q3K, GgmlDType::Q2K] {
        bench(dtype, n, k);
    }
    for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1, GgmlDType::Q8_0] {
        bench(dtype, n, k);
    }
    bench_32::<BlockQ4_0>(GgmlDType::Q4_0, qgemv::Format::Q4_0, n, k);
    bench_32::<BlockQ5_1>(GgmlDType::Q5_1, qgemv::Format::Q5_1, n, k);
    let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut q = vec![BlockQ8K::zeros(); k / QK_K];
    let (s, c) = best2(3000, || drop(std::hint::black_box(kquant::quantize_q8k(&x))), || BlockQ8K::from_float(std::hint::black_box(&x), &mut q));
    println!("quantize Q8K ({k} values): ours {:6.2} us, candle {:6.2} us", s * 1e6, c * 1e6);
}
