//! Learned Embedding Propagation (Tikhomirov & Chernyshev 2024, "Facilitating large
//! language model Russian adaptation with Learned Embedding Propagation"): adapt a model to
//! a new language or domain through its vocabulary and embeddings alone, then carry the
//! result into an instruction-tuned model of the same base without instruction data.
//!
//! 1. [`extend`]: new BPE merges learned on a corpus (`tokenizer/extend.rs`), each new
//!    token's embedding (and untied output row) the mean of the original sub-tokens' rows.
//! 2. Embedding-only tuning on raw text: `method: full` with `full.train:
//!    [embed_tokens, lm_head]` on `{"text": ...}` records (`recipes/lep-embeddings.yaml`).
//! 3. [`propagate`]: the tuned embeddings into the instruction-tuned model, by one of
//!    - `swap`: the adapted base's embeddings as they are;
//!    - `overlap`: for the original tokens, the adapted rows plus the instruction tuning's
//!      change of them (`target - base`); new tokens take the adapted rows;
//!    - `project` (default): the linear map `W` that takes the base's embedding space to
//!      the target's, fitted by ridge least squares over the original vocabulary
//!      (`min |B W - T|^2 + lambda |W|^2`), applied to every adapted row (the paper's
//!      vocabulary conversion by a projection; our reading of its description).
use crate::tokenizer::{extend, Tokenizer};
use crate::{CausalLm, Error, Result};
use candle_core::{DType, Tensor};

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExtendReport {
    pub added: usize,
    pub first_id: u32,
    pub vocab_before: usize,
    pub vocab_after: usize,
    /// Tokens of the corpus before and after.
    pub tokens_before: usize,
    pub tokens_after: usize,
    /// The first new tokens: (text, the original tokens' texts).
    pub examples: Vec<(String, Vec<String>)>,
}

/// Extend `model`'s vocabulary with up to `new_tokens` merges learned on `texts`; returns
/// the extended tokenizer. New rows start as the mean of their sub-tokens' rows.
pub fn extend(model: &mut CausalLm, tok: &Tokenizer, texts: &[String], new_tokens: usize, min_freq: usize) -> Result<(Tokenizer, ExtendReport)> {
    let rows = model.config.vocab_size;
    let max_id = max_token_id(tok);
    if max_id as usize >= rows {
        return Err(Error::Input(format!("the tokenizer has id {max_id}, beyond the model's {rows} embedding rows")));
    }
    let ext = extend::learn(tok, texts, new_tokens, min_freq, rows as u32)?;
    if ext.added.is_empty() {
        return Err(Error::Input(format!("no pair of tokens occurs {min_freq} times in the corpus: nothing to add")));
    }
    let new_tok = tok.with_json(ext.json.clone())?;
    let mean_rows = |w: &Tensor| -> Result<Tensor> {
        let mut out = Vec::with_capacity(ext.added.len());
        for t in &ext.added {
            let idx = Tensor::from_vec(t.parts.clone(), t.parts.len(), w.device())?;
            out.push(w.index_select(&idx, 0)?.mean(0)?);
        }
        Ok(Tensor::cat(&[w.clone(), Tensor::stack(&out, 0)?], 0)?)
    };
    let embed = mean_rows(&model.embedding_weight()?)?;
    let head = if model.config.tie_embeddings { None } else { Some(mean_rows(&model.output_weight()?.to_dtype(DType::F32)?)?) };
    model.set_embeddings(embed, head)?;
    let count = |t: &Tokenizer| -> Result<usize> { texts.iter().map(|x| t.encode(x, false).map(|v| v.len())).sum() };
    let examples = ext.added.iter().take(20).map(|t| (decode(&new_tok, &[t.id]), t.parts.iter().map(|&p| decode(tok, &[p])).collect())).collect();
    let report =
        ExtendReport { added: ext.added.len(), first_id: rows as u32, vocab_before: rows, vocab_after: model.config.vocab_size, tokens_before: count(tok)?, tokens_after: count(&new_tok)?, examples };
    Ok((new_tok, report))
}

fn decode(tok: &Tokenizer, ids: &[u32]) -> String {
    tok.decode(ids, false).unwrap_or_default()
}

/// The largest id in a tokenizer.json (its BPE vocabulary and its added tokens).
fn max_token_id(tok: &Tokenizer) -> u32 {
    let vocab = tok.json["model"]["vocab"].as_object().into_iter().flat_map(|m| m.values().filter_map(|v| v.as_u64()));
    let added = tok.json["added_tokens"].as_array().into_iter().flatten().filter_map(|t| t["id"].as_u64());
    vocab.chain(added).max().unwrap_or(0) as u32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Swap,
    Overlap,
    Project,
}

