//! A merge of LoRA adapters over one base written back as a LoRA adapter of rank `r`
//! (`--lora-rank R`), as PEFT's `add_weighted_adapter(combination_type="svd")` does
//! (peft 0.21.2, `_svd_generalized_task_arithmetic_weighted_adapter`): per targeted
//! module the merged delta `merged - base` is factored by a truncated SVD,
//! `B = U[:, :r] diag(S[:r])`, `A = Vh[:r, :]`, saved with `lora_alpha = r` (scale 1).
//! PEFT's optional `svd_clamp` is not applied (its default is none). Tensors no adapter
//! targets must come out of the merge equal to the base (else no LoRA can hold them).
//!
//! The SVD is a randomized subspace iteration (Halko et al. 2011; `r + 10` columns, six
//! power iterations, f64) followed by an exact eigen-decomposition of the small factor:
//! exact for deltas whose rank is at most `r + 10` (a merge of LoRAs of total rank
//! within that), and close to the best rank-`r` approximation otherwise.
use super::source::Kind;
use super::{Merge, Summary};
use crate::{Error, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rayon::prelude::*;
use std::collections::BTreeSet;
use std::path::Path;

/// `x` (rows x cols, row-major) times `y` (cols x k).
fn matmul(x: &[f64], rows: usize, cols: usize, y: &[f64], k: usize) -> Vec<f64> {
    let mut out = vec![0f64; rows * k];
    out.par_chunks_mut(k).enumerate().for_each(|(i, o)| {
        for (c, xv) in x[i * cols..(i + 1) * cols].iter().enumerate() {
            let yr = &y[c * k..(c + 1) * k];
            o.iter_mut().zip(yr).for_each(|(a, b)| *a += xv * b);
        }
    });
    out
}

/// `x^T` (x: rows x cols) times `y` (rows x k): cols x k.
fn matmul_t(x: &[f64], rows: usize, cols: usize, y: &[f64], k: usize) -> Vec<f64> {
    let mut out = vec![0f64; cols * k];
    out.par_chunks_mut(k).enumerate().for_each(|(c, o)| {
        for r in 0..rows {
            let xv = x[r * cols + c];
            o.iter_mut().zip(&y[r * k..(r + 1) * k]).for_each(|(a, b)| *a += xv * b);
        }
    });
    out
}

/// Orthonormalize the `k` columns of `y` (rows x k) in place: modified Gram-Schmidt, twice.
fn orthonormalize(y: &mut [f64], rows: usize, k: usize) {
    for _ in 0..2 {
        for j in 0..k {
            for p in 0..j {
                let dot: f64 = (0..rows).map(|r| y[r * k + j] * y[r * k + p]).sum();
                (0..rows).for_each(|r| y[r * k + j] -= dot * y[r * k + p]);
            }
            let norm = (0..rows).map(|r| y[r * k + j].powi(2)).sum::<f64>().sqrt();
            let inv = if norm > 1e-300 { 1.0 / norm } else { 0.0 };
            (0..rows).for_each(|r| y[r * k + j] *= inv);
        }
    }
}

/// Eigen-decomposition of a symmetric k x k matrix (cyclic Jacobi): (values, vectors as columns).
fn jacobi(mut a: Vec<f64>, k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; k * k];
    (0..k).for_each(|i| v[i * k + i] = 1.0);
    for _ in 0..100 {
        let off: f64 = (0..k).flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[i * k + j].powi(2)).sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let apq = a[p * k + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..k {
                    let (arp, arq) = (a[r * k + p], a[r * k + q]);
                    a[r * k + p] = c * arp - s * arq;
                    a[r * k + q] = s * arp + c * arq;
                }
                for r in 0..k {
                    let (apr, aqr) = (a[p * k + r], a[q * k + r]);
                    a[p * k + r] = c * apr - s * aqr;
                    a[q * k + r] = s * apr + c * aqr;
                }
                for r in 0..k {
                    let (vrp, vrq) = (v[r * k + p], v[r * k + q]);
                    v[r * k + p] = c * vrp - s * vrq;
                    v[r * k + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    ((0..k).map(|i| a[i * k + i]).collect(), v)
}

/// Rank-`r` factors of `d` (m x n): `B` (m x r) = U S and `A` (r x n) = Vh.
pub fn truncated_svd(d: &[f32], m: usize, n: usize, r: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let x: Vec<f64> = d.iter().map(|v| *v as f64).collect();
    let k = (r + 10).min(m).min(n);
    let mut rng = StdRng::seed_from_u64(seed);
    let omega: Vec<f64> = (0..n * k).map(|_| rng.gen::<f64>() * 2.0 - 1.0).collect();
    let mut y = matmul(&x, m, n, &omega, k);
    orthonormalize(&mut y, m, k);
    for _ in 0..6 {
        let mut z = matmul_t(&x, m, n, &y, k);
        orthonormalize(&mut z, n, k);
        y = matmul(&x, m, n, &z, k);
        orthonormalize(&mut y, m, k);
    }
    // B = Q^T X (k x n), stored transposed as n x k.
    let bt = matmul_t(&x, m, n, &y, k);
    let mut gram = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..k {
            gram[i * k + j] = (0..n).map(|c| bt[c * k + i] * bt[c * k + j]).sum();
        }
    }
    let (vals, w) = jacobi(gram, k);
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|a, b| vals[*b].total_cmp(&vals[*a]));
    let r = r.min(k);
    let mut b = vec![0f32; m * r];
    let mut a = vec![0f32; r * n];
    for (j, &e) in order.iter().take(r).enumerate() {
        let sigma = vals[e].max(0.0).sqrt();
        for row in 0..m {
            // U[:, j] * S = Q w_e * sigma
            let u: f64 = (0..k).map(|i| y[row * k + i] * w[i * k + e]).sum();
            b[row * r + j] = (u * sigma) as f32;
        }
        let inv = if sigma > 1e-300 { 1.0 / sigma } else { 0.0 };
        for c in 0..n {
            // Vh[j, :] = w_e^T B / sigma
            let v: f64 = (0..k).map(|i| w[i * k + e] * bt[c * k + i]).sum();
            a[j * n + c] = (v * inv) as f32;
        }
    }
    (b, a)
}

/// The LoRA inputs' common base model and their targeted weights.
fn lora_inputs(m: &Merge) -> Result<(usize, BTreeSet<String>)> {
    let mut targets = BTreeSet::new();
    let mut base_path = None;
    for model in &m.plan.models {
        if let Kind::Lora(b, l) = &model.kind {
            targets.extend(l.modules.keys().cloned());
            let p = b.source.path().to_path_buf();
            if base_path.as_ref().is_some_and(|x| *x != p) {
                return Err(Error::Input("--lora-rank: the adapters sit on different base models".into()));
            }
            base_path = Some(p);
        }
    }
    let base_path = base_path.ok_or_else(|| Error::Input("--lora-rank writes a LoRA of a merge of LoRA adapters; no input is an adapter (write MODEL+ADAPTER)".into()))?;
    let base = m.plan.models.iter().position(|x| !matches!(x.kind, Kind::Lora(..)) && x.source.path() == base_path);
    let base = base.ok_or_else(|| Error::Input(format!("--lora-rank: name the adapters' base {} as base_model (or as a model)", base_path.display())))?;
    Ok((base, targets))
}

pub fn write(m: &Merge, r: usize, out: &Path, progress: &mut dyn FnMut(usize, usize, &str)) -> Result<Summary> {
    if r == 0 {
        return Err(Error::Input("--lora-rank must be at least 1".into()));
    }
    if m.perm.is_some() || m.plan.num_layers != m.plan.models[0].num_layers().unwrap_or(0) {
        return Err(Error::Input("--lora-rank: the merge changes the vocabulary or the layers, which a LoRA cannot hold".into()));
    }
    let (base, targets) = lora_inputs(m)?;
    let mut tensors = vec![];
    let n = m.plan.tensors.len();
    for (i, t) in m.plan.tensors.iter().enumerate() {
        let merged = m.tensor(i)?;
        let Some(super::source::Data::Full(b)) = m.plan.models[base].load(&t.name)? else {
            return Err(Error::Input(format!("{}: tensor {} is missing", m.plan.models[base].label, t.name)));
        };
        let delta: Vec<f32> = merged.iter().zip(&b).map(|(x, y)| x - y).collect();
        if targets.contains(&t.name) {
            let (rows, cols) = (t.shape[0], t.shape[1]);
            let (lb, la) = truncated_svd(&delta, rows, cols, r, m.seed ^ super::fnv(&t.name));
            let rr = lb.len() / rows;
            let module = t.name.strip_suffix(".weight").unwrap_or(&t.name);
            tensors.push((format!("base_model.model.{module}.lora_A.weight"), candle_core::Tensor::from_vec(la, (rr, cols), &candle_core::Device::Cpu)?));
            tensors.push((format!("base_model.model.{module}.lora_B.weight"), candle_core::Tensor::from_vec(lb, (rows, rr), &candle_core::Device::Cpu)?));
        } else {
            let scale = b.iter().fold(1f32, |a, x| a.max(x.abs()));
            let worst = delta.iter().fold(0f32, |a, x| a.max(x.abs()));
            if worst > 1e-5 * scale {
                return Err(Error::Input(format!("--lora-rank: the merge changes {} (by up to {worst:e}), which no input adapter targets; write a full model instead", t.name)));
            }
        }
        progress(i + 1, n, &t.name);
    }
    save(out, r, &targets, &m.plan.models[base], tensors)?;
    let bytes = std::fs::metadata(out.join("adapter_model.safetensors")).map_or(0, |x| x.len());
    Ok(Summary { method: m.method.name(), tensors: n, bytes, out: out.to_path_buf() })
}

fn save(out: &Path, r: usize, targets: &BTreeSet<String>, base: &super::source::Model, tensors: Vec<(String, candle_core::Tensor)>) -> Result<()> {
    let short: BTreeSet<&str> = targets.iter().filter_map(|t| t.strip_suffix(".weight")?.rsplit('.').next()).collect();
    let cfg = serde_json::json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": r, "lora_dropout": 0.0,
        "target_modules": short, "use_rslora": false, "bias": "none", "fan_in_fan_out": false,
        "init_lora_weights": true, "inference_mode": true, "modules_to_save": null,
        "base_model_name_or_path": base.source.path().to_string_lossy(),
    });
    let tmp = out.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::file(&tmp, e.to_string()))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::file(&tmp, e.to_string()))?;
    crate::peft::save_tensors(&tmp.join("adapter_model.safetensors"), &tensors)?;
    crate::peft::write_atomic(&tmp.join("adapter_config.json"), serde_json::to_string_pretty(&cfg).expect("json").as_bytes())?;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| Error::file(out, e.to_string()))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::file(out, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svd_recovers_a_low_rank_matrix() {
        let (m, n, r) = (40, 30, 3);
        let mut rng = StdRng::seed_from_u64(1);
        let u: Vec<f32> = (0..m * r).map(|_| rng.gen::<f32>() - 0.5).collect();
        let v: Vec<f32> = (0..r * n).map(|_| rng.gen::<f32>() - 0.5).collect();
        let d: Vec<f32> = (0..m * n).map(|i| (0..r).map(|k| u[(i / n) * r + k] * v[k * n + i % n]).sum()).collect();
        let (b, a) = truncated_svd(&d, m, n, r, 0);
        let err = (0..m * n).map(|i| ((0..r).map(|k| b[(i / n) * r + k] * a[k * n + i % n]).sum::<f32>() - d[i]).abs()).fold(0f32, f32::max);
        assert!(err < 1e-5, "{err}");
    }
}
