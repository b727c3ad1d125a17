//! Data selection (InstructMining / POINTS style): per-example quality indicators and
//! rules that keep a subset. Indicators: response length, lexical diversity (MTLD),
//! the response's loss and perplexity under a model, a reward model's score and an LLM
//! judge's rating.
use super::pack::padded;
use super::render::Rendered;
use crate::model::{CausalLm, LogitsFor};
use crate::{Error, Result};
use candle_core::D;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Indicators {
    pub response_words: usize,
    pub response_tokens: usize,
    pub mtld: f64,
    /// Mean negative log-likelihood of the trained tokens (None without a model).
    pub loss: Option<f64>,
    pub perplexity: Option<f64>,
    /// A reward model's score of the conversation (None without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
    /// An LLM judge's 1-10 rating of the response (MT-bench's single-answer prompt; None
    /// without a judge, or where its verdict did not parse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<f64>,
}

impl Indicators {
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "response_words" | "length" => self.response_words as f64,
            "response_tokens" => self.response_tokens as f64,
            "mtld" => self.mtld,
            "loss" => self.loss?,
            "perplexity" | "ppl" => self.perplexity?,
            "reward" => self.reward?,
            "judge" => self.judge?,
            _ => return None,
        })
    }
}

pub const NAMES: &[&str] = &["response_words", "response_tokens", "mtld", "loss", "perplexity", "reward", "judge"];

/// Measure of Textual Lexical Diversity (McCarthy & Jarvis 2010): the mean length of
/// word runs whose type-token ratio stays above 0.72, averaged over both directions.
pub fn mtld(text: &str) -> f64 {
    let words: Vec<String> = text.split_whitespace().map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase()).filter(|w| !w.is_empty()).collect();
    if words.is_empty() {
        return 0.0;
    }
    let fwd = mtld_pass(words.iter());
    let bwd = mtld_pass(words.iter().rev());
    (fwd + bwd) / 2.0
}

fn mtld_pass<'a>(words: impl Iterator<Item = &'a String>) -> f64 {
    const THRESHOLD: f64 = 0.72;
    let mut factors = 0.0;
    let mut types = std::collections::HashSet::new();
    let (mut tokens, mut total) = (0usize, 0usize);
    let mut ttr = 1.0;
    for w in words {
        total += 1;
        tokens += 1;
        types.insert(w.clone());
        ttr = types.len() as f64 / tokens as f64;
        if ttr <= THRESHOLD {
            factors += 1.0;
            types.clear();
            tokens = 0;
            ttr = 1.0;
        }
    }
    if tokens > 0 {
        factors += (1.0 - ttr) / (1.0 - THRESHOLD);
    }
    if factors == 0.0 {
        total as f64
    } else {
        total as f64 / factors
    }
}

/// Indicators without a model.
pub fn text_indicators(response: &str, r: &Rendered) -> Indicators {
    Indicators { response_words: response.split_whitespace().count(), response_tokens: r.trained_tokens(), mtld: mtld(response), loss: None, perplexity: None, reward: None, judge: None }
}

/// Mean NLL of each example's trained tokens, `batch` examples per forward pass.
pub fn response_losses(model: &CausalLm, examples: &[Rendered], pad: u32, batch: usize) -> Result<Vec<f64>> {
    let mut out = vec![f64::NAN; examples.len()];
    // Similar lengths share a batch, so little is padded.
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].ids.len());
    for chunk in order.chunks(batch.max(1)) {
        let group: Vec<Rendered> = chunk.iter().map(|&i| examples[i].clone()).collect();
        let rows = padded(&group, pad);
        let logits = model.forward(&rows.batch, None, LogitsFor::All)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        for (r, ex) in rows.examples.iter().enumerate() {
            let lp = logp.get(r)?.to_vec2::<f32>()?;
            let (mut sum, mut n) = (0f64, 0usize);
            for i in 1..rows.targets[r].len() {
                if rows.targets[r][i] {
                    sum -= lp[i - 1][rows.batch.tokens[r][i] as usize] as f64;
                    n += 1;
                }
            }
            out[chunk[ex[0]]] = if n > 0 { sum / n as f64 } else { f64::NAN };
        }
    }
    Ok(out)
}

/// A linear rule: `0.5*mtld - 1*loss + ...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule(pub Vec<(f64, String)>);

impl Rule {
    pub fn parse(s: &str) -> Result<Self> {
        let mut terms = vec![];
        let s = s.replace(' ', "").replace('-', "+-");
        for t in s.split('+').filter(|t| !t.is_empty()) {
            let (coef, name) = match t.split_once('*') {
                Some((c, n)) => (c.parse::<f64>().map_err(|_| Error::Input(format!("rule term {t:?}: bad coefficient")))?, n.to_string()),
                None if t.starts_with('-') => (-1.0, t[1..].to_string()),
                None => (1.0, t.to_string()),
            };
            if !NAMES.contains(&name.as_str()) {
                return Err(Error::Input(format!("rule term {t:?}: unknown indicator {name:?} (one of {})", NAMES.join(", "))));
            }
            terms.push((coef, name));
        }
        if terms.is_empty() {
            return Err(Error::Input("empty rule".into()));
        }
        Ok(Rule(terms))
    }

    pub fn score(&self, ind: &Indicators) -> Option<f64> {
        self.0.iter().map(|(c, n)| ind.get(n).map(|v| c * v)).sum()
    }
}

/// Indices of the `keep` fraction with the highest score (ties keep file order).
pub fn top_fraction(scores: &[Option<f64>], keep: f64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).filter(|&i| scores[i].is_some_and(f64::is_finite)).collect();
    idx.sort_by(|&a, &b| scores[b].unwrap().total_cmp(&scores[a].unwrap()));
    idx.truncate((scores.len() as f64 * keep).round() as usize);
    idx.sort();
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtld_orders_repetitive_below_varied() {
        let varied = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches near ancient ruins";
        let repetitive = "the dog the dog the dog the dog the dog the dog the dog the dog the dog the dog";
        assert!(mtld(varied) > 3.0 * mtld(repetitive), "{} vs {}", mtld(varied), mtld(repetitive));
    }

    #[test]
    fn rules_parse_and_score() {
        let r = Rule::parse("0.5*mtld - loss + 2*response_words").unwrap();
        assert_eq!(r.0, vec![(0.5, "mtld".into()), (-1.0, "loss".into()), (2.0, "response_words".into())]);
        let ind = Indicators { response_words: 10, response_tokens: 12, mtld: 4.0, loss: Some(1.5), perplexity: Some(1.5f64.exp()), reward: None, judge: None };
        assert_eq!(r.score(&ind), Some(0.5 * 4.0 - 1.5 + 20.0));
        assert!(Rule::parse("2*vibes").is_err());
        assert_eq!(top_fraction(&[Some(1.0), Some(3.0), None, Some(2.0)], 0.5), vec![1, 3]);
    }
}