impl Propagation {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "swap" => Ok(Propagation::Swap),
            "overlap" => Ok(Propagation::Overlap),
            "project" => Ok(Propagation::Project),
            other => Err(Error::Input(format!("--method {other:?}: expected swap, overlap or project"))),
        }
    }
}

/// The target's new embedding matrix `(V1, H)` from the base's original `(V0, H)`, the
/// adapted base's `(V1, H)` (its first `V0` rows the same tokens) and the target's own
/// `(V0, H)`.
pub fn propagate(base: &Tensor, adapted: &Tensor, target: &Tensor, how: Propagation) -> Result<Tensor> {
    let (v0, h) = base.dims2()?;
    let (v1, h1) = adapted.dims2()?;
    if target.dims() != [v0, h] || h1 != h || v1 < v0 {
        return Err(Error::Input(format!(
            "propagate: base {:?}, adapted {:?} and target {:?} do not line up (the adapted vocabulary must extend the base's)",
            base.dims(),
            adapted.dims(),
            target.dims()
        )));
    }
    Ok(match how {
        Propagation::Swap => adapted.clone(),
        Propagation::Overlap => {
            let change = (target - base)?;
            let pad = Tensor::zeros((v1 - v0, h), DType::F32, base.device())?;
            (adapted + Tensor::cat(&[change, pad], 0)?)?
        }
        Propagation::Project => adapted.matmul(&fit_map(base, target)?)?,
    })
}

/// `W (H, H)` minimising `|B W - T|^2 + lambda |W|^2`, with `lambda` 1e-6 of the mean
/// diagonal of `B^T B`: the normal equations solved by Cholesky in f64.
pub fn fit_map(b: &Tensor, t: &Tensor) -> Result<Tensor> {
    let h = b.dim(1)?;
    let btb = b.t()?.matmul(b)?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let btt = b.t()?.matmul(t)?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let lambda = 1e-6 * (0..h).map(|i| btb[i][i]).sum::<f64>() / h as f64;
    let mut a: Vec<f64> = (0..h * h).map(|k| btb[k / h][k % h] + if k / h == k % h { lambda } else { 0.0 }).collect();
    cholesky(&mut a, h)?;
    let mut w = vec![0f32; h * h];
    for c in 0..h {
        let col: Vec<f64> = (0..h).map(|r| btt[r][c]).collect();
        for (r, x) in solve(&a, h, col).into_iter().enumerate() {
            w[r * h + c] = x as f32;
        }
    }
    Ok(Tensor::from_vec(w, (h, h), b.device())?)
}

/// In-place lower Cholesky factor of the symmetric positive-definite `a (n, n)`.
fn cholesky(a: &mut [f64], n: usize) -> Result<()> {
    for j in 0..n {
        let d = a[j * n + j] - (0..j).map(|k| a[j * n + k] * a[j * n + k]).sum::<f64>();
        if d <= 0.0 {
            return Err(Error::Input("propagate: the base's embeddings are rank-deficient (B^T B is not positive definite)".into()));
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let s = a[i * n + j] - (0..j).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>();
            a[i * n + j] = s / d;
        }
    }
    Ok(())
}

/// `x` with `L L^T x = y`, `L` the lower factor in `a`.
fn solve(a: &[f64], n: usize, mut y: Vec<f64>) -> Vec<f64> {
    for i in 0..n {
        y[i] = (y[i] - (0..i).map(|k| a[i * n + k] * y[k]).sum::<f64>()) / a[i * n + i];
    }
    for i in (0..n).rev() {
        y[i] = (y[i] - (i + 1..n).map(|k| a[k * n + i] * y[k]).sum::<f64>()) / a[i * n + i];
    }
    y
}

/// A corpus's texts: JSONL records' `field`, or a text file's non-empty lines.
pub fn read_corpus(path: &std::path::Path, field: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl" || e == "json");
    let mut out = vec![];
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        if !jsonl {
            out.push(line.to_string());
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::file(path, format!("line {}: invalid JSON: {e}", i + 1)))?;
        let t = v.get(field).and_then(|x| x.as_str()).ok_or_else(|| Error::file(path, format!("line {}: no string field {field:?}", i + 1)))?;
        out.push(t.to_string());
    }
    if out.is_empty() {
        return Err(Error::file(path, "no texts"));
    }
    Ok(out)
}
