//! LoRAMoE's localized balancing constraint and its router statistics, from the router
//! weights one forward pass recorded (see `loramoe.rs` for the definition).
use super::loramoe::LoramoeConfig;
use super::{AuxLoss, TokenGroups};
use crate::{Error, Result};
use candle_core::Tensor;

/// `Q[b, n]`: each sample's mean router weight per expert, `(S, E)`, from gates `(T, E)`.
fn per_sample(gate: &Tensor, assign: &Tensor) -> Result<Tensor> {
    Ok(assign.matmul(gate)?)
}

/// The squared coefficient of variation of all values of `x`: unbiased variance over the
/// squared mean (+1e-10), 0 for a single value (the reference's `cv_squared`).
pub fn cv_squared(x: &Tensor) -> Result<Tensor> {
    let x = x.flatten_all()?;
    let n = x.dim(0)?;
    if n <= 1 {
        return Ok(Tensor::zeros((), x.dtype(), x.device())?);
    }
    let mean = x.mean_all()?;
    let var = (x.broadcast_sub(&mean)?.sqr()?.sum_all()? / (n - 1) as f64)?;
    Ok(var.broadcast_div(&(mean.sqr()? + 1e-10)?)?)
}

/// The constraint's weights `C (S, E)`: `1 + delta` where expert and sample are of the same
/// group, else `1 - delta`.
fn localization(config: &LoramoeConfig, world: &[Option<bool>]) -> Result<Vec<f32>> {
    let (e, wn, d) = (config.experts, config.world(), config.balance_alpha as f32);
    let mut c = Vec::with_capacity(world.len() * e);
    for (j, w) in world.iter().enumerate() {
        let w = w.ok_or_else(|| Error::Input(format!("loramoe: sample {j} of the micro-batch has no data type (`{}`)", config.type_field)))?;
        c.extend((0..e).map(|n| if (n < wn) == w { 1.0 + d } else { 1.0 - d }));
    }
    Ok(c)
}

/// The weighted constraint summed over projections (0 when `balance_weight` is 0), and
/// router statistics: each expert's mean weight, the world group's share on world and
/// on task samples, the constraint's value.
pub fn aux(config: &LoramoeConfig, gates: &[Tensor], groups: &TokenGroups) -> Result<AuxLoss> {
    let (s, t, e) = (groups.world.len(), groups.seq_of.len(), config.experts);
    let dev = gates[0].device().clone();
    let mut tokens = vec![0f32; s];
    groups.seq_of.iter().filter(|&&q| q != u32::MAX).for_each(|&q| tokens[q as usize] += 1.0);
    // Row b averages sample b's tokens.
    let mut assign = vec![0f32; s * t];
    for (i, &q) in groups.seq_of.iter().enumerate().filter(|(_, &q)| q != u32::MAX) {
        assign[q as usize * t + i] = 1.0 / tokens[q as usize];
    }
    let assign = Tensor::from_vec(assign, (s, t), &dev)?;
    let balance = config.balance_weight > 0.0;
    let c = if balance { Some(Tensor::from_vec(localization(config, &groups.world)?, (s, e), &dev)?) } else { None };
    let mut loss = Tensor::zeros((), candle_core::DType::F32, &dev)?;
    let mut stats = vec![];
    let valid: f32 = tokens.iter().sum();
    for g in gates {
        let q = per_sample(g, &assign)?;
        if let Some(c) = &c {
            loss = (loss + (cv_squared(&(&q * c)?)? * config.balance_weight)?)?;
        }
        // Token-weighted statistics: a sample's mean times its tokens is its sum.
        let qv = q.detach().to_vec2::<f32>()?;
        for n in 0..e {
            stats.push((format!("loramoe/expert{n}"), qv.iter().zip(&tokens).map(|(r, &k)| (r[n] * k) as f64).sum(), valid as f64));
        }
        for (j, row) in qv.iter().enumerate() {
            let share = row[..config.world()].iter().sum::<f32>() * tokens[j];
            match groups.world[j] {
                Some(true) => stats.push(("loramoe/world_share/world_data".into(), share as f64, tokens[j] as f64)),
                Some(false) => stats.push(("loramoe/world_share/task_data".into(), share as f64, tokens[j] as f64)),
                None => {}
            }
        }
    }
    if balance {
        stats.push(("loramoe/balance_loss".into(), loss.to_scalar::<f32>()? as f64, 1.0));
    }
    Ok(AuxLoss { loss, stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cv_squared_is_variance_over_mean_squared() {
        let x = Tensor::new(&[1f32, 2.0, 3.0, 6.0], &candle_core::Device::Cpu).unwrap();
        // mean 3, unbiased variance (4 + 1 + 0 + 9) / 3
        let got = cv_squared(&x).unwrap().to_scalar::<f32>().unwrap();
        assert!((got - (14.0 / 3.0) / 9.0).abs() < 1e-6, "{got}");
        let one = Tensor::new(&[5f32], &candle_core::Device::Cpu).unwrap();
        assert_eq!(cv_squared(&one).unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn localization_steers_the_groups() {
        let c = LoramoeConfig { experts: 4, balance_alpha: 0.1, ..Default::default() };
        let got = localization(&c, &[Some(true), Some(false)]).unwrap();
        assert_eq!(got, vec![1.1, 1.1, 0.9, 0.9, 0.9, 0.9, 1.1, 1.1]);
        assert!(localization(&c, &[None]).unwrap_err().to_string().contains("no data type"));
    }
}
