//! AdamW (Loshchilov & Hutter) with decoupled weight decay, in f32 with the same
//! operation order as `torch.optim.AdamW`, so trajectories match PyTorch's.
use crate::Result;
use candle_core::{Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    #[serde(default = "b1")]
    pub beta1: f64,
    #[serde(default = "b2")]
    pub beta2: f64,
    #[serde(default = "eps")]
    pub eps: f64,
    #[serde(default)]
    pub weight_decay: f64,
}

fn b1() -> f64 {
    0.9
}
fn b2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-8
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: b1(), beta2: b2(), eps: eps(), weight_decay: 0.0 }
    }
}

/// Moments of one parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

pub struct AdamW {
    pub config: AdamWConfig,
    pub params: Vec<Var>,
    pub state: Vec<Moments>,
    /// Steps taken so far.
    pub t: u64,
    /// Per parameter, the flat element indices it may update (sparse fine-tuning); its
    /// moments then hold one value per index. None: every element.
    pub masks: Vec<Option<Vec<u32>>>,
}

impl AdamW {
    pub fn new(params: Vec<Var>, config: AdamWConfig) -> Self {
        let state = params.iter().map(|p| Moments { m: vec![0.0; p.elem_count()], v: vec![0.0; p.elem_count()] }).collect();
        let masks = vec![None; params.len()];
        AdamW { config, params, state, t: 0, masks }
    }

    /// Restrict every parameter to the elements of its mask (sorted flat indices; an
    /// empty mask freezes it) and start over: moments zero, step count 0.
    pub fn set_masks(&mut self, masks: Vec<Vec<u32>>) {
        assert_eq!(masks.len(), self.params.len(), "one mask per parameter");
        self.state = masks.iter().map(|m| Moments { m: vec![0.0; m.len()], v: vec![0.0; m.len()] }).collect();
        self.masks = masks.into_iter().map(Some).collect();
        self.t = 0;
    }

    /// One update with learning rate `lr`; `grads[i]` belongs to `params[i]`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step_some(grads, lr, None)
    }

    /// As [`Self::step`], leaving parameters with `active[i] == false` untouched (no
    /// decay, no moment update: as PyTorch skips parameters without a gradient).
    pub fn step_some(&mut self, grads: &[Tensor], lr: f64, active: Option<&[bool]>) -> Result<()> {
        self.t += 1;
        let c = self.config;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2_sqrt = (1.0 - c.beta2.powi(self.t as i32)).sqrt() as f32;
        let step_size = (lr / bc1) as f32;
        let decay = (1.0 - lr * c.weight_decay) as f32;
        let eps = c.eps as f32;
        for (i, ((p, g), st)) in self.params.iter().zip(grads).zip(&mut self.state).enumerate() {
            if active.is_some_and(|a| !a[i]) {
                continue;
            }
            if let Some(idx) = &self.masks[i] {
                if !idx.is_empty() {
                    let h = Hyper { b1, b2, bc2_sqrt, step_size, decay, eps };
                    step_masked(p, g, st, idx, h)?;
                }
                continue;
            }
            let mut w = p.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            // Elementwise, so chunks run on all cores (full tuning updates 135M values).
            const CHUNK: usize = 1 << 16;
            w.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(st.m.par_chunks_mut(CHUNK)).zip(st.v.par_chunks_mut(CHUNK)).for_each(|(((w, g), m), v)| {
                for (((w, g), m), v) in w.iter_mut().zip(g).zip(m).zip(v) {
                    *w *= decay;
                    *m = *m * b1 + (1.0 - b1) * g;
                    *v = *v * b2 + (1.0 - b2) * g * g;
                    let denom = v.sqrt() / bc2_sqrt + eps;
                    *w -= step_size * (*m / denom);
                }
            });
            p.set(&Tensor::from_vec(w, p.shape(), p.device())?)?;
        }
        Ok(())
    }
}

/// One step's constants.
#[derive(Clone, Copy)]
struct Hyper {
    b1: f32,
    b2: f32,
    bc2_sqrt: f32,
    step_size: f32,
    decay: f32,
    eps: f32,
}

/// The AdamW update on the masked elements of `p` only (moments indexed by mask
/// position): the same arithmetic, in the same order, as the dense loop.
fn step_masked(p: &Var, g: &Tensor, st: &mut Moments, idx: &[u32], h: Hyper) -> Result<()> {
    let mut w = p.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let g = g.flatten_all()?.to_vec1::<f32>()?;
    for ((&i, m), v) in idx.iter().zip(&mut st.m).zip(&mut st.v) {
        let (w, g) = (&mut w[i as usize], g[i as usize]);
        *w *= h.decay;
        *m = *m * h.b1 + (1.0 - h.b1) * g;
        *v = *v * h.b2 + (1.0 - h.b2) * g * g;
        let denom = v.sqrt() / h.bc2_sqrt + h.eps;
        *w -= h.step_size * (*m / denom);
    }
    p.set(&Tensor::from_vec(w, p.shape(), p.device())?)?;
    Ok(())
}
