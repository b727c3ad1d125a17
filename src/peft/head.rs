//! A score head `(outputs, hidden)` on the final hidden state, trained beside any method
//! (reward models): it wraps the method, adds `score.weight` to what trains, and saves
//! it as `score.safetensors` next to the method's own files. Initialised as transformers
//! initialises a fresh `score` layer: normal, std 0.02 (`initializer_range`), seeded.
use super::{save_tensors, Adapter};
use crate::{CausalLm, Error, Result};
use candle_core::{Tensor, Var};
use rand::{rngs::StdRng, SeedableRng};
use std::path::Path;

pub const HEAD_FILE: &str = "score.safetensors";
pub const HEAD_KEY: &str = "score.weight";

pub struct ScoreHead {
    pub inner: Box<dyn Adapter>,
    pub weight: Var,
}

/// A Box-Muller normal draw (rand's `Normal` lives in rand_distr; this is all we need of it).
fn normal(rng: &mut impl rand::Rng, std: f32) -> f32 {
    let (u1, u2): (f64, f64) = (rng.gen::<f64>().max(f64::MIN_POSITIVE), rng.gen());
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * std
}

impl ScoreHead {
    /// A fresh head of `outputs` rows, or the one saved in `dir` (a checkpoint).
    pub fn new(inner: Box<dyn Adapter>, model: &CausalLm, outputs: usize, seed: u64, dir: Option<&Path>) -> Result<Self> {
        let d = model.config.hidden_size;
        let w = match dir {
            Some(dir) => load(dir, &model.device)?,
            None => {
                let mut rng = StdRng::seed_from_u64(seed ^ 0x5C0_4E4D);
                Tensor::from_vec((0..outputs * d).map(|_| normal(&mut rng, 0.02)).collect::<Vec<f32>>(), (outputs, d), &model.device)?
            }
        };
        if w.dims() != [outputs, d] {
            return Err(Error::Input(format!("score head has shape {:?}, expected [{outputs}, {d}]", w.dims())));
        }
        Ok(ScoreHead { inner, weight: Var::from_tensor(&w)? })
    }
}

/// The head saved in `dir`.
pub fn load(dir: &Path, dev: &candle_core::Device) -> Result<Tensor> {
    let p = dir.join(HEAD_FILE);
    let t = candle_core::safetensors::load(&p, dev).map_err(|e| Error::file(&p, e.to_string()))?;
    t.get(HEAD_KEY).cloned().ok_or_else(|| Error::file(&p, format!("no {HEAD_KEY}")))
}

impl Adapter for ScoreHead {
    fn method(&self) -> &'static str {
        self.inner.method()
    }
    fn trainable(&self) -> Vec<(String, Var)> {
        let mut t = self.inner.trainable();
        t.push((HEAD_KEY.to_string(), self.weight.clone()));
        t
    }
    fn set_training(&self, on: bool) {
        self.inner.set_training(on)
    }
    fn begin_step(&self, seed: u64, step: u64) {
        self.inner.begin_step(seed, step)
    }
    fn save(&self, model: &CausalLm, dir: &Path) -> Result<()> {
        self.inner.save(model, dir)?;
        save_tensors(&dir.join(HEAD_FILE), &[(HEAD_KEY.to_string(), self.weight.as_tensor().clone())])
    }
    fn set_enabled(&self, on: bool) -> Result<()> {
        self.inner.set_enabled(on)
    }
    fn as_full(&self) -> Option<&super::full::Full> {
        self.inner.as_full()
    }
}
