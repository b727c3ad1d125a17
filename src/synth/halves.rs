//! Non-instructional pairs ("Non-instructional Fine-tuning", Xie et al. 2024): ordinary
//! text is cut in half at a word boundary; the first half becomes the instruction and an
//! instruct model's continuation of it the response. The model is asked, as a user turn,
//! to continue the text ("Continue the following text:" and the first half); the record's
//! instruction is the first half alone, as the paper trains on. Input: JSONL with a
//! `text` field per line, or plain text with documents separated by blank lines. Dropped:
//! documents under 16 words, and continuations cut at the token limit or empty.
use super::{Context, Example, Method, Outcome};
use crate::decode::jobs::Job;
use crate::decode::GenerateOptions;
use crate::{Error, Result};
use std::path::Path;

pub struct Halves;

const MIN_WORDS: usize = 16;

/// The documents of a text file (see the module docs).
pub fn read_documents(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
    if path.extension().is_some_and(|e| e == "jsonl") {
        return text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let v: serde_json::Value = serde_json::from_str(l).map_err(|e| Error::file(path, format!("line {}: {e}", i + 1)))?;
                v.get("text").and_then(|t| t.as_str()).map(str::to_string).ok_or_else(|| Error::file(path, format!("line {}: no string field \"text\"", i + 1)))
            })
            .collect();
    }
    Ok(text.split("\n\n").map(str::trim).filter(|d| !d.is_empty()).map(str::to_string).collect())
}

/// The first half of `doc` by words (whitespace kept as it was inside the half).
pub fn first_half(doc: &str) -> Option<String> {
    let starts: Vec<usize> = doc.split_whitespace().map(|w| w.as_ptr() as usize - doc.as_ptr() as usize).collect();
    if starts.len() < MIN_WORDS {
        return None;
    }
    Some(doc[..starts[starts.len() / 2]].trim_end().to_string())
}

impl Method for Halves {
    fn name(&self) -> &'static str {
        "halves"
    }

    fn about(&self) -> &'static str {
        "non-instructional pairs: the first half of a text (--input) as the instruction, the model's continuation as the response"
    }

    fn run(&self, cx: &Context, work: &Path) -> Result<Outcome> {
        let docs = read_documents(cx.input("halves", "a text file (JSONL with \"text\", or plain text)")?)?;
        let mut out = Outcome::default();
        let mut halves = vec![];
        for (i, d) in docs.iter().enumerate() {
            if halves.len() == cx.n {
                break;
            }
            match first_half(d) {
                Some(h) => halves.push((format!("doc-{i}"), h)),
                None => out.drop("document under 16 words", d),
            }
        }
        let jobs: Vec<Job> = halves
            .iter()
            .enumerate()
            .map(|(i, (id, h))| {
                Ok(Job {
                    id: id.clone(),
                    prompt: cx.tok.encode_chat(cx.template.as_deref(), &[serde_json::json!({"role": "user", "content": format!("Continue the following text:\n\n{h}")})])?,
                    stream: i as u64,
                })
            })
            .collect::<Result<_>>()?;
        let gen = GenerateOptions { max_new_tokens: cx.max_new_tokens, ..Default::default() };
        let by_id = cx.generate("halves: continuations", &work.join("continuations.jsonl"), &jobs, gen)?;
        for (id, h) in halves {
            let g = &by_id[&id];
            if !g.finished || g.text.trim().is_empty() {
                out.drop("continuation cut at the token limit or empty", &h);
                continue;
            }
            out.examples.push(Example { instruction: h, input: String::new(), output: g.text.trim().to_string(), provenance: cx.provenance("halves", id) });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_cut_at_the_middle_word() {
        let doc = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen";
        assert_eq!(first_half(doc).unwrap(), "one two three four five six seven eight");
        assert!(first_half("too short to split").is_none());
    }
}
