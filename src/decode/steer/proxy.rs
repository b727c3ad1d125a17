//! Proxy-tuning (Liu et al., "Tuning Language Models by Proxy", 2024): steer a large
//! model with the difference a small tuned *expert* makes over its untuned twin, the
//! *anti-expert*: `log p_large + alpha * (log p_expert - log p_anti)` per token.
use super::Combine;

pub struct Proxy {
    pub alpha: f32,
}

impl Combine for Proxy {
    fn roles(&self) -> &'static [&'static str] {
        &["expert", "anti-expert"]
    }

    fn combine(&self, main: &[f32], c: &[&[f32]]) -> Vec<f32> {
        main.iter().zip(c[0]).zip(c[1]).map(|((m, e), a)| m + self.alpha * (e - a)).collect()
    }

    fn describe(&self) -> String {
        format!("proxy-tuning (alpha {})", self.alpha)
    }
}
