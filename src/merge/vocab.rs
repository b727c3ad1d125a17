//! Vocabularies of the inputs. Without `tokenizer_source` every embedding and lm_head
//! must already agree (else the merge is refused, naming the sizes and the first token
//! that differs). With `tokenizer_source: base` or a model, that model's tokenizer is the
//! output's and every input's vocabulary-indexed rows are moved to its ids by token
//! string, as mergekit's `PermutedVocabulary` does: a token some inputs lack takes the
//! row of the only input that has it, else the base's, else the mean of the inputs that
//! have it (zeros when none has it). `union` is run when the vocabularies are equal.
use super::config::TokenizerSource;
use super::plan::Plan;
use crate::{Error, Result, Tokenizer};
use std::collections::HashMap;

/// For each model, output id -> its own id.
pub struct Permutation {
    pub out_tokens: usize,
    pub rows: Vec<Vec<Option<usize>>>,
    pub base: Option<usize>,
}

fn tokens(t: &Tokenizer) -> Vec<String> {
    (0..t.vocab_size() as u32).map(|i| t.id_to_token(i).unwrap_or_default()).collect()
}

fn first_difference(a: &[String], b: &[String]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("token {i} is {:?} in one and {:?} in the other", a[i], b[i]),
        None => format!("the first {} tokens agree; one vocabulary is longer", a.len().min(b.len())),
    }
}

/// Check or build the vocabulary mapping; `None` when every vocabulary tensor already
/// agrees and no tokenizer source is named. Returns the tokenizer model index too.
pub fn align(plan: &Plan, source: Option<&TokenizerSource>, base: Option<usize>) -> Result<(Option<Permutation>, usize)> {
    let used: Vec<usize> = (0..plan.models.len()).collect();
    let default_tok = base.unwrap_or(0);
    let Some(source) = source else {
        for t in plan.tensors.iter().filter(|t| t.vocab) {
            let all = t.base.iter().chain(&t.inputs);
            let shapes: Vec<(usize, Vec<usize>)> = all.map(|i| (i.model, plan.models[i.model].shape(&i.name).expect("planned"))).collect();
            if let Some((m, s)) = shapes.iter().find(|(_, s)| *s != shapes[0].1) {
                let (m0, s0) = &shapes[0];
                let (a, b) = (tokens(&plan.models[*m0].tokenizer()?), tokens(&plan.models[*m].tokenizer()?));
                return Err(Error::Input(format!(
                    "{}: {} has {} rows in {} but {} in {} ({}); set tokenizer_source (base, union or a model) to align them",
                    t.name,
                    "the vocabulary",
                    s0[0],
                    plan.models[*m0].label,
                    s[0],
                    plan.models[*m].label,
                    first_difference(&a, &b)
                )));
            }
        }
        return Ok((None, default_tok));
    };
    let vocabs: Vec<Vec<String>> = used.iter().map(|&m| plan.models[m].tokenizer().map(|t| tokens(&t))).collect::<Result<_>>()?;
    let out = match source {
        super::config::TokenizerSource::Base => default_tok,
        super::config::TokenizerSource::Model(r) => plan.model(r),
        super::config::TokenizerSource::Union => {
            if let Some(i) = vocabs.iter().position(|v| *v != vocabs[0]) {
                return Err(Error::Unsupported(format!(
                    "tokenizer_source: union of different vocabularies is not supported ({} vs {}: {}); use base or a model",
                    plan.models[0].label,
                    plan.models[i].label,
                    first_difference(&vocabs[0], &vocabs[i])
                )));
            }
            default_tok
        }
    };
    let rows = vocabs
        .iter()
        .map(|v| {
            let ids: HashMap<&str, usize> = v.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
            vocabs[out].iter().map(|t| ids.get(t.as_str()).copied()).collect()
        })
        .collect();
    Ok((Some(Permutation { out_tokens: vocabs[out].len(), rows, base }), out))
}

impl Permutation {
    /// Rows of each input (`inputs[k]` of model `models[k]`, `cols` wide) moved to the
    /// output vocabulary, filling missing tokens as mergekit does.
    pub fn apply(&self, models: &[usize], inputs: Vec<Vec<f32>>, cols: usize) -> Vec<Vec<f32>> {
        let n = self.out_tokens;
        let mut fill: HashMap<usize, Vec<f32>> = HashMap::new();
        for tok in 0..n {
            let have: Vec<usize> = (0..models.len()).filter(|&k| self.row(models[k], tok, &inputs[k], cols).is_some()).collect();
            if have.len() == models.len() {
                continue;
            }
            let row = |k: usize| self.row(models[k], tok, &inputs[k], cols).expect("present").to_vec();
            let base_k = self.base.and_then(|b| models.iter().position(|&m| m == b)).filter(|k| have.contains(k));
            let v = match (have.len(), base_k) {
                (0, _) => vec![0f32; cols],
                (1, _) => row(have[0]),
                (_, Some(k)) => row(k),
                _ => {
                    let mut acc = vec![0f32; cols];
                    for &k in &have {
                        acc.iter_mut().zip(row(k)).for_each(|(a, b)| *a += b);
                    }
                    acc.iter_mut().for_each(|a| *a /= have.len() as f32);
                    acc
                }
            };
            fill.insert(tok, v);
        }
        models
            .iter()
            .zip(&inputs)
            .map(|(&m, x)| {
                let mut out = vec![0f32; n * cols];
                for (tok, o) in out.chunks_mut(cols).enumerate() {
                    match self.row(m, tok, x, cols) {
                        Some(r) => o.copy_from_slice(r),
                        None => o.copy_from_slice(&fill[&tok]),
                    }
                }
                out
            })
            .collect()
    }

    fn row<'a>(&self, model: usize, tok: usize, x: &'a [f32], cols: usize) -> Option<&'a [f32]> {
        let r = self.rows[model][tok]?;
        x.get(r * cols..(r + 1) * cols)
    }
}
