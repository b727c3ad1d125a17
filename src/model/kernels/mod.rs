//! Hand-written kernels for hot paths no crate serves well (each tested against the plain op).
//! SIMD paths are chosen at run time (`is_x86_feature_detected!`), never by build flags.
pub mod attention;
pub mod dequant;
pub mod gemm;
pub mod ggml_gemv;
pub mod kquant;
pub mod qgemm;
pub mod qgemv;
