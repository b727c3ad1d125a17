//! Emulated fine-tuning (Mitchell et al., "An Emulator for Fine-Tuning Large Language
//! Models using Small Language Models", 2023). A fine-tuned model is read as its
//! reference plus an implicit reward `beta * log(p_ft / p_ref)`; EFT moves that reward
//! across scales. Per token: `log p_base + beta * (log p_ft - log p_ref)`, renormalized.
//! - up-scaling: a *large* pre-trained base, the reward of a *small* fine-tune
//!   (the pair is smaller than the main model);
//! - down-scaling: a *small* base, the reward of a *large* fine-tune.
//!
//! `beta` scales the reward (1: the fine-tune's own). Up-scaling at beta 1 is the same
//! per-token estimator as proxy-tuning at alpha 1; EFT also checks the scales are as
//! the direction says, and that the pair is one model size.
use super::Combine;
use crate::model::CausalLm;
use crate::{Error, Result};

pub struct Eft {
    pub beta: f32,
    pub up: bool,
}

impl Combine for Eft {
    fn roles(&self) -> &'static [&'static str] {
        &["fine-tuned", "reference"]
    }

    fn check(&self, main: &CausalLm, c: &[&CausalLm]) -> Result<()> {
        let size = |m: &CausalLm| m.config.num_params_estimate();
        let (base, ft, reference) = (size(main), size(c[0]), size(c[1]));
        if ft != reference {
            return Err(Error::Input(format!(
                "EFT: the fine-tuned and reference models are different sizes (~{}M vs ~{}M parameters): they must be one model before and after tuning",
                ft / 1_000_000,
                reference / 1_000_000
            )));
        }
        let (want, dir) =
            if self.up { (base > ft, "up-scaling needs a base model larger than the fine-tuned pair") } else { (base < ft, "down-scaling needs a base model smaller than the fine-tuned pair") };
        if !want {
            return Err(Error::Input(format!("EFT {dir} (base ~{}M, pair ~{}M parameters)", base / 1_000_000, ft / 1_000_000)));
        }
        Ok(())
    }

    fn combine(&self, main: &[f32], c: &[&[f32]]) -> Vec<f32> {
        main.iter().zip(c[0]).zip(c[1]).map(|((b, f), r)| b + self.beta * (f - r)).collect()
    }

    fn describe(&self) -> String {
        format!("EFT {}-scaling (beta {})", if self.up { "up" } else { "down" }, self.beta)
    }
}
