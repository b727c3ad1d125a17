//! Tokenized datasets cached on disk, keyed by (file contents, tokenizer, template, loss
//! policy, read options), so a second run over the same data skips reading and rendering.
//! Format: "INSTILLR2", sequence count (u64), then per sequence its side (one byte: 0 a
//! conversation, 1 chosen, 2 rejected), length (u32), the ids (u32 each) and the mask (one
//! byte each), little-endian. Written to a temp file + rename.
use super::read::{stream, ReadOptions};
use super::render::LossOn;
use super::stats::render_all;
use crate::tokenizer::{ChatTemplate, Tokenizer};
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 9] = b"INSTILLR2";

/// Token ids and loss mask of one rendered conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    pub side: Side,
    pub ids: Vec<u32>,
    pub mask: Vec<bool>,
}

/// Which conversation of its record a sequence is; a rejected one follows its chosen one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Conversation = 0,
    Chosen = 1,
    Rejected = 2,
}

fn key(file: &Path, tok: &Tokenizer, tmpl: &ChatTemplate, loss: LossOn, opts: &ReadOptions) -> Result<String> {
    let mut h = Sha256::new();
    h.update(crate::hub::sha256_file(file)?.as_bytes());
    h.update(serde_json::to_vec(&tok.json).expect("json"));
    h.update([u8::from(tok.add_bos)]);
    // Rendering v2: BOS is prepended when the template does not write it.
    h.update(b"render-v2");
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
            for sides in render_all(tok, tmpl, &chunk, loss)? {
                let pair = sides.len() == 2;
                for (i, r) in sides.into_iter().enumerate() {
                    let side = match (pair, i) {
                        (false, _) => Side::Conversation,
                        (true, 0) => Side::Chosen,
                        (true, _) => Side::Rejected,
                    };
                    out.push(Tokenized { side, ids: r.ids, mask: r.mask });
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
        let side = match bytes.get(at) {
            Some(0) => Side::Conversation,
            Some(1) => Side::Chosen,
            Some(2) => Side::Rejected,
            _ => return Err(bad()),
        };
        at += 1;
        let len = u32_at(at).ok_or_else(bad)? as usize;
        at += 4;
        let ids = (0..len).map(|i| u32_at(at + 4 * i)).collect::<Option<Vec<u32>>>().ok_or_else(bad)?;
        at += 4 * len;
        let mask = bytes.get(at..at + len).ok_or_else(bad)?.iter().map(|&b| b != 0).collect();
        at += len;
        out.push(Tokenized { side, ids, mask });
    }
    if at != bytes.len() {
        return Err(bad());
    }
    Ok(out)
}
