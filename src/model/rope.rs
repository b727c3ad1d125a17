//! Rotary position embeddings for arbitrary per-token positions (packing, left padding).
use super::config::RopeStyle;
use crate::Result;
use candle_core::{Device, Tensor};

/// cos/sin of shape `(B, T, head_dim/2)` for the given positions.
#[derive(Debug, Clone)]
pub struct RopeTable {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl RopeTable {
    pub fn new(positions: &[Vec<u32>], head_dim: usize, theta: f64, dev: &Device) -> Result<Self> {
        let half = head_dim / 2;
        // inv_freq in f32, as the reference implementations compute it.
        let inv: Vec<f32> = (0..half).map(|i| 1.0 / (theta.powf(2.0 * i as f64 / head_dim as f64)) as f32).collect();
        let (b, t) = (positions.len(), positions.first().map_or(0, |p| p.len()));
        let mut cos = Vec::with_capacity(b * t * half);
        let mut sin = Vec::with_capacity(b * t * half);
        for row in positions {
            for &p in row {
                for &f in &inv {
                    let a = p as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        Ok(RopeTable { cos: Tensor::from_vec(cos, (b, t, half), dev)?, sin: Tensor::from_vec(sin, (b, t, half), dev)? })
    }

    /// Rotate `x (B, H, T, D)`.
    pub fn apply(&self, x: &Tensor, style: RopeStyle) -> Result<Tensor> {
        super::ops::rope(x, &self.cos, &self.sin, style)
    }

    /// Rotate `x (B, T, H, D)` and scale it, giving `(B, H, T, D)`.
    pub fn apply_heads_first(&self, x: &Tensor, style: RopeStyle, scale: f64) -> Result<Tensor> {
        super::ops::rope_heads_first(x, &self.cos, &self.sin, style, scale)
    }
}
