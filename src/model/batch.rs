//! What a forward pass sees of its input: tokens plus, per token, its position,
//! its segment (packed examples never attend across segments) and whether it is real.
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Batch {
    /// `B` rows of equal length `T`.
    pub tokens: Vec<Vec<u32>>,
    pub positions: Vec<Vec<u32>>,
    pub segments: Vec<Vec<u32>>,
    /// False for padding: such tokens are never attended to.
    pub valid: Vec<Vec<bool>>,
}

impl Batch {
    /// One sequence continuing at position `start`.
    pub fn single(tokens: &[u32], start: u32) -> Self {
        let t = tokens.len();
        Batch { tokens: vec![tokens.to_vec()], positions: vec![(start..start + t as u32).collect()], segments: vec![vec![0; t]], valid: vec![vec![true; t]] }
    }

    /// Several prompts, left-padded to the longest so they end together.
    pub fn left_padded(prompts: &[Vec<u32>], pad: u32) -> Result<Self> {
        let t = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if t == 0 || prompts.iter().any(Vec::is_empty) {
            return Err(Error::Input("cannot run an empty prompt".into()));
        }
        let mut b = Batch { tokens: vec![], positions: vec![], segments: vec![], valid: vec![] };
        for p in prompts {
            let pad_n = t - p.len();
            let mut toks = vec![pad; pad_n];
            toks.extend_from_slice(p);
            b.tokens.push(toks);
            b.positions.push((0..pad_n).map(|_| 0).chain(0..p.len() as u32).collect());
            b.segments.push(vec![0; t]);
            b.valid.push((0..t).map(|i| i >= pad_n).collect());
        }
        Ok(b)
    }

    /// Next step of decoding: one token per row at the given positions.
    pub fn step(tokens: &[u32], positions: &[u32]) -> Self {
        Batch {
            tokens: tokens.iter().map(|&t| vec![t]).collect(),
            positions: positions.iter().map(|&p| vec![p]).collect(),
            segments: vec![vec![0]; tokens.len()],
            valid: vec![vec![true]; tokens.len()],
        }
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.tokens.len(), self.tokens.first().map_or(0, Vec::len))
    }

    pub fn check(&self) -> Result<()> {
        let (b, t) = self.dims();
        let ok = |v: usize| v == t;
        let all_rows = self.tokens.iter().all(|r| ok(r.len()))
            && self.positions.len() == b
            && self.positions.iter().all(|r| ok(r.len()))
            && self.segments.len() == b
            && self.segments.iter().all(|r| ok(r.len()))
            && self.valid.len() == b
            && self.valid.iter().all(|r| ok(r.len()));
        if b == 0 || t == 0 || !all_rows {
            return Err(Error::Input(format!("malformed batch: {b} rows of {t} tokens with ragged fields")));
        }
        Ok(())
    }
}
