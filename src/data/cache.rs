//! Tokenized datasets cached on disk, keyed by (file contents, tokenizer, template, loss
//! policy, read options), so a second run over the same data skips reading and rendering.
//! Format: "INSTILLR3", sequence count (u64), then per sequence its side (one byte: 0 a
//! conversation, 1 chosen, 2 rejected, 3 desirable, 4 undesirable), its record's line or
//! number in the file (u32), its scores (a count byte, then f32 each), length (u32), the
//! ids (u32 each) and the mask (one byte each), little-endian. Written to a temp file +
//! rename.
use super::read::{stream, ReadOptions};
use super::render::LossOn;
use super::stats::render_all;
use crate::tokenizer::{ChatTemplate, Tokenizer};
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 9] = b"INSTILLR3";

/// Token ids and loss mask of one rendered conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    pub side: Side,
    /// The record's line (JSONL) or number (JSON array, Parquet) in its file, 1-based.
    pub record: u32,
    /// Attribute scores of a scored response (reward regression), in the record's order.
    pub scores: Vec<f32>,
    pub ids: Vec<u32>,
    pub mask: Vec<bool>,
}

/// Which conversation of its record a sequence is; a rejected one follows its chosen one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Conversation = 0,
    Chosen = 1,
    Rejected = 2,
    /// A single response labelled desirable (KTO).
    Desirable = 3,
    Undesirable = 4,
}

impl Side {
    fn from_byte(b: u8) -> Option<Side> {
        Some(match b {
            0 => Side::Conversation,
            1 => Side::Chosen,
            2 => Side::Rejected,
            3 => Side::Desirable,
            4 => Side::Undesirable,
            _ => return None,
        })
    }

    /// The side of conversation `i` of a record.
    fn of(e: &super::Example, i: usize) -> Side {
        match e {
            super::Example::Preference(_) if i == 0 => Side::Chosen,
            super::Example::Preference(_) => Side::Rejected,
            super::Example::Labelled(_, true) => Side::Desirable,
            super::Example::Labelled(_, false) => Side::Undesirable,
            super::Example::Sft(_) | super::Example::Scored(..) => Side::Conversation,
        }
    }
}

fn key(file: &Path, tok: &Tokenizer, tmpl: &ChatTemplate, loss: LossOn, opts: &ReadOptions) -> Result<String> {
    let mut h = Sha256::new();
    for f in crate::hub::data_files(file)?.unwrap_or_else(|| vec![file.to_path_buf()]) {
        h.update(crate::hub::sha256_file(&f)?.as_bytes());
    }
    h.update(serde_json::to_vec(&tok.json).expect("json"));
    h.update([u8::from(tok.add_bos)]);
    // Rendering v2: BOS is prepended when the template does not write it.
    h.update(b"render-v2");
    h.update(MAGIC);
    h.update(tmpl.source.as_bytes());
    h.update(format!("{loss:?}|{:?}|{:?}|{:?}|{}", opts.format, opts.columns, opts.superni, opts.skip_invalid).as_bytes());
    Ok(hex::encode(h.finalize()))
}

/// The default cache directory: `$INSTILL_HOME/tokenized`.
pub fn default_dir() -> PathBuf {
    crate::hub::cache_dir().join("tokenized")
}

/// The file's examples tokenized with masks, from the cache in `dir` when present.
/// Returns the examples and whether the cache was used. Files with problems are refused.
pub fn tokenized(file: &Path, tok: &Tokenizer, tmpl: &ChatTemplate, loss: LossOn, opts: &ReadOptions, dir: &Path) -> Result<(Vec<Tokenized>, bool)> {
    let path = dir.join(format!("{}.bin", key(file, tok, tmpl, loss, opts)?));
    if let Ok(t) = read(&path) {
        return Ok((t, true));
    }
    // Streamed in chunks: records are dropped once rendered, each chunk on all cores.
    const CHUNK: usize = 4096;
    let mut out = vec![];
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut records = stream(file, opts)?;
    loop {
        let next = records.next();
        let done = next.is_none();
        match next {
            Some(Ok(r)) => chunk.push(r),
            Some(Err(_)) if opts.skip_invalid => {}
            Some(Err(p)) => {
                return Err(Error::Input(format!("{p} (`instill data check` lists every problem; --skip-invalid goes on without them)")));
            }
            None => {}
        }
        if chunk.len() == CHUNK || (done && !chunk.is_empty()) {
            for (rec, sides) in chunk.iter().zip(render_all(tok, tmpl, &chunk, loss)?) {
                let scores: Vec<f32> = match &rec.example {
                    super::Example::Scored(_, s) => s.iter().map(|(_, v)| *v as f32).collect(),
                    super::Example::Preference(p) => p.margin.map(|m| vec![m as f32]).unwrap_or_default(),
                    _ => vec![],
                };
                for (i, r) in sides.into_iter().enumerate() {
                    let side = Side::of(&rec.example, i);
                    out.push(Tokenized { side, record: rec.origin.index as u32, scores: scores.clone(), ids: r.ids, mask: r.mask });
                }
            }
            chunk.clear();
        }
        if done {
            break;
        }
    }
    write(&path, &out)?;
    Ok((out, false))
}

fn write(path: &Path, items: &[Tokenized]) -> Result<()> {
    std::fs::create_dir_all(path.parent().expect("cache dir"))?;
    let tmp = path.with_extension(format!("{}.partial", std::process::id()));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    f.write_all(MAGIC)?;
    f.write_all(&(items.len() as u64).to_le_bytes())?;
    for t in items {
        f.write_all(&[t.side as u8])?;
        f.write_all(&t.record.to_le_bytes())?;
        f.write_all(&[t.scores.len() as u8])?;
        for s in &t.scores {
            f.write_all(&s.to_le_bytes())?;
        }
        f.write_all(&(t.ids.len() as u32).to_le_bytes())?;
        for id in &t.ids {
            f.write_all(&id.to_le_bytes())?;
        }
        f.write_all(&t.mask.iter().map(|&m| u8::from(m)).collect::<Vec<_>>())?;
    }
    f.flush()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn read(path: &Path) -> Result<Vec<Tokenized>> {
    let mut bytes = vec![];
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    let bad = || Error::file(path, "corrupt tokenized cache (delete it)");
    if bytes.len() < 17 || &bytes[..9] != MAGIC {
        return Err(bad());
    }
    let u32_at = |at: usize| -> Option<u32> { Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?)) };
    let n = u64::from_le_bytes(bytes[9..17].try_into().expect("8 bytes")) as usize;
    let mut at = 17;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let side = bytes.get(at).and_then(|&b| Side::from_byte(b)).ok_or_else(bad)?;
        let record = u32_at(at + 1).ok_or_else(bad)?;
        let n_scores = *bytes.get(at + 5).ok_or_else(bad)? as usize;
        at += 6;
        let scores = (0..n_scores).map(|i| u32_at(at + 4 * i).map(f32::from_bits)).collect::<Option<Vec<f32>>>().ok_or_else(bad)?;
        at += 4 * n_scores;
        let len = u32_at(at).ok_or_else(bad)? as usize;
        at += 4;
        let ids = (0..len).map(|i| u32_at(at + 4 * i)).collect::<Option<Vec<u32>>>().ok_or_else(bad)?;
        at += 4 * len;
        let mask = bytes.get(at..at + len).ok_or_else(bad)?.iter().map(|&b| b != 0).collect();
        at += len;
        out.push(Tokenized { side, record, scores, ids, mask });
    }
    if at != bytes.len() {
        return Err(bad());
    }
    Ok(out)
}
