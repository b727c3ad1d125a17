//! Ensemble-Instruct's output ensembling (Lee et al. 2023): every example a method made is
//! also answered zero-shot by other models, and the output kept is the one the models agree
//! on. As in the paper's release (`ensemble_output.py`), the outputs are compared after
//! SuperNI's `normalize_answer`: where two are equal, that one is kept; otherwise ROUGE-L
//! (rouge_score's tokenizer with the Porter stemmer) is computed for every pair, and if even
//! the least similar pair scores above 0.01 the output with the highest total ROUGE-L
//! against the others is kept (a greedy minimum-Bayes-risk choice); else the example is
//! dropped, the models disagreeing. The release takes three outputs (the generator's and
//! two others); this takes any number, and where the two other models agree exactly it
//! keeps their output (the release writes the generator's there, which reads as a slip).
use super::{Context, Generated, Outcome};
use crate::decode::jobs::{Job, Runner};
use crate::decode::GenerateOptions;
use crate::eval::metrics::exact_match::normalize_answer;
use crate::eval::metrics::rouge;
use crate::model::CausalLm;
use crate::tokenizer::Tokenizer;
use crate::Result;
use std::collections::HashMap;
use std::path::Path;

/// A model that answers every example beside the generator.
pub struct Member<'a> {
    /// As the user named it (provenance, the work file's name).
    pub name: String,
    pub model: &'a CausalLm,
    pub tok: &'a Tokenizer,
}

/// The least pairwise ROUGE-L the outputs must all exceed (the release's threshold).
pub const MIN_AGREEMENT: f64 = 0.01;

/// Which output the ensemble keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Choice {
    /// Equal (normalized) to another output: the first of the first equal pair.
    Exact(usize),
    /// The highest total ROUGE-L against the others, every pair above the threshold.
    Agreement(usize),
    /// Some pair at or under the threshold (or fewer than two outputs).
    Disagree,
    /// The agreed output is empty.
    Empty,
}

/// The release's rule over any number of outputs (the generator's first).
pub fn consensus(outputs: &[&str], threshold: f64) -> Choice {
    let norm: Vec<String> = outputs.iter().map(|o| normalize_answer(o)).collect();
    let n = norm.len();
    for i in 0..n {
        if !norm[i].is_empty() && norm[i + 1..].contains(&norm[i]) {
            return Choice::Exact(i);
        }
    }
    if n < 2 {
        return Choice::Disagree;
    }
    let toks: Vec<Vec<String>> = norm.iter().map(|t| rouge::tokenize(t, true)).collect();
    let mut total = vec![0f64; n];
    let mut worst = f64::INFINITY;
    for i in 0..n {
        for j in i + 1..n {
            let f = rouge::rouge_l(&toks[i], &toks[j]).fmeasure;
            total[i] += f;
            total[j] += f;
            worst = worst.min(f);
        }
    }
    if worst <= threshold {
        return Choice::Disagree;
    }
    let best = (0..n).fold(0, |b, i| if total[i] > total[b] { i } else { b });
    if outputs[best].trim().is_empty() {
        Choice::Empty
    } else {
        Choice::Agreement(best)
    }
}

