//! The logits seam: anything that changes a row's next-token scores before sampling
//! (OpenAI's presence/frequency penalties, min-tokens, later proxy-tuning or constrained
//! decoding) is a [`LogitsProcessor`], applied in order by the decoding loop.
use std::collections::HashMap;

/// Changes one row's logits in place, given the tokens generated so far.
pub trait LogitsProcessor: Send {
    fn process(&mut self, logits: &mut [f32], generated: &[u32]);
}

/// OpenAI's penalties: `logit[t] -= presence * [count(t) > 0] + frequency * count(t)`,
/// over the generated tokens only (the prompt is not counted).
pub struct Penalties {
    pub presence: f32,
    pub frequency: f32,
    counts: HashMap<u32, u32>,
    seen: usize,
}

impl Penalties {
    pub fn new(presence: f32, frequency: f32) -> Self {
        Penalties { presence, frequency, counts: HashMap::new(), seen: 0 }
    }
}

impl LogitsProcessor for Penalties {
    fn process(&mut self, logits: &mut [f32], generated: &[u32]) {
        for &t in &generated[self.seen.min(generated.len())..] {
            *self.counts.entry(t).or_default() += 1;
        }
        self.seen = generated.len();
        for (&t, &c) in &self.counts {
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= self.presence + self.frequency * c as f32;
            }
        }
    }
}

/// Forbid the stop tokens until `min` tokens have been generated.
pub struct MinTokens {
    pub min: usize,
    pub stop_ids: Vec<u32>,
}

impl LogitsProcessor for MinTokens {
    fn process(&mut self, logits: &mut [f32], generated: &[u32]) {
        if generated.len() < self.min {
            for &s in &self.stop_ids {
                if let Some(x) = logits.get_mut(s as usize) {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// OpenAI's `logit_bias`: a fixed addition to chosen tokens' logits.
pub struct Bias(pub Vec<(u32, f32)>);

impl LogitsProcessor for Bias {
    fn process(&mut self, logits: &mut [f32], _generated: &[u32]) {
        for &(t, b) in &self.0 {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += b;
            }
        }
    }
}

/// Log-probabilities of `logits` (a log-softmax).
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
    logits.iter().map(|&x| x - lse).collect()
}

/// The `k` most likely ids with their log-probabilities, best first.
pub fn top_k(logps: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..logps.len() as u32).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return vec![];
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| logps[b as usize].total_cmp(&logps[a as usize]));
    idx.truncate(k);
    idx.sort_by(|&a, &b| logps[b as usize].total_cmp(&logps[a as usize]));
    idx.into_iter().map(|i| (i, logps[i as usize])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalties_follow_openai_formula() {
        let mut p = Penalties::new(0.5, 0.25);
        let mut l = vec![1.0, 1.0, 1.0];
        p.process(&mut l, &[1, 1, 2]);
        assert_eq!(l, vec![1.0, 1.0 - 0.5 - 0.5, 1.0 - 0.5 - 0.25]);
        // Counting is incremental: one more token only adds its own count.
        let mut l = vec![1.0, 1.0, 1.0];
        p.process(&mut l, &[1, 1, 2, 0]);
        assert_eq!(l, vec![0.25, 0.0, 0.25]);
    }

    #[test]
    fn log_softmax_and_top_k() {
        let lp = log_softmax(&[0.0, (2.0f32).ln(), 0.0]);
        assert!((lp.iter().map(|x| x.exp()).sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(top_k(&lp, 2)[0].0, 1);
        assert!((top_k(&lp, 1)[0].1 - 0.5f32.ln()).abs() < 1e-6);
    }
}
