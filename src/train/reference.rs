//! Reference log-probs, computed once before training and cached in the run directory:
//! the reference model costs no memory. By default the reference is the policy as
//! training starts (the base for a fresh LoRA, whose B is zero; the SFT model when the
//! run starts from an adapter); `reference: base` switches the adapter off instead.
//! The cache (`reference-<name>.bin`: magic, the key, then (sequence u32, log-prob f32)
//! records) is appended batch by batch and flushed, so a killed pre-pass resumes where it
//! stopped; a key that does not match (other data, model or reference) is recomputed.
use super::data::{pack_rows, Set};
use super::logps::sequence_logps;
use super::objective::Layout;
use crate::data::pack::rows_from;
use crate::model::CausalLm;
use crate::peft::Adapter;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;

const MAGIC: &[u8; 11] = b"INSTILLREF1";

/// What the reference model is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reference {
    /// The policy as training starts (with `init_adapter`, that adapter: the SFT model).
    #[default]
    Policy,
    /// The base model, the adapter switched off.
    Base,
}

/// The cache key: the sequences and what computes their log-probs.
pub fn key(set: &Set, what: &str) -> String {
    let mut h = Sha256::new();
    h.update(what.as_bytes());
    for s in &set.seqs {
        h.update((s.ids.len() as u32).to_le_bytes());
        s.ids.iter().for_each(|i| h.update(i.to_le_bytes()));
        h.update(s.mask.iter().map(|&m| u8::from(m)).collect::<Vec<_>>());
    }
    hex::encode(h.finalize())
}

/// Values already in the cache at `path` for `key` (none when absent or for another key).
fn read_cached(path: &Path, key: &str, n: usize) -> Vec<Option<f32>> {
    let mut out = vec![None; n];
    let mut bytes = vec![];
    let ok = std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).is_ok();
    let head = MAGIC.len() + key.len();
    if !ok || bytes.len() < head || &bytes[..MAGIC.len()] != MAGIC || &bytes[MAGIC.len()..head] != key.as_bytes() {
        return out;
    }
    // A record cut short by a kill is ignored.
    for rec in bytes[head..].chunks_exact(8) {
        let i = u32::from_le_bytes(rec[..4].try_into().expect("4 bytes")) as usize;
        if i < n {
            out[i] = Some(f32::from_le_bytes(rec[4..].try_into().expect("4 bytes")));
        }
    }
    out
}

/// How the pre-pass runs.
pub struct Pass<'a> {
    pub model: &'a CausalLm,
    pub adapter: &'a dyn Adapter,
    pub which: Reference,
    pub layout: Layout,
    /// Sequences per forward pass.
    pub batch: usize,
    /// May missing values be computed now (false once the policy has trained).
    pub allowed: bool,
}

impl Pass<'_> {
    /// Reference log-prob of every sequence of `set`, from the cache at `path` or computed.
    pub fn run(&self, set: &Set, path: &Path, key: &str, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<f32>> {
        let mut have = read_cached(path, key, set.seqs.len());
        let mut todo: Vec<usize> = (0..set.seqs.len()).filter(|&i| have[i].is_none()).collect();
        if todo.is_empty() {
            return Ok(have.into_iter().map(|v| v.expect("present")).collect());
        }
        if !self.allowed {
            return Err(Error::file(path, format!("{} reference log-probs are missing, and the policy has trained since the pre-pass: start the run again, or use `reference: base`", todo.len())));
        }
        let mut f = if have.iter().all(Option::is_none) {
            let mut f = std::fs::File::create(path).map_err(|e| Error::file(path, e.to_string()))?;
            f.write_all(MAGIC)?;
            f.write_all(key.as_bytes())?;
            f
        } else {
            std::fs::OpenOptions::new().append(true).open(path).map_err(|e| Error::file(path, e.to_string()))?
        };
        todo.sort_by_key(|&i| set.seqs[i].ids.len());
        self.adapter.set_training(false);
        if self.which == Reference::Base {
            self.adapter.set_enabled(false)?;
        }
        let result = self.fill(set, &todo, &mut have, &mut f, progress);
        if self.which == Reference::Base {
            self.adapter.set_enabled(true)?;
        }
        result?;
        f.sync_all()?;
        Ok(have.into_iter().map(|v| v.expect("computed")).collect())
    }

    /// Compute `todo` batch by batch, appending each batch's records to `f`.
    fn fill(&self, set: &Set, todo: &[usize], have: &mut [Option<f32>], f: &mut std::fs::File, progress: &mut dyn FnMut(usize, usize)) -> Result<()> {
        let l = self.layout;
        let total = set.seqs.len();
        let mut done = total - todo.len();
        for chunk in todo.chunks(self.batch.max(1)) {
            let rows = rows_from(pack_rows(chunk, |i| set.seqs[i].ids.len(), l.max_len, l.packing), l.pad, |i| (&set.seqs[i].ids, &set.seqs[i].mask));
            let s = sequence_logps(self.model, &rows)?;
            let v: Vec<f32> = s.logps.detach().to_vec1()?;
            let mut rec = Vec::with_capacity(8 * v.len());
            for (&g, &x) in s.ids.iter().zip(&v) {
                rec.extend_from_slice(&(g as u32).to_le_bytes());
                rec.extend_from_slice(&x.to_le_bytes());
                have[g] = Some(x);
            }
            f.write_all(&rec)?;
            f.flush()?;
            done += chunk.len();
            progress(done, total);
        }
        Ok(())
    }
}
