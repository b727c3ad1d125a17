//! Turning a model's own weights into trainable variables (full and partial tuning).
use super::linear::{Linear, LinearWeight};
use super::{CausalLm, Embedding};
use crate::Result;
use candle_core::{Tensor, Var};

/// A weight slot of the model, by GGUF name.
enum Slot<'a> {
    Tensor(&'a mut Tensor),
    Linear(&'a mut Linear),
    Embedding(&'a mut Embedding),
}

impl CausalLm {
    fn slots(&mut self) -> Vec<(String, Slot<'_>)> {
        let mut out: Vec<(String, Slot)> = vec![("token_embd.weight".into(), Slot::Embedding(&mut self.embed))];
        out.push(("output_norm.weight".into(), Slot::Tensor(&mut self.norm.weight)));
        if !self.config.tie_embeddings {
            out.push(("output.weight".into(), Slot::Linear(&mut self.lm_head)));
        }
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            let (linears, norms) = b.weights_mut();
            for (n, l) in super::block::PROJECTIONS.iter().zip(linears) {
                out.push((p(n), Slot::Linear(l)));
            }
            for (n, norm) in super::block::NORMS.iter().zip(norms) {
                if let Some(norm) = norm {
                    out.push((p(n), Slot::Tensor(&mut norm.weight)));
                }
            }
        }
        out
    }

    /// Make every weight whose Hugging Face name `select` accepts a trainable variable
    /// (dequantized to f32 first); the rest stay as they are, frozen. Returns the
    /// variables by HF name, in model order. A tied output head shares the embedding's
    /// variable, so both uses feed one gradient.
    pub fn make_trainable(&mut self, select: &dyn Fn(&str) -> bool) -> Result<Vec<(String, Var)>> {
        let arch = self.arch;
        let mut out = vec![];
        let mut tied_embedding = None;
        for (gguf, slot) in self.slots() {
            let hf = super::arch::gguf_to_hf(arch, &gguf).unwrap_or(gguf.clone());
            if !select(&hf) {
                continue;
            }
            let var = match slot {
                Slot::Tensor(t) => {
                    let v = Var::from_tensor(&t.to_dtype(candle_core::DType::F32)?)?;
                    *t = v.as_tensor().clone();
                    v
                }
                Slot::Linear(l) => {
                    let v = Var::from_tensor(&l.dense_weight()?)?;
                    l.weight = LinearWeight::Dense(v.as_tensor().clone());
                    v
                }
                Slot::Embedding(e) => {
                    let dense = match e {
                        Embedding::Dense(t) => t.to_dtype(candle_core::DType::F32)?,
                        Embedding::Quant(q) => q.dequantize(&q.device())?,
                    };
                    let v = Var::from_tensor(&dense)?;
                    *e = Embedding::Dense(v.as_tensor().clone());
                    tied_embedding = Some(v.as_tensor().clone());
                    v
                }
            };
            out.push((hf, var));
        }
        if self.config.tie_embeddings {
            if let Some(t) = tied_embedding {
                self.lm_head = Linear::dense(t, None);
            }
        }
        Ok(out)
    }

    /// Point the slots of `vars` at either the variable itself (`active[i]`: trainable) or
    /// a detached alias of it (frozen: same storage, no gradient). Half Fine-Tuning
    /// re-draws this every stage.
    pub fn set_trainable(&mut self, vars: &[(String, Var)], active: &[bool]) -> Result<()> {
        let arch = self.arch;
        let tie = self.config.tie_embeddings;
        let mut head = None;
        for (gguf, slot) in self.slots() {
            let hf = super::arch::gguf_to_hf(arch, &gguf).unwrap_or(gguf.clone());
            let Some(i) = vars.iter().position(|(n, _)| *n == hf) else { continue };
            let v = vars[i].1.as_tensor();
            let t = if active[i] { v.clone() } else { v.detach() };
            match slot {
                Slot::Tensor(x) => *x = t,
                Slot::Linear(l) => l.weight = LinearWeight::Dense(t),
                Slot::Embedding(e) => {
                    head = Some(t.clone());
                    *e = Embedding::Dense(t);
                }
            }
        }
        if let (true, Some(t)) = (tie, head) {
            self.lm_head = Linear::dense(t, None);
        }
        Ok(())
    }
}
