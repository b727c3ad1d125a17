//! Magpie (Xu et al. 2024): an aligned model is given its chat template only up to where a
//! user message starts (the "pre-query template"), so what it samples is a user
//! instruction; the instruction is then answered in a normal chat turn. As in the paper's
//! release, instructions are sampled at temperature 1 and answered greedily. Dropped:
//! instructions that never end their turn, empty or too short ones (under 3 words),
//! exact duplicates (after squashing whitespace), and answers cut at the token limit.
use super::{squash, Context, Example, Generated, Method, Outcome};
use crate::decode::jobs::Job;
use crate::decode::{GenerateOptions, SamplingParams};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use std::collections::HashSet;
use std::path::Path;

pub struct Magpie;

/// Tokens an instruction may take.
const INSTRUCTION_TOKENS: usize = 128;
/// Marks where the user's text goes when the template is rendered.
const SENTINEL: &str = "\u{1}MAGPIE_USER_TEXT\u{1}";

/// The template's text before a user message's content, and the text that closes a user
/// turn (the stop string for the sampled instruction: `<|im_end|>`, `<end_of_turn>` ...).
pub fn pre_query(tok: &Tokenizer, template: Option<&str>) -> Result<(String, String)> {
    let rendered = tok.template(template)?.render(&[serde_json::json!({"role": "user", "content": SENTINEL})], false, None)?;
    let at = rendered.find(SENTINEL).ok_or_else(|| Error::Template("the chat template does not write the user's message: Magpie needs a template that does".into()))?;
    let after = rendered[at + SENTINEL.len()..].trim_start();
    let end: String = after.split('\n').next().unwrap_or("").trim().to_string();
    Ok((rendered[..at].to_string(), end))
}

impl Method for Magpie {
    fn name(&self) -> &'static str {
        "magpie"
    }

    fn about(&self) -> &'static str {
        "instructions sampled from the chat template's user prefix, then answered (needs an aligned chat model)"
    }

    fn run(&self, cx: &Context, work: &Path) -> Result<Outcome> {
        let (prefix, end) = pre_query(cx.tok, cx.template.as_deref())?;
        let prompt = cx.tok.encode_rendered(&prefix)?;
        let jobs: Vec<Job> = (0..cx.n).map(|i| Job { id: format!("magpie-{i}"), prompt: prompt.clone(), stream: i as u64 }).collect();
        let sample = SamplingParams { temperature: 1.0, top_p: 1.0, seed: cx.seed, ..Default::default() };
        let stops = if end.is_empty() { vec![] } else { vec![end.clone()] };
        let gen = GenerateOptions { max_new_tokens: INSTRUCTION_TOKENS, sampling: sample, stop_strings: stops, ..Default::default() };
        let asked: Vec<Generated> = cx.runner(gen, "magpie: instructions").run(&jobs, &work.join("instructions.jsonl"), |j, g| Ok(Some(Generated::from(j, g))))?;
        let mut out = Outcome::default();
        let mut seen = HashSet::new();
        let mut kept = vec![];
        for a in &asked {
            let text = a.text.trim().trim_end_matches(end.as_str()).trim().to_string();
            if !a.finished {
                out.drop("instruction did not end its turn", &text);
            } else if text.split_whitespace().count() < 3 {
                out.drop("instruction under 3 words", &text);
            } else if !seen.insert(squash(&text).to_lowercase()) {
                out.drop("duplicate instruction", &text);
            } else {
                kept.push((a.id.clone(), text));
            }
        }
        let answers = answer(cx, &kept, &work.join("responses.jsonl"), "magpie: responses")?;
        for ((id, instruction), r) in kept.into_iter().zip(answers) {
            if !r.finished {
                out.drop("response cut at the token limit", &instruction);
                continue;
            }
            out.examples.push(Example { instruction, input: String::new(), output: r.text.trim().to_string(), provenance: cx.provenance("magpie", id) });
        }
        Ok(out)
    }
}

/// Each `(id, instruction)` answered greedily as a user turn, in order.
pub fn answer(cx: &Context, asks: &[(String, String)], file: &Path, stage: &str) -> Result<Vec<Generated>> {
    let jobs: Vec<Job> = asks
        .iter()
        .enumerate()
        .map(|(i, (id, text))| Ok(Job { id: id.clone(), prompt: cx.tok.encode_chat(cx.template.as_deref(), &[serde_json::json!({"role": "user", "content": text})])?, stream: i as u64 }))
        .collect::<Result<_>>()?;
    let gen = GenerateOptions { max_new_tokens: cx.max_new_tokens, ..Default::default() };
    let mut by_id = cx.generate(stage, file, &jobs, gen)?;
    Ok(asks.iter().map(|(id, _)| by_id.remove(id).expect("every job has its generation")).collect())
}
