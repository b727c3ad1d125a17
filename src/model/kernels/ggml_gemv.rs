//! Matrix products against any GGUF block type through candle's per-block dot products,
//! threaded by our rayon pool: the K-quants' path where our AVX2 kernels (`kquant`) do not
//! apply (no AVX2; aarch64, where candle has NEON). candle's own QMatMul runs on a second,
//! spinning thread pool; with both pools on two cores, each stalls the other.
use candle_core::quantized::k_quants::GgmlType;
use rayon::prelude::*;

/// Raw GGUF bytes as `count` blocks of candle's `T`.
pub fn as_blocks<T: GgmlType>(w: &[u8], count: usize) -> &[T] {
    assert_eq!(w.len(), count * std::mem::size_of::<T>(), "a whole number of blocks");
    assert_eq!(w.as_ptr() as usize % std::mem::align_of::<T>(), 0, "block storage is aligned");
    // SAFETY: the bytes are `count` blocks of T (repr(C), plain integers and f16s); size and
    // alignment were checked above.
    unsafe { std::slice::from_raw_parts(w.as_ptr() as *const T, count) }
}

/// `y (m, n) = x (m, k) . W^T` for `W` given as `n` rows of `T` blocks (raw GGUF bytes).
pub fn matmul<T: GgmlType>(w: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    let per_row = k / T::BLCK_SIZE;
    assert!(k.is_multiple_of(T::BLCK_SIZE) && x.len() == m * k);
    let blocks = as_blocks::<T>(w, n * per_row);
    let xq: Vec<Vec<T::VecDotType>> = (0..m)
        .map(|i| {
            let mut q = vec![T::VecDotType::zeros(); k / T::VecDotType::BLCK_SIZE];
            T::VecDotType::from_float(&x[i * k..(i + 1) * k], &mut q);
            q
        })
        .collect();
    let mut out_t = vec![0f32; n * m];
    const CHUNK: usize = 16;
    out_t.par_chunks_mut(CHUNK * m).enumerate().for_each(|(c, dst)| {
        for (j, out) in dst.chunks_mut(m).enumerate() {
            let row = &blocks[(c * CHUNK + j) * per_row..(c * CHUNK + j + 1) * per_row];
            for (o, xr) in out.iter_mut().zip(&xq) {
                *o = T::vec_dot(k, row, xr);
            }
        }
    });
    super::qgemv::transpose_out(out_t, n, m)
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::k_quants::{BlockQ4K, BlockQ6K};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    fn check<T: super::GgmlType>(dtype: GgmlDType) {
        let (n, k, m) = (21, 512, 3);
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let bytes = q.data().unwrap().to_vec();
        let want = candle_core::quantized::QMatMul::from_qtensor(q).unwrap();
        let want = candle_core::Module::forward(&want, &x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = super::matmul::<T>(&bytes, n, k, &x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), m);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-3 * (1.0 + w.abs()), "{dtype:?}: {g} vs candle {w}");
        }
    }

    #[test]
    fn k_quants_match_candle_qmatmul() {
        check::<BlockQ4K>(GgmlDType::Q4K);
        check::<BlockQ6K>(GgmlDType::Q6K);
    }
}
