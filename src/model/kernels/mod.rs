//! Hand-written kernels for hot paths no crate serves well (each tested against the plain op).
pub mod attention;
pub mod gemm;
pub mod ggml_gemv;
pub mod qgemv;
