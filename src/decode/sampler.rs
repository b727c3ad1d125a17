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
        // Candidates sorted by logit, then cut by top-k, top-p and min-p. The whole
        // vocabulary is not sorted (151,936 logits for Qwen2.5): the best `k` are, and `k`
        // grows only when the cut (or the draw) reaches past them.
        let v = logits.len();
        let cap = if p.top_k > 0 { p.top_k.min(v) } else { v };
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f32> = logits.iter().map(|&l| ((l - max) / p.temperature).exp()).collect();
        // Normalized over all the candidates: the vocabulary, or the top-k (sorted whole).
        let total_all = (cap == v).then(|| weights.iter().sum::<f32>());
        let u = self.rng.gen::<f32>();
        let mut k = if total_all.is_some() { 64.min(v) } else { cap };
        loop {
            let idx = top_sorted(logits, k);
            let total = total_all.unwrap_or_else(|| idx.iter().map(|&i| weights[i as usize]).sum());
            let probs: Vec<f32> = idx.iter().map(|&i| weights[i as usize] / total).collect();
            if let Some(t) = draw(p, &idx, &probs, k == cap, u) {
                return t;
            }
            k = (k * 8).min(cap);
        }
    }
}

/// The `k` highest logits' indices, highest first (ties: lower index first, as a stable
/// sort of the whole vocabulary orders them).
fn top_sorted(logits: &[f32], k: usize) -> Vec<u32> {
    let by = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, by);
        idx.truncate(k);
    }
    idx.sort_unstable_by(by);
    idx
}

/// The token drawn by `u` from the best candidates `idx` (probabilities `probs` over all
/// candidates, sorted) after the top-p and min-p cuts; None when they or the draw reach
/// past `idx` and it is not `complete` (all the candidates).
fn draw(p: &SamplingParams, idx: &[u32], probs: &[f32], complete: bool, u: f32) -> Option<u32> {
    let mut keep = None;
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        keep = probs.iter().position(|&q| {
            acc += q;
            acc >= p.top_p
        });
        keep = keep.map(|i| i + 1);
        if keep.is_none() && !complete {
            return None;
        }
    }
    if p.min_p > 0.0 {
        let floor = probs[0] * p.min_p;
        let above = probs.iter().take_while(|&&q| q >= floor).count().max(1);
        if above == probs.len() && keep.is_none() && !complete {
            return None;
        }
        keep = Some(keep.map_or(above, |k| k.min(above)));
    }
    // Uncut, the candidates' mass is all of it (1); else the kept prefix's.
    let (keep, total) = match keep {
        Some(k) => (k, probs[..k].iter().sum::<f32>()),
        None if complete => (probs.len(), probs.iter().sum::<f32>()),
        None => (probs.len(), 1.0),
    };
    let mut r = u * total;
    for (i, &q) in probs[..keep].iter().enumerate() {
        r -= q;
        if r <= 0.0 {
            return Some(idx[i]);
        }
    }
    (keep < probs.len() || complete).then(|| idx[keep - 1])
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

    /// The plain rule the sampler must equal: sort every logit, cut, draw.
    fn sample_naive(p: &SamplingParams, logits: &[f32], u: f32) -> u32 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = if p.top_k > 0 { p.top_k.min(idx.len()) } else { idx.len() };
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        idx.truncate(k);
        let max = logits[idx[0] as usize];
        let mut probs: Vec<f32> = idx.iter().map(|&i| ((logits[i as usize] - max) / p.temperature).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            keep = probs
                .iter()
                .position(|&q| {
                    acc += q;
                    acc >= p.top_p
                })
                .map_or(keep, |i| i + 1);
        }
        if p.min_p > 0.0 {
            keep = keep.min(probs.iter().take_while(|&&q| q >= probs[0] * p.min_p).count().max(1));
        }
        let mut r = u * probs[..keep].iter().sum::<f32>();
        for (i, &q) in probs[..keep].iter().enumerate() {
            r -= q;
            if r <= 0.0 {
                return idx[i];
            }
        }
        idx[keep - 1]
    }

    #[test]
    fn partial_sort_draws_what_a_full_sort_draws() {
        // A vocabulary of 5,000 with a heavy tail, so draws and cuts land past the first 64.
        let mut rng = StdRng::seed_from_u64(1);
        let logits: Vec<f32> = (0..5000).map(|i| rng.gen::<f32>() * 4.0 - (i % 7) as f32 * 0.01).collect();
        let cases = [(1.0, 0, 1.0, 0.0), (0.7, 0, 0.5, 0.0), (1.0, 0, 0.95, 0.0), (1.3, 40, 1.0, 0.0), (1.0, 0, 1.0, 0.2), (0.9, 3000, 0.9, 0.05)];
        for (t, top_k, top_p, min_p) in cases {
            let p = SamplingParams { temperature: t, top_k, top_p, min_p, seed: 5, ..Default::default() };
            let mut ours = Sampler::new(p.clone(), 3);
            let mut draws = StdRng::seed_from_u64(p.seed ^ 3u64.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let rank = top_sorted(&logits, logits.len());
            let at = |t: u32| rank.iter().position(|&x| x == t).unwrap() as i64;
            let mut differ = 0;
            for _ in 0..300 {
                let want = sample_naive(&p, &logits, draws.gen::<f32>());
                let got = ours.sample(&mut logits.clone(), &[]);
                // The probabilities are summed in another order (f32): a draw that lands
                // on a boundary between two candidates may take the neighbour, no more.
                assert!((at(got) - at(want)).abs() <= 1, "{p:?}: drew rank {} where the full sort draws rank {}", at(got), at(want));
                differ += (got != want) as usize;
            }
            assert!(differ <= 15, "{p:?}: {differ} of 300 draws differ from the full sort");
        }
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
