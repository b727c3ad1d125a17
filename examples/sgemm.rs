//! Compare f32 GEMM rates: candle (gemm crate) vs OpenBLAS (cblas_sgemm).
//! apt-get install libopenblas-dev; cargo run --release --features openblas-bench --example sgemm
use candle_core::{Device, Tensor};
#[link(name = "openblas")]
extern "C" {
    fn cblas_sgemm(layout: i32, ta: i32, tb: i32, m: i32, n: i32, k: i32, alpha: f32, a: *const f32, lda: i32, b: *const f32, ldb: i32, beta: f32, c: *mut f32, ldc: i32);
}
fn main() {
    for (m, k, n) in [(1024, 576, 1536), (1024, 1536, 576), (1024, 576, 576), (128, 576, 49152), (576, 1024, 1536)] {
        let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        let bt = b.t().unwrap();
        let _ = a.matmul(&bt).unwrap();
        let t = std::time::Instant::now();
        for _ in 0..10 {
            let _ = a.matmul(&bt).unwrap();
        }
        let candle = 10.0 * 2.0 * (m * n * k) as f64 / t.elapsed().as_secs_f64() / 1e9;
        let av = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bv = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut c = vec![0f32; m * n];
        unsafe { cblas_sgemm(101, 111, 112, m as i32, n as i32, k as i32, 1.0, av.as_ptr(), k as i32, bv.as_ptr(), k as i32, 0.0, c.as_mut_ptr(), n as i32) };
        let t = std::time::Instant::now();
        for _ in 0..10 {
            unsafe { cblas_sgemm(101, 111, 112, m as i32, n as i32, k as i32, 1.0, av.as_ptr(), k as i32, bv.as_ptr(), k as i32, 0.0, c.as_mut_ptr(), n as i32) };
        }
        let blas = 10.0 * 2.0 * (m * n * k) as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!("{m}x{k} @ {k}x{n}: candle {candle:.0} GFLOP/s, openblas {blas:.0} GFLOP/s");
    }
}
