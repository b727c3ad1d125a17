//! Reward models: a causal LM's final hidden state at a sequence's last token times a
//! score head `(outputs, hidden)`. Saved and loaded as a Hugging Face
//! `*ForSequenceClassification` directory (`score.weight`, `num_labels`, no `lm_head`),
//! which transformers loads and scores the same; the chat template the model was trained
//! with is written into its `tokenizer_config.json`, and `instill_reward.json` names the
//! attributes of a regression head.
use super::weights::save_hf_dir_with;
use super::CausalLm;
use crate::data::pack::{rows_from, Rows};
use crate::data::render::{render, LossOn};
use crate::data::Conversation;
use crate::hub::ModelSource;
use crate::tokenizer::{ChatTemplate, Tokenizer};
use crate::{Error, Result};
use candle_core::Tensor;
use std::path::Path;

const META_FILE: &str = "instill_reward.json";

pub struct RewardModel {
    pub lm: CausalLm,
    /// `(outputs, hidden)`.
    pub head: Tensor,
    /// Names of the head's outputs (`["reward"]`, or a regression's attributes).
    pub attributes: Vec<String>,
    pub tok: Tokenizer,
    pub template: ChatTemplate,
}

/// Which sequence each (row, segment) is, as local indices; `ids` collects the globals.
pub(crate) fn owners(rows: &Rows) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut ids: Vec<usize> = vec![];
    let local = rows
        .examples
        .iter()
        .map(|row| {
            row.iter()
                .map(|&g| match ids.iter().position(|&x| x == g) {
                    Some(i) => i,
                    None => {
                        ids.push(g);
                        ids.len() - 1
                    }
                })
                .collect()
        })
        .collect();
    (ids, local)
}

/// The final-normed hidden state at each sequence's last token: `(ids, (S, hidden))`,
/// ids in order of first appearance. This is where a `*ForSequenceClassification` head
/// reads (transformers pools the last token that is not padding).
pub fn last_hidden(model: &CausalLm, rows: &Rows) -> Result<(Vec<usize>, Tensor)> {
    let (b, t) = rows.batch.dims();
    let (ids, local) = owners(rows);
    let mut last = vec![0u32; ids.len()];
    for r in 0..b {
        for i in 0..t {
            if rows.batch.valid[r][i] {
                last[local[r][rows.batch.segments[r][i] as usize]] = (r * t + i) as u32;
            }
        }
    }
    let h = model.final_hidden(&rows.batch)?;
    let d = h.dim(2)?;
    let n = last.len();
    let idx = Tensor::from_vec(last, n, &model.device)?;
    Ok((ids, h.reshape((b * t, d))?.index_select(&idx, 0)?))
}

impl RewardModel {
    /// Write `lm` (adapters merged) with `head` as a sequence-classification directory.
    pub fn save(lm: &CausalLm, head: &Tensor, attributes: &[String], tok: &Tokenizer, template: &ChatTemplate, dir: &Path) -> Result<()> {
        let n = head.dim(0)?;
        let mut files = tok.hf_files();
        for (name, bytes) in files.iter_mut() {
            if *name == "tokenizer_config.json" {
                let mut cfg: serde_json::Value = serde_json::from_slice(bytes).expect("our own JSON");
                cfg["chat_template"] = template.source.clone().into();
                *bytes = serde_json::to_vec_pretty(&cfg).expect("json");
            }
        }
        let meta = serde_json::json!({"attributes": attributes});
        files.push((META_FILE, serde_json::to_vec_pretty(&meta).expect("json")));
        let arch_class = lm.arch.hf_config(&lm.config)["architectures"][0].as_str().unwrap_or("LlamaForCausalLM").replace("ForCausalLM", "ForSequenceClassification");
        let patch = |c: &mut serde_json::Value| {
            c["architectures"] = serde_json::json!([arch_class]);
            c["num_labels"] = n.into();
            c["id2label"] = (0..n).map(|i| (i.to_string(), serde_json::Value::from(format!("LABEL_{i}")))).collect::<serde_json::Map<_, _>>().into();
            c["label2id"] = (0..n).map(|i| (format!("LABEL_{i}"), serde_json::Value::from(i))).collect::<serde_json::Map<_, _>>().into();
            if n > 1 {
                c["problem_type"] = "regression".into();
            }
            if c.get("pad_token_id").is_none_or(|v| v.is_null()) {
                c["pad_token_id"] = tok.eos_id.into();
            }
        };
        let mut tensors = lm.named_tensors()?;
        tensors.retain(|(g, _)| g != "output.weight");
        save_hf_dir_with(dir, lm.arch, &lm.config, tensors, vec![("score.weight".into(), head.clone())], &patch, candle_core::DType::F32, usize::MAX, &files)
    }

    /// Load a directory [`Self::save`] wrote (or any transformers
    /// `LlamaForSequenceClassification` / `Qwen2ForSequenceClassification` directory).
    pub fn load(dir: &Path) -> Result<Self> {
        let source = ModelSource::HfDir(dir.to_path_buf());
        let lm = CausalLm::load(&source, &Default::default())?;
        let tok = Tokenizer::load(&source)?;
        let template = tok.template(None)?;
        let head = super::weights::load_hf_tensor(dir, "score.weight", &lm.device)?.ok_or_else(|| Error::file(dir, "no score.weight: not a sequence-classification (reward) model"))?;
        let n = head.dim(0)?;
        let meta: Option<serde_json::Value> = std::fs::read(dir.join(META_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let attributes = meta
            .and_then(|m| m["attributes"].as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect::<Vec<_>>()))
            .filter(|a| a.len() == n)
            .unwrap_or_else(|| if n == 1 { vec!["reward".into()] } else { (0..n).map(|i| format!("LABEL_{i}")).collect() });
        Ok(RewardModel { lm, head, attributes, tok, template })
    }

    /// Scores `(S, outputs)` of the sequences in `rows`, in order of first appearance.
    pub fn score_rows(&self, rows: &Rows) -> Result<(Vec<usize>, Vec<Vec<f32>>)> {
        let (ids, h) = last_hidden(&self.lm, rows)?;
        Ok((ids, h.matmul(&self.head.t()?)?.to_vec2::<f32>()?))
    }

    /// Scores of whole conversations (each rendered with the model's template), `batch`
    /// at a time; each row has one value per output.
    pub fn score(&self, convs: &[Conversation], batch: usize) -> Result<Vec<Vec<f32>>> {
        let mut seqs = Vec::with_capacity(convs.len());
        for c in convs {
            seqs.push(render(&self.tok, &self.template, c, LossOn::Assistant)?);
        }
        self.score_ids(&seqs.iter().map(|r| r.ids.clone()).collect::<Vec<_>>(), batch)
    }

    /// Scores of token sequences.
    pub fn score_ids(&self, seqs: &[Vec<u32>], batch: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![vec![]; seqs.len()];
        let masks: Vec<Vec<bool>> = seqs.iter().map(|s| vec![false; s.len()]).collect();
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].len());
        let pad = self.tok.eos_id.unwrap_or(0);
        for chunk in order.chunks(batch.max(1)) {
            let rows = rows_from(chunk.iter().map(|&i| vec![i]).collect(), pad, |i| (&seqs[i], &masks[i]));
            let (ids, scores) = self.score_rows(&rows)?;
            for (g, s) in ids.into_iter().zip(scores) {
                out[g] = s;
            }
        }
        Ok(out)
    }
}
