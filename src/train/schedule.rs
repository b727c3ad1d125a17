//! Learning-rate schedules with linear warmup, as transformers' `get_*_schedule_with_warmup`
//! define them (step `k` counts from 0; with warmup the first step's rate is 0).
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    #[default]
    Cosine,
    Linear,
    Constant,
}

impl Schedule {
    /// The multiplier of the base rate at step `k` of `total`.
    pub fn factor(self, k: usize, total: usize, warmup: usize) -> f64 {
        if k < warmup {
            return k as f64 / warmup.max(1) as f64;
        }
        let progress = (k - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
        match self {
            Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()).max(0.0),
            Schedule::Linear => (1.0 - progress).max(0.0),
            Schedule::Constant => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        assert_eq!(Schedule::Cosine.factor(0, 100, 10), 0.0);
        assert_eq!(Schedule::Cosine.factor(5, 100, 10), 0.5);
        assert_eq!(Schedule::Cosine.factor(10, 100, 10), 1.0);
        assert!((Schedule::Cosine.factor(55, 100, 10) - 0.5).abs() < 1e-12);
        assert!((Schedule::Linear.factor(55, 100, 10) - 0.5).abs() < 1e-12);
        assert_eq!(Schedule::Constant.factor(99, 100, 10), 1.0);
        assert_eq!(Schedule::Cosine.factor(0, 100, 0), 1.0);
    }
}