/// Every member answers each of the method's examples (greedy, as a chat turn of its own
/// template, resumable under `work`), and each example keeps the output the ensemble agrees
/// on or is dropped. An answer cut at the token limit takes part as an empty output.
pub fn vote(cx: &Context, out: &mut Outcome, work: &Path) -> Result<()> {
    let mut answers: Vec<HashMap<String, Generated>> = vec![];
    for (k, m) in cx.ensemble.iter().enumerate() {
        answers.push(answer(cx, m, out, &work.join(format!("ensemble-{k}.jsonl")))?);
    }
    let examples = std::mem::take(&mut out.examples);
    for mut e in examples {
        let theirs: Vec<String> = answers.iter().map(|a| a.get(&e.provenance.prompt_id).filter(|g| g.finished).map_or(String::new(), |g| g.text.trim().to_string())).collect();
        let mut outputs = vec![e.output.as_str()];
        outputs.extend(theirs.iter().map(String::as_str));
        let who = |i: usize| if i == 0 { cx.model_name.clone() } else { cx.ensemble[i - 1].name.clone() };
        match consensus(&outputs, MIN_AGREEMENT) {
            Choice::Exact(i) | Choice::Agreement(i) => {
                *out.counts.entry(format!("ensemble: output from {}", who(i))).or_default() += 1;
                e.output = outputs[i].to_string();
                e.provenance.output_model = Some(who(i));
                out.examples.push(e);
            }
            Choice::Disagree => out.drop(&format!("ensemble: outputs disagree (a pair's ROUGE-L <= {MIN_AGREEMENT})"), &e.instruction),
            Choice::Empty => out.drop("ensemble: the agreed output is empty", &e.instruction),
        }
    }
    Ok(())
}

/// One member's zero-shot answers to the examples, by prompt id.
fn answer(cx: &Context, m: &Member, out: &Outcome, file: &Path) -> Result<HashMap<String, Generated>> {
    let jobs: Vec<Job> = out
        .examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let ask = if e.input.trim().is_empty() { e.instruction.trim().to_string() } else { format!("{}\n{}", e.instruction.trim(), e.input.trim()) };
            Ok(Job { id: e.provenance.prompt_id.clone(), prompt: m.tok.encode_chat(None, &[serde_json::json!({"role": "user", "content": ask})])?, stream: i as u64 })
        })
        .collect::<Result<_>>()?;
    let gen = GenerateOptions { max_new_tokens: cx.max_new_tokens, ..Default::default() };
    let label = cx.progress.then(|| format!("ensemble: {}", m.name));
    let runner = Runner { model: m.model, tok: m.tok, gen, batch_size: cx.batch_size, label };
    let got = runner.run(&jobs, file, |j, g| Ok(Some(Generated::from(j, g))))?;
    Ok(got.into_iter().map(|g| (g.id.clone(), g)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_agreement_wins_first() {
        // Equal after normalization (case, punctuation, spaces): the first of the pair.
        assert_eq!(consensus(&["Paris.", "the capital is paris", " paris "], MIN_AGREEMENT), Choice::Exact(0));
        // The generator disagrees; the two others agree exactly: theirs.
        assert_eq!(consensus(&["London", "Paris!", "paris"], MIN_AGREEMENT), Choice::Exact(1));
        // Empty outputs never match each other.
        assert_eq!(consensus(&["", "", "a b c"], MIN_AGREEMENT), Choice::Disagree);
    }

    #[test]
    fn rouge_agreement_picks_the_central_output() {
        // Pairwise F: 0.77 (0, 1), 0.57 (0, 2), 0.80 (1, 2): the one closest to both
        // others is kept, here the middle one.
        let outs = ["the cat sat on the mat", "the cat sat on a mat today", "a cat sat on a mat today quietly"];
        assert_eq!(consensus(&outs, MIN_AGREEMENT), Choice::Agreement(1));
        // Stemming counts "running" and "runs" as one word.
        assert_eq!(consensus(&["dogs running fast", "dog runs fast", "nothing alike here"], MIN_AGREEMENT), Choice::Disagree);
        assert_eq!(consensus(&["dogs running fast", "dog runs fast", "a dog running"], MIN_AGREEMENT), Choice::Agreement(0));
    }

    #[test]
    fn a_disagreeing_pair_or_an_empty_choice_drops() {
        assert_eq!(consensus(&["alpha beta", "gamma delta", "alpha gamma"], MIN_AGREEMENT), Choice::Disagree);
        assert_eq!(consensus(&["only one"], MIN_AGREEMENT), Choice::Disagree);
        // Punctuation only: the normalized texts are empty, never similar.
        assert_eq!(consensus(&["!!!", "alpha", "alpha beta"], MIN_AGREEMENT), Choice::Disagree);
    }
}
