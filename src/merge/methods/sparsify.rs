//! mergekit's `sparsify.py`: which entries of a delta survive, and the L1 rescale.
//!
//! Ties in magnitude are broken by position (lower index kept first, as a stable sort
//! would). torch's CPU sort is not stable, so on tensors whose kept/dropped boundary falls
//! inside a run of equal magnitudes mergekit keeps an arbitrary subset of that run; away
//! from such ties the kept sets are identical.
use rand::{rngs::StdRng, Rng, SeedableRng};
use rayon::prelude::*;

/// mergekit's `rescaled_masked_tensor` with the L1 norm: scale the kept values so their
/// L1 norm equals the original's (unless either is below 1e-7).
pub fn rescale_l1(orig: &[f32], kept: &mut [f32]) {
    let before: f64 = orig.par_iter().map(|x| x.abs() as f64).sum();
    let after: f64 = kept.par_iter().map(|x| x.abs() as f64).sum();
    if before < 1e-7 || after < 1e-7 {
        return;
    }
    let s = (before as f32) / (after as f32);
    kept.par_iter_mut().for_each(|x| *x *= s);
}

/// `x` with only its `k` largest magnitudes kept (ties: lower index first), found by
/// selecting the k-th largest magnitude (one f32 copy, no index array).
fn keep_top_k(x: &[f32], k: usize) -> Vec<f32> {
    use std::cmp::Ordering::{Equal, Greater};
    let mut mags: Vec<f32> = x.par_iter().map(|v| v.abs()).collect();
    let (_, kth, _) = mags.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let thr = *kth;
    drop(mags);
    let above = x.par_iter().filter(|v| v.abs().total_cmp(&thr) == Greater).count();
    let mut ties = k - above;
    x.iter()
        .map(|v| match v.abs().total_cmp(&thr) {
            Greater => *v,
            Equal if ties > 0 => {
                ties -= 1;
                *v
            }
            _ => 0.0,
        })
        .collect()
}

fn masked(x: &[f32], keep: &[usize]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for &i in keep {
        out[i] = x[i];
    }
    out
}

/// `magnitude`: keep the `max(1, int(density * n))` largest magnitudes.
pub fn magnitude(x: &[f32], density: f64, rescale: bool) -> Vec<f32> {
    if density >= 1.0 {
        return x.to_vec();
    }
    if density <= 0.0 || x.is_empty() {
        return vec![0.0; x.len()];
    }
    let k = ((density * x.len() as f64) as usize).max(1).min(x.len());
    let mut out = keep_top_k(x, k);
    if rescale {
        rescale_l1(x, &mut out);
    }
    out
}

/// `magnitude_outliers` (Model Breadcrumbs): drop the `int(gamma * n)` largest, then the
/// smallest, keeping `int(density * n)` (fewer outliers are dropped when needed).
pub fn magnitude_outliers(x: &[f32], density: f64, gamma: f64, rescale: bool) -> Vec<f32> {
    if density >= 1.0 {
        return x.to_vec();
    }
    let n = x.len();
    let target = (density * n as f64) as usize;
    let n_top = (gamma * n as f64) as usize;
    let n_bot = n.saturating_sub(target + n_top);
    // Ascending order, ties by index: the kept ones are [n_bot, n_bot + target).
    let mut idx: Vec<usize> = (0..n).collect();
    idx.par_sort_unstable_by(|a, b| x[*a].abs().total_cmp(&x[*b].abs()).then(a.cmp(b)));
    let mut out = masked(x, &idx[n_bot..(n_bot + target).min(n)]);
    if rescale {
        rescale_l1(x, &mut out);
    }
    out
}

/// `bernoulli` (DARE): keep each entry with probability `density`, from a seeded
/// generator (torch's generator cannot be reproduced); mergekit rescales to the original
/// L1 norm, the paper (`paper = true`) by `1 / density`.
pub fn bernoulli(x: &[f32], density: f64, rescale: bool, seed: u64, paper: bool) -> Vec<f32> {
    if density >= 1.0 {
        return x.to_vec();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out: Vec<f32> = x.iter().map(|&v| if rng.gen::<f64>() < density { v } else { 0.0 }).collect();
    if rescale {
        if paper {
            let s = (1.0 / density) as f32;
            out.iter_mut().for_each(|v| *v *= s);
        } else {
            rescale_l1(x, &mut out);
        }
    }
    out
}

/// `della_magprune` (DELLA): per row, keep probabilities rise linearly with the
/// magnitude rank from `density - epsilon` to `density + epsilon`; rescaled like DARE
/// (the paper: each kept entry by `1 / p_i`).
pub fn della(x: &[f32], cols: usize, density: f64, epsilon: f64, rescale: bool, seed: u64, paper: bool) -> crate::Result<Vec<f32>> {
    if density >= 1.0 {
        return Ok(x.to_vec());
    }
    if density <= 0.0 {
        return Ok(vec![0.0; x.len()]);
    }
    if density + epsilon >= 1.0 || density - epsilon <= 0.0 {
        return Err(crate::Error::Input(format!("della: epsilon {epsilon} must keep density +/- epsilon in (0, 1) (density {density})")));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = vec![0f32; x.len()];
    let cols = cols.max(1);
    for (row, o) in x.chunks(cols).zip(out.chunks_mut(cols)) {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_unstable_by(|a, b| row[*a].abs().total_cmp(&row[*b].abs()).then(a.cmp(b)));
        let span = (row.len().max(2) - 1) as f64;
        for (rank, &i) in idx.iter().enumerate() {
            let p = (density - epsilon) + (rank as f64 / span).clamp(0.0, 1.0) * 2.0 * epsilon;
            if rng.gen::<f64>() < p {
                o[i] = if rescale && paper { (row[i] as f64 / p) as f32 } else { row[i] };
            }
        }
    }
    if rescale && !paper {
        rescale_l1(x, &mut out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitude_keeps_the_largest_and_breaks_ties_by_position() {
        let x = [0.1, -0.5, 0.5, 0.2, -0.05];
        assert_eq!(magnitude(&x, 0.4, false), vec![0.0, -0.5, 0.5, 0.0, 0.0]);
        assert_eq!(magnitude(&x, 0.2, false), vec![0.0, -0.5, 0.0, 0.0, 0.0]);
        // at least one survives
        assert_eq!(magnitude(&x, 0.01, false), vec![0.0, -0.5, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn breadcrumbs_drop_both_ends() {
        let x: Vec<f32> = (1..=10).map(|v| v as f32).collect();
        // keep 5, drop the top 1 -> ranks 5..9 (values 5..9)
        let y = magnitude_outliers(&x, 0.5, 0.1, false);
        assert_eq!(y, vec![0.0, 0.0, 0.0, 0.0, 5.0, 6.0, 7.0, 8.0, 9.0, 0.0]);
    }

    #[test]
    fn dare_rescales_to_the_l1_norm_and_is_seeded() {
        let x: Vec<f32> = (0..10_000).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let a = bernoulli(&x, 0.3, true, 7, false);
        assert_eq!(a, bernoulli(&x, 0.3, true, 7, false));
        assert_ne!(a, bernoulli(&x, 0.3, true, 8, false));
        let kept = a.iter().filter(|v| **v != 0.0).count() as f64 / x.len() as f64;
        assert!((kept - 0.3).abs() < 0.02, "{kept}");
        let l1 = |v: &[f32]| v.iter().map(|x| x.abs() as f64).sum::<f64>();
        assert!((l1(&a) / l1(&x) - 1.0).abs() < 1e-5);
    }
}
