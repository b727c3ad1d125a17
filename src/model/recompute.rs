//! Gradient checkpointing: a block runs forward without keeping its activations, and
//! again during the backward pass to differentiate it. Only block inputs stay in memory
//! (30 x B x T x hidden for SmolLM2), at the cost of one more forward pass.
//!
//! candle's backward can only return a custom op's input gradient, so the gradients of
//! the block's adapter tensors, found by the inner backward, are handed over through
//! [`take_extra_grads`], which the training step adds to what autograd gives it.
use super::block::Block;
use super::rope::RopeTable;
use crate::Result;
use candle_core::{backprop::GradStore, CpuStorage, CustomOp1, Layout, Shape, Tensor, TensorId, Var};
use std::collections::HashMap;
use std::sync::Mutex;

static EXTRA: Mutex<Option<HashMap<TensorId, Tensor>>> = Mutex::new(None);

/// Gradients found inside recomputed blocks since the last call, by tensor id.
pub fn take_extra_grads() -> HashMap<TensorId, Tensor> {
    EXTRA.lock().expect("extra grads").take().unwrap_or_default()
}

fn add_extra(grads: &GradStore, params: &[Tensor]) -> candle_core::Result<()> {
    let mut guard = EXTRA.lock().expect("extra grads");
    let map = guard.get_or_insert_with(HashMap::new);
    for p in params {
        if let Some(g) = grads.get(p) {
            // Detached: a gradient computed from the block's activations carries their
            // graph, which kept every recomputed block alive until the step ended.
            let g = g.detach();
            let sum = match map.remove(&p.id()) {
                Some(acc) => (acc + g)?,
                None => g,
            };
            map.insert(p.id(), sum);
        }
    }
    Ok(())
}

struct Recompute {
    block: Block,
    rope: RopeTable,
    mask: Option<Tensor>,
}

impl CustomOp1 for Recompute {
    fn name(&self) -> &'static str {
        "instill-recompute-block"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let data = s.as_slice::<f32>()?;
        let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("recompute: input must be contiguous".into()))?;
        let x = Tensor::from_slice(&data[a..b], l.shape(), &candle_core::Device::Cpu)?;
        let y = self.block.forward(&x, &self.rope, self.mask.as_ref(), None, None, None).map_err(candle_core::Error::wrap)?.detach();
        let shape = y.shape().clone();
        let y = y.contiguous()?;
        let (st, _) = y.storage_and_layout();
        match &*st {
            candle_core::Storage::Cpu(c) => Ok((c.clone(), shape)),
            _ => candle_core::bail!("recompute: expected CPU storage"),
        }
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let xv = Var::from_tensor(&x.detach())?;
        let y = self.block.forward(xv.as_tensor(), &self.rope, self.mask.as_ref(), None, None, None).map_err(candle_core::Error::wrap)?;
        let grads = (y * g.detach())?.sum_all()?.backward()?;

        add_extra(&grads, &self.block.trainable_params())?;
        Ok(grads.get(xv.as_tensor()).map(Tensor::detach))
    }
}

/// `block.forward(x)` with its activations recomputed in the backward pass.
pub fn block_forward(block: &Block, x: &Tensor, rope: &RopeTable, mask: Option<&Tensor>) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return block.forward(x, rope, mask, None, None, None);
    }
    let op = Recompute { block: block.clone(), rope: rope.clone(), mask: mask.cloned() };
    Ok(x.contiguous()?.apply_op1(op)?)
}
