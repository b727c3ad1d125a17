//! Next-token choice: greedy, or temperature / top-k / top-p / min-p sampling with a
//! repetition penalty, applied in the order transformers applies them.
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1 disables.
    pub top_p: f32,
    /// 0 disables.
    pub min_p: f32,
    /// 1 disables; >1 discourages tokens already in the sequence (CTRL-style).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, seed: 0 }
    }
}

pub struct Sampler {
    pub params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// `stream` separates the random streams of rows in a batch.
    pub fn new(params: SamplingParams, stream: u64) -> Self {
        let rng = StdRng::seed_from_u64(params.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Sampler { params, rng }
    }

    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            for &t in history {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        // Candidates sorted by logit, then cut by top-k, top-p and min-p.
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = if p.top_k > 0 { p.top_k.min(idx.len()) } else { idx.len() };
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            idx.truncate(k);
        }
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let max = logits[idx[0] as usize];
        let mut probs: Vec<f32> = idx.iter().map(|&i| ((logits[i as usize] - max) / p.temperature).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, &q) in probs.iter().enumerate() {
                acc += q;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p;
            keep = keep.min(probs.iter().take_while(|&&q| q >= floor).count().max(1));
        }
        let total: f32 = probs[..keep].iter().sum();
        let mut r = self.rng.gen::<f32>() * total;
        for (i, &q) in probs[..keep].iter().enumerate() {
            r -= q;
            if r <= 0.0 {
                return idx[i];
            }
        }
        idx[keep - 1]
    }
}

pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32) -> SamplingParams {
        SamplingParams { temperature: t, seed: 7, ..Default::default() }
    }

    #[test]
    fn greedy_takes_the_max_and_penalty_can_move_it() {
        let mut s = Sampler::new(params(0.0), 0);
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.9], &[]), 1);
        let mut p = params(0.0);
        p.repetition_penalty = 2.0;
        let mut s = Sampler::new(p, 0);
        assert_eq!(s.sample(&mut [0.1, 2.0, 1.9], &[1]), 2);
    }

    #[test]
    fn same_seed_same_samples_and_top_k_limits() {
        let draw = |seed| {
            let mut p = params(1.0);
            p.seed = seed;
            p.top_k = 2;
            let mut s = Sampler::new(p, 0);
            (0..50).map(|_| s.sample(&mut [1.0, 1.0, 1.0, 0.5], &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        let d = draw(3);
        let distinct: std::collections::HashSet<_> = d.iter().collect();
        assert_eq!(distinct.len(), 2, "top-k=2 keeps exactly two candidates");
        assert!(!d.contains(&3), "the lowest logit is cut");
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        let mut p = params(1.0);
        p.min_p = 0.5;
        let mut s = Sampler::new(p.clone(), 0);
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [5.0, 0.0, 0.0], &[]), 0);
        }
        p.min_p = 0.0;
        p.top_p = 0.5;
        let mut s = Sampler::new(p, 0);
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [3.0, 0.0, 0.0], &[]), 0);
        }
    }
}
