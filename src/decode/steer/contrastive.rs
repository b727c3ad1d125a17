//! Contrastive decoding (Li et al., "Contrastive Decoding: Open-ended Text Generation as
//! Optimization", ACL 2023), in the form O'Brien & Lewis ("Contrastive Decoding Improves
//! Reasoning in Large Language Models", 2023) give it: the main model is the expert, a
//! weaker *amateur* is subtracted, `(1 + beta) * log p_main - beta * log p_amateur`, and
//! only plausible tokens may be chosen: those with `p_main >= alpha * max p_main`
//! (Li et al.'s adaptive plausibility constraint). Li et al.'s own score
//! `log p_main - log p_amateur` ranks tokens as `beta` grows large.
use super::Combine;
use crate::{Error, Result};

pub struct Contrastive {
    beta: f32,
    /// log(alpha), the cut-off below the best token's log-probability.
    log_alpha: f32,
    alpha: f32,
}

impl Contrastive {
    pub fn new(beta: f32, alpha: f32) -> Result<Self> {
        if !(alpha > 0.0 && alpha <= 1.0) {
            return Err(Error::Input(format!("contrastive decoding: alpha (the plausibility cut-off) must be in (0, 1], got {alpha}")));
        }
        Ok(Contrastive { beta, log_alpha: alpha.ln(), alpha })
    }
}

impl Combine for Contrastive {
    fn roles(&self) -> &'static [&'static str] {
        &["amateur"]
    }

    fn combine(&self, main: &[f32], c: &[&[f32]]) -> Vec<f32> {
        let best = main.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let cut = best + self.log_alpha;
        main.iter().zip(c[0]).map(|(&m, &a)| if m >= cut { (1.0 + self.beta) * m - self.beta * a } else { f32::NEG_INFINITY }).collect()
    }

    fn describe(&self) -> String {
        format!("contrastive decoding (beta {}, alpha {})", self.beta, self.alpha)
    }
}
