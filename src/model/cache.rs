//! KV cache: per-layer key/value tensors plus, per row, what each cached key is
//! (position, segment, real or padding) so masks can be rebuilt for any step.
use super::batch::Batch;
use crate::Result;
use candle_core::{Device, Tensor};

#[derive(Debug, Clone, Copy)]
pub struct KeyInfo {
    pub pos: u32,
    pub seg: u32,
    pub valid: bool,
}

#[derive(Debug, Clone)]
pub struct KvCache {
    pub layers: Vec<candle_nn::kv_cache::KvCache>,
    /// `B` rows of key metadata, aligned with the cached keys.
    pub keys: Vec<Vec<KeyInfo>>,
    /// Decode steps attend row by row over each row's real keys, which must be a suffix
    /// of its keys (left padding only): a row's numbers then do not depend on the
    /// padding other rows bring (see `Attention::forward`). The server sets it.
    pub per_row: bool,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache { layers: (0..num_layers).map(|_| candle_nn::kv_cache::KvCache::new(2, 256)).collect(), keys: vec![], per_row: false }
    }

    pub fn len(&self) -> usize {
        self.keys.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep only the rows `keep` (indices into the current rows, in order): generation
    /// drops rows that have finished, so later steps stop computing them.
    pub fn retain_rows(&mut self, keep: &[usize]) -> Result<()> {
        let idx = Tensor::from_vec(keep.iter().map(|&i| i as u32).collect::<Vec<_>>(), keep.len(), &Device::Cpu)?;
        for layer in &mut self.layers {
            let (Some(k), Some(v)) = (layer.k()?, layer.v()?) else { continue };
            let idx = idx.to_device(k.device())?;
            let (k, v) = (k.contiguous()?.index_select(&idx, 0)?, v.contiguous()?.index_select(&idx, 0)?);
            let mut fresh = candle_nn::kv_cache::KvCache::new(2, layer.k_cache().max_seq_len());
            fresh.append(&k, &v)?;
            *layer = fresh;
        }
        self.keys = keep.iter().map(|&i| std::mem::take(&mut self.keys[i])).collect();
        Ok(())
    }

    /// One batch cache from single-row caches of different lengths, each left-padded with
    /// masked keys to the longest: what a left-padded batch prefill would have left.
    pub fn stack_left_padded(rows: &[KvCache]) -> Result<KvCache> {
        Self::concat_left_padded(&rows.iter().collect::<Vec<_>>())
    }

    /// The rows of several caches (each of any row count and length) as one cache, every
    /// part left-padded with masked keys to the longest. The server adds a freshly
    /// prefilled request to its running batch this way.
    pub fn concat_left_padded(parts: &[&KvCache]) -> Result<KvCache> {
        let s = parts.iter().map(|c| c.len()).max().unwrap_or(0);
        let n_layers = parts.first().map_or(0, |c| c.layers.len());
        let mut out = KvCache::new(n_layers);
        out.per_row = parts.iter().any(|c| c.per_row);
        for l in 0..n_layers {
            let (mut ks, mut vs) = (vec![], vec![]);
            for c in parts {
                let (Some(k), Some(v)) = (c.layers[l].k()?, c.layers[l].v()?) else {
                    return Err(crate::Error::Input("stacking an empty KV cache".into()));
                };
                ks.push(left_pad(&k, s)?);
                vs.push(left_pad(&v, s)?);
            }
            out.layers[l].append(&Tensor::cat(&ks, 0)?, &Tensor::cat(&vs, 0)?)?;
        }
        let pad = KeyInfo { pos: 0, seg: 0, valid: false };
        out.keys = parts.iter().flat_map(|c| c.keys.iter().map(move |row| std::iter::repeat_n(pad, s - row.len()).chain(row.iter().copied()).collect())).collect();
        Ok(out)
    }

    /// Drop leading key columns that are padding in every row (left behind when the
    /// longest rows leave a batch), so later steps stop attending over them.
    pub fn trim_front(&mut self) -> Result<()> {
        let lead = self.keys.iter().map(|r| r.iter().take_while(|k| !k.valid).count()).min().unwrap_or(0);
        if lead == 0 {
            return Ok(());
        }
        let s = self.len();
        for layer in &mut self.layers {
            let (Some(k), Some(v)) = (layer.k()?, layer.v()?) else { continue };
            let (k, v) = (k.narrow(2, lead, s - lead)?.contiguous()?, v.narrow(2, lead, s - lead)?.contiguous()?);
            let mut fresh = candle_nn::kv_cache::KvCache::new(2, layer.k_cache().max_seq_len());
            fresh.append(&k, &v)?;
            *layer = fresh;
        }
        self.keys.iter_mut().for_each(|r| {
            r.drain(..lead);
        });
        Ok(())
    }

    /// Record the new tokens' key metadata (called once per forward, before the layers).
    pub fn push_keys(&mut self, batch: &Batch) {
        if self.keys.is_empty() {
            self.keys = vec![vec![]; batch.tokens.len()];
        }
        for (r, row) in self.keys.iter_mut().enumerate() {
            row.extend((0..batch.tokens[r].len()).map(|i| KeyInfo { pos: batch.positions[r][i], seg: batch.segments[r][i], valid: batch.valid[r][i] }));
        }
    }
}

/// `(1, H, T, D)` -> `(1, H, s, D)`, zeros in front (those keys are masked).
fn left_pad(t: &Tensor, s: usize) -> Result<Tensor> {
    let (b, h, n, d) = t.dims4()?;
    if n == s {
        return Ok(t.contiguous()?);
    }
    let z = Tensor::zeros((b, h, s - n, d), t.dtype(), t.device())?;
    Ok(Tensor::cat(&[&z, t], 2)?)
}

/// Large negative instead of -inf: a fully masked (padding) query row then gets a
/// finite uniform softmax instead of NaNs that would leak into later layers.
pub(crate) const MASKED: f32 = -1e30;

/// Additive mask `(B, 1, T, S)` for the newest `T` queries against all `S` keys.
/// Returns None when nothing needs masking (one real query attending to everything).
pub fn build_mask(keys: &[Vec<KeyInfo>], t: usize, window: Option<usize>, dev: &Device) -> Result<Option<Tensor>> {
    let b = keys.len();
    let s = keys[0].len();
    let mut data = Vec::with_capacity(b * t * s);
    let mut any = false;
    for row in keys {
        for q in &row[s - t..] {
            for k in row {
                let ok = k.valid && k.seg == q.seg && k.pos <= q.pos && window.is_none_or(|w| ((q.pos - k.pos) as usize) < w);
                any |= !ok;
                data.push(if ok { 0.0 } else { MASKED });
            }
        }
    }
    if !any {
        return Ok(None);
    }
    Ok(Some(Tensor::from_vec(data, (b, 1, t, s), dev)?))
}
