//! Checkpoints: `checkpoints/step-000050/` holds the adapter (PEFT layout), the optimiser
//! moments, and `state.json` (step, optimiser step count, the sha256 of every other file).
//! A checkpoint is written into a hidden temp directory and renamed into place, so a run
//! killed at any moment leaves only complete checkpoints; the oldest beyond `keep` are
//! removed. A checkpoint whose files no longer match their sha256 (truncated or
//! corrupted on disk) is reported and passed over for the newest one that does.
use super::optim::{AdamW, Moments};
use crate::peft::Adapter;
use crate::{CausalLm, Error, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Optimiser steps completed.
    pub step: usize,
    pub adam_t: u64,
    /// sha256 of every file of the checkpoint (relative path -> hex).
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
}

/// Every file under `dir`, relative paths, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.to_string_lossy().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Does every file of checkpoint `dir` still have the sha256 it was written with?
pub fn verify(dir: &Path) -> Result<State> {
    let sp = dir.join("state.json");
    let text = std::fs::read_to_string(&sp).map_err(|e| Error::file(&sp, e.to_string()))?;
    let state: State = serde_json::from_str(&text).map_err(|e| Error::file(&sp, format!("unreadable ({e})")))?;
    for (name, want) in &state.files {
        let p = dir.join(name);
        let got = crate::hub::sha256_file(&p).map_err(|_| Error::file(&p, "missing"))?;
        if &got != want {
            return Err(Error::file(&p, "sha256 does not match the one recorded when the checkpoint was written (truncated or corrupted)"));
        }
    }
    Ok(state)
}

/// The newest checkpoint that verifies, and a line for each newer one that did not.
pub fn newest_good(out: &Path) -> (Option<(usize, PathBuf)>, Vec<String>) {
    let mut skipped = vec![];
    for (step, dir) in list(out).into_iter().rev() {
        match verify(&dir) {
            Ok(_) => return (Some((step, dir)), skipped),
            Err(e) => skipped.push(format!("checkpoint step {step} is unusable: {e}")),
        }
    }
    (None, skipped)
}

pub fn dir_of(out: &Path, step: usize) -> PathBuf {
    out.join("checkpoints").join(format!("step-{step:06}"))
}

/// Write a checkpoint for `step` and prune old ones.
pub fn save(out: &Path, step: usize, model: &CausalLm, adapter: &dyn Adapter, opt: &AdamW, keep: usize) -> Result<PathBuf> {
    let final_dir = dir_of(out, step);
    // No extension: writers below derive their own temp names with `with_extension`.
    let tmp = out.join("checkpoints").join(format!("incomplete-step-{step:06}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::file(&tmp, e.to_string()))?;
    adapter.save(model, &tmp)?;
    let names = adapter.trainable();
    let mut moments = vec![];
    for ((name, p), st) in names.iter().zip(&opt.state) {
        // Masked parameters (sparse fine-tuning) hold one moment per mask index.
        let shape = if st.m.len() == p.elem_count() { p.shape().clone() } else { st.m.len().into() };
        moments.push((format!("{name}.exp_avg"), Tensor::from_slice(&st.m, &shape, &candle_core::Device::Cpu)?));
        moments.push((format!("{name}.exp_avg_sq"), Tensor::from_slice(&st.v, &shape, &candle_core::Device::Cpu)?));
    }
    crate::peft::save_tensors(&tmp.join("optimizer.safetensors"), &moments)?;
    let mut files = std::collections::BTreeMap::new();
    for name in files_under(&tmp) {
        files.insert(name.clone(), crate::hub::sha256_file(&tmp.join(&name))?);
    }
    let state = State { step, adam_t: opt.t, files };
    crate::peft::write_atomic(&tmp.join("state.json"), serde_json::to_string_pretty(&state).expect("json").as_bytes())?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| Error::file(&final_dir, e.to_string()))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::file(&final_dir, e.to_string()))?;
    prune(out, keep)?;
    Ok(final_dir)
}

/// Complete checkpoints, oldest first.
pub fn list(out: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(out.join("checkpoints"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join("state.json").exists().then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn prune(out: &Path, keep: usize) -> Result<()> {
    let all = list(out);
    for (_, p) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        std::fs::remove_dir_all(p).map_err(|e| Error::file(p, e.to_string()))?;
    }
    Ok(())
}

/// Restore the optimiser from checkpoint `dir` (the adapter is loaded separately).
pub fn load_optimizer(dir: &Path, adapter: &dyn Adapter, opt: &mut AdamW) -> Result<State> {
    let state = verify(dir)?;
    let op = dir.join("optimizer.safetensors");
    let t = candle_core::safetensors::load(&op, &candle_core::Device::Cpu).map_err(|e| Error::file(&op, e.to_string()))?;
    let get = |k: String| -> Result<Vec<f32>> {
        let x = t.get(&k).ok_or_else(|| Error::file(&op, format!("missing {k}")))?;
        Ok(x.flatten_all()?.to_vec1::<f32>()?)
    };
    let trainable = adapter.trainable();
    opt.state = trainable.iter().map(|(name, _)| Ok(Moments { m: get(format!("{name}.exp_avg"))?, v: get(format!("{name}.exp_avg_sq"))? })).collect::<Result<_>>()?;
    for (((name, p), st), mask) in trainable.iter().zip(&opt.state).zip(&opt.masks) {
        let want = mask.as_ref().map_or(p.elem_count(), Vec::len);
        if st.m.len() != want || st.v.len() != want {
            return Err(Error::file(&op, format!("{name}: {} moments where the run has {want}", st.m.len())));
        }
    }
    opt.t = state.adam_t;
    Ok(state)
}
