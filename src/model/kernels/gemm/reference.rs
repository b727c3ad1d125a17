//! The plain GEMM the kernels are tested against (as llm.c keeps `matmul_forward_naive`).
use super::MatRef;

/// `C = A B` (`accumulate`: `C += A B`), with f64 sums: `A (m, k)`, `B (k, n)`, `C (m, n)`
/// row-major with row stride `ldc`.
#[allow(clippy::too_many_arguments)] // BLAS's shape: dimensions, operands, output, stride, mode
pub fn gemm(m: usize, n: usize, k: usize, a: MatRef<f32>, b: MatRef<f32>, c: &mut [f32], ldc: usize, accumulate: bool) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                s += a.at(i, p) as f64 * b.at(p, j) as f64;
            }
            let o = &mut c[i * ldc + j];
            *o = if accumulate { *o + s as f32 } else { s as f32 };
        }
    }
}
