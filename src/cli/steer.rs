//! Decoding-time tuning flags, shared by every command that generates.
use super::ModelArgs;
use anyhow::{bail, Result};
use clap::Args;
use instill::decode::steer::{self, Settings, Steer, Unit};
use instill::{CausalLm, Tokenizer};
use std::path::PathBuf;
use std::sync::Arc;

/// A companion: a model and an optional adapter.
type Spec = (String, Option<PathBuf>);

#[derive(Args, Clone, Default, Debug)]
pub struct SteerArgs {
    /// Proxy-tuning: the tuned small model (registry id, .gguf, HF directory or Hub repo).
    #[arg(long, requires = "proxy_anti")]
    pub proxy_expert: Option<String>,
    /// An adapter on the expert (e.g. runs/NAME/adapter).
    #[arg(long, requires = "proxy_expert")]
    pub proxy_expert_adapter: Option<PathBuf>,
    /// Proxy-tuning: the untuned twin of the expert.
    #[arg(long, requires = "proxy_expert")]
    pub proxy_anti: Option<String>,
    /// An adapter on the anti-expert.
    #[arg(long, requires = "proxy_anti")]
    pub proxy_anti_adapter: Option<PathBuf>,
    /// Proxy-tuning: the weight of (expert - anti-expert) [default 1]. Contrastive
    /// decoding: the plausibility cut-off [default 0.1].
    #[arg(long)]
    pub alpha: Option<f32>,
    /// Emulated fine-tuning instead of proxy-tuning: `up` (-m is a larger base, the
    /// expert/anti pair a small fine-tuned/reference pair) or `down` (-m smaller).
    #[arg(long, requires = "proxy_expert", value_parser = ["up", "down"])]
    pub eft: Option<String>,
    /// EFT: the weight of the pair's log-ratio [default 1]. Contrastive decoding: the
    /// weight of (main - amateur) [default 0.5].
    #[arg(long)]
    pub beta: Option<f32>,
    /// Contrastive decoding: the weaker amateur model subtracted from -m.
    #[arg(long, conflicts_with_all = ["proxy_expert", "proxy_anti", "eft"])]
    pub amateur: Option<String>,
    /// An adapter on the amateur.
    #[arg(long, requires = "amateur")]
    pub amateur_adapter: Option<PathBuf>,
}

impl SteerArgs {
    /// The method's name and its companions (model, adapter), if any was asked for.
    fn plan(&self) -> Result<Option<(&'static str, Vec<Spec>)>> {
        if let Some(a) = &self.amateur {
            return Ok(Some(("contrastive", vec![(a.clone(), self.amateur_adapter.clone())])));
        }
        let (Some(e), Some(anti)) = (&self.proxy_expert, &self.proxy_anti) else {
            if self.alpha.is_some() || self.beta.is_some() {
                bail!("--alpha and --beta steer decoding: give --proxy-expert and --proxy-anti (proxy-tuning, EFT) or --amateur (contrastive decoding)");
            }
            return Ok(None);
        };
        let name = match self.eft.as_deref() {
            Some("up") => "eft-up",
            Some(_) => "eft-down",
            None => "proxy",
        };
        Ok(Some((name, vec![(e.clone(), self.proxy_expert_adapter.clone()), (anti.clone(), self.proxy_anti_adapter.clone())])))
    }

    /// Load the companions and check them. Two roles over one base model (an expert and
    /// its anti-expert, each with or without a LoRA) share its weights and run as one batch.
    pub fn build(&self, main: &CausalLm, tok: &Tokenizer, dequantize: bool) -> Result<Option<Arc<Steer>>> {
        let Some((name, specs)) = self.plan()? else { return Ok(None) };
        let method = steer::method(name, &Settings { alpha: self.alpha, beta: self.beta })?;
        let labels = specs.iter().map(|(m, a)| a.as_ref().map_or(m.clone(), |a| format!("{m} + {}", a.display()))).collect();
        let lora_only = specs.iter().all(|(_, a)| a.as_ref().is_none_or(|a| instill::peft::peft_type(a).is_ok_and(|t| t == "LORA")));
        let units = if specs.len() == 2 && specs[0].0 == specs[1].0 && lora_only {
            vec![shared_unit(&specs, dequantize)?]
        } else {
            let mut units = vec![];
            for (m, adapter) in &specs {
                let (model, t) = ModelArgs { adapter: adapter.clone(), ..ModelArgs::named(m, dequantize, None) }.load()?;
                units.push((Unit::own(Arc::new(model)), Arc::new(t)));
            }
            units
        };
        Ok(Some(Arc::new(Steer::new(method, main, tok, units, labels)?)))
    }

    /// What was asked, for evaluation settings (a resumed run must steer the same way).
    pub fn settings(&self) -> serde_json::Value {
        match self.plan() {
            Ok(Some((name, specs))) => serde_json::json!({
                "method": name, "alpha": self.alpha, "beta": self.beta,
                "companions": specs.iter().map(|(m, a)| serde_json::json!({"model": m, "adapter": a})).collect::<Vec<_>>(),
            }),
            _ => serde_json::Value::Null,
        }
    }
}

/// One base model with the roles' LoRA adapters as per-row slots.
fn shared_unit(specs: &[Spec], dequantize: bool) -> Result<(Unit, Arc<Tokenizer>)> {
    let (model, t) = ModelArgs::named(&specs[0].0, dequantize, None).load()?;
    let adapters: Vec<Option<&std::path::Path>> = specs.iter().map(|(_, a)| a.as_deref()).collect();
    Ok((Unit::with_adapters(model, &adapters)?, Arc::new(t)))
}
