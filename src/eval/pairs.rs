//! Preference evaluation on held-out pairs: does a model prefer the chosen response?
//! - a policy: the summed log-prob of each response (its last assistant turn) given
//!   the prompt; accuracy is the share of pairs with `logp(chosen) > logp(rejected)`,
//!   also per token (length-normalised, as SimPO and ORPO compare);
//! - a reward model: its score of prompt + chosen against prompt + rejected.
//!
//! Written to a report directory: `pairs.jsonl` (per pair, with its record), and
//! `summary.json` and `margins.png` (a histogram of the margins).
use crate::data::pack::rows_from;
use crate::data::read::{stream, ReadOptions};
use crate::data::render::{render, LossOn};
use crate::data::stats::conversations;
use crate::data::{Conversation, Example};
use crate::model::reward::RewardModel;
use crate::model::CausalLm;
use crate::tokenizer::{ChatTemplate, Tokenizer};
use crate::train::logps::sequence_logps;
use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct PairScore {
    pub record: String,
    pub chosen: f64,
    pub rejected: f64,
    pub margin: f64,
    /// Per token (policies only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin_per_token: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairSummary {
    pub pairs: usize,
    /// Share of pairs whose chosen side scores higher.
    pub accuracy: f64,
    pub mean_margin: f64,
    pub median_margin: f64,
    /// Share with the per-token log-prob of chosen higher (policies only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_per_token: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_margin_per_token: Option<f64>,
    pub scored_by: String,
}

/// Every preference pair of `file` as (record, chosen conversation, rejected conversation).
pub fn read_pairs(file: &Path, opts: &ReadOptions) -> Result<Vec<(String, Conversation, Conversation)>> {
    let mut out = vec![];
    for r in stream(file, opts)? {
        let r = r.map_err(|p| Error::Input(p.to_string()))?;
        if !matches!(r.example, Example::Preference(_)) {
            return Err(Error::Input(format!("{}: not a preference pair (chosen/rejected)", r.origin)));
        }
        let mut c = conversations(&r.example).into_iter();
        let (a, b) = (c.next().expect("chosen"), c.next().expect("rejected"));
        out.push((r.origin.to_string(), a, b));
    }
    Ok(out)
}

/// Summed (and per-token) log-probs of each conversation's last assistant turn.
pub fn response_logps(model: &CausalLm, tok: &Tokenizer, tmpl: &ChatTemplate, convs: &[Conversation], batch: usize) -> Result<Vec<(f64, usize)>> {
    let rendered = convs.iter().map(|c| render(tok, tmpl, c, LossOn::LastTurn)).collect::<Result<Vec<_>>>()?;
    let mut order: Vec<usize> = (0..convs.len()).collect();
    order.sort_by_key(|&i| rendered[i].ids.len());
    let mut out = vec![(0.0, 0); convs.len()];
    let pad = tok.eos_id.unwrap_or(0);
    for chunk in order.chunks(batch.max(1)) {
        let rows = rows_from(chunk.iter().map(|&i| vec![i]).collect(), pad, |i| (&rendered[i].ids, &rendered[i].mask));
        let s = sequence_logps(model, &rows)?;
        let v: Vec<f32> = s.logps.detach().to_vec1()?;
        for ((&g, x), &n) in s.ids.iter().zip(v).zip(&s.lens) {
            out[g] = (x as f64, n);
        }
    }
    Ok(out)
}

/// Score every pair of `file` with a policy's log-probs.
pub fn policy_pairs(model: &CausalLm, tok: &Tokenizer, tmpl: &ChatTemplate, file: &Path, opts: &ReadOptions, batch: usize) -> Result<Vec<PairScore>> {
    let pairs = read_pairs(file, opts)?;
    let convs: Vec<Conversation> = pairs.iter().flat_map(|p| [p.1.clone(), p.2.clone()]).collect();
    let lp = response_logps(model, tok, tmpl, &convs, batch)?;
    Ok(pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ((c, nc), (r, nr)) = (lp[2 * i], lp[2 * i + 1]);
            PairScore { record: p.0.clone(), chosen: c, rejected: r, margin: c - r, margin_per_token: Some(c / nc.max(1) as f64 - r / nr.max(1) as f64) }
        })
        .collect())
}

/// Score every pair of `file` with a reward model.
pub fn reward_pairs(rm: &RewardModel, file: &Path, opts: &ReadOptions, batch: usize) -> Result<Vec<PairScore>> {
    let pairs = read_pairs(file, opts)?;
    let convs: Vec<Conversation> = pairs.iter().flat_map(|p| [p.1.clone(), p.2.clone()]).collect();
    let s = rm.score(&convs, batch)?;
    Ok(pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (c, r) = (s[2 * i][0] as f64, s[2 * i + 1][0] as f64);
            PairScore { record: p.0.clone(), chosen: c, rejected: r, margin: c - r, margin_per_token: None }
        })
        .collect())
}

/// The summary of scored pairs.
pub fn summarize(scores: &[PairScore], scored_by: &str) -> PairSummary {
    let n = scores.len().max(1) as f64;
    let mut m: Vec<f64> = scores.iter().map(|s| s.margin).collect();
    m.sort_by(f64::total_cmp);
    let per: Vec<f64> = scores.iter().filter_map(|s| s.margin_per_token).collect();
    PairSummary {
        pairs: scores.len(),
        accuracy: scores.iter().filter(|s| s.margin > 0.0).count() as f64 / n,
        mean_margin: m.iter().sum::<f64>() / n,
        median_margin: m.get(m.len() / 2).copied().unwrap_or(f64::NAN),
        accuracy_per_token: (!per.is_empty()).then(|| per.iter().filter(|&&x| x > 0.0).count() as f64 / n),
        mean_margin_per_token: (!per.is_empty()).then(|| per.iter().sum::<f64>() / n),
        scored_by: scored_by.into(),
    }
}

/// Write `pairs.jsonl`, `summary.json` and `margins.png` into `dir`.
pub fn write_report(dir: &Path, scores: &[PairScore], summary: &PairSummary) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e.to_string()))?;
    let lines: String = scores.iter().map(|s| serde_json::to_string(s).expect("json") + "\n").collect();
    super::write_text(&dir.join("pairs.jsonl"), &lines)?;
    super::write_json(&dir.join("summary.json"), summary)?;
    let m: Vec<f64> = scores.iter().map(|s| s.margin).collect();
    let title = format!("{}: chosen - rejected ({} pairs, accuracy {:.1}%)", summary.scored_by, summary.pairs, 100.0 * summary.accuracy);
    crate::plot::histogram(&dir.join("margins.png"), &title, "margin", &m, 30)
}
