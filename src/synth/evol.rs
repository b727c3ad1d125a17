//! Evol-Instruct (WizardLM, Xu et al. 2023): each round rewrites every instruction of the
//! pool with one evolution drawn at random (seeded): in depth (add a constraint, deepen
//! the inquiry, concretize, ask for more reasoning steps, complicate the input) or in
//! breadth (a new, rarer prompt of the same domain), with the prompts of the WizardLM
//! release (`depth.py`, `breadth.py`; "complicate input" is in the paper but not the
//! release, so its method sentence is ours). The evolved instruction is answered greedily
//! (the text after a "#Rewritten Prompt#:" label, where the model wrote one) and
//! eliminated by the paper's four rules: no information gain (the model judges the two
//! instructions "Equal", with the paper's prompt), a short apology (the answer contains
//! "sorry" and has under 80 words), an answer of only punctuation and stop words, or words
//! copied from the evolving prompt ("given prompt", "#Rewritten Prompt#" ...). A survivor
//! replaces its parent in the pool and is written with its answer; a failure leaves the
//! parent in the pool for the next round. `--input` is any instruction data `instill data`
//! reads (the first user turn of each record), `--rounds` the number of rounds.
use super::{Context, Example, Method, Outcome};
use crate::data::Example as Data;
use crate::decode::jobs::Job;
use crate::decode::GenerateOptions;
use crate::Result;
use rand::{Rng, SeedableRng};
use std::path::Path;

pub struct Evol;

const DEPTH: &str = "I want you act as a Prompt Rewriter.\r\n Your objective is to rewrite a given prompt into a more complex version to make those famous AI systems (e.g., chatgpt and GPT4) a bit harder to handle.\r\n But the rewritten prompt must be reasonable and must be understood and responded by humans.\r\n Your rewriting cannot omit the non-text parts such as the table and code in #The Given Prompt#:. Also, please do not omit the input in #The Given Prompt#. \r\n You SHOULD complicate the given prompt using the following method: \r\n{method} \r\nYou should try your best not to make the #Rewritten Prompt# become verbose, #Rewritten Prompt# can only add 10 to 20 words into #The Given Prompt#. \r\n'#The Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' are not allowed to appear in #Rewritten Prompt#\r\n#The Given Prompt#: \r\n {instruction} \r\n#Rewritten Prompt#:\r\n";
const BREADTH: &str = "I want you act as a Prompt Creator.\r\nYour goal is to draw inspiration from the #Given Prompt# to create a brand new prompt.\r\nThis new prompt should belong to the same domain as the #Given Prompt# but be even more rare.\r\nThe LENGTH and complexity of the #Created Prompt# should be similar to that of the #Given Prompt#.\r\nThe #Created Prompt# must be reasonable and must be understood and responded by humans.\r\n'#Given Prompt#', '#Created Prompt#', 'given prompt' and 'created prompt' are not allowed to appear in #Created Prompt#\r\n#Given Prompt#: \r\n {instruction} \r\n#Created Prompt#:\r\n";
const EQUAL: &str = "Here are two Instructions to ChatGPT AI, do you think they are equal to each other, which meet the following requirements:\n1. They have same constraints and requirments.\n2. They have same depth and breadth of the inquiry.\nThe First Prompt: {first}\nThe Second Prompt: {second}\nYour Judgement (Just answer: Equal or Not Equal. No need to explain the reason.):";

/// The evolutions: a name, and the in-depth method sentence (None: in breadth).
pub const EVOLUTIONS: [(&str, Option<&str>); 6] = [
    ("constraints", Some("Please add one more constraints/requirements into #The Given Prompt#'")),
    ("deepen", Some("If #The Given Prompt# contains inquiries about certain issues, the depth and breadth of the inquiry can be increased.")),
    ("concretize", Some("Please replace general concepts with more specific concepts.")),
    ("reasoning", Some("If #The Given Prompt# can be solved with just a few simple thinking processes, you can rewrite it to explicitly request multiple-step reasoning.")),
    ("complicate-input", Some("If #The Given Prompt# has an input (code, a table, data or text), make that input more complex, longer or harder to work with, and keep the task about it.")),
    ("breadth", None),
];

const COPIED: [&str; 8] = ["given prompt", "rewritten prompt", "created prompt", "#the given prompt#", "#rewritten prompt#", "#given prompt#", "#created prompt#", "the given prompt"];
const STOP_WORDS: [&str; 40] = [
    "a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with", "is", "are", "was", "were", "be", "it", "this", "that", "i", "you", "he", "she", "we", "they",
    "not", "no", "yes", "so", "as", "do", "does", "can", "will", "me", "my",
];

/// The prompt that applies evolution `e` to `instruction`.
pub fn evolve_prompt(e: usize, instruction: &str) -> String {
    match EVOLUTIONS[e].1 {
        Some(method) => DEPTH.replace("{method}", method).replace("{instruction}", instruction),
        None => BREADTH.replace("{instruction}", instruction),
    }
}

/// The rewritten instruction in a rewrite: models often answer "Sure, here is ...
/// #Rewritten Prompt#: <text>", so the text after the last such label (and its colon) is
/// taken, quotes trimmed; the copy rule then applies to what is left.
pub fn extract(text: &str) -> String {
    let re = regex::Regex::new(r"(?i)#?\s*(rewritten|created) prompt\s*#?\s*:?").expect("valid regex");
    let rest = re.find_iter(text).last().map_or(text, |m| &text[m.end()..]);
    rest.trim().trim_matches('"').trim().to_string()
}

/// Which of the paper's rules eliminates this evolution (None: it survives). `equal` is
/// the model's judgement of parent and child.
pub fn eliminated(evolved: &str, equal: &str, answer: &str) -> Option<&'static str> {
    let lower = evolved.to_lowercase();
    let words: Vec<String> = answer.split_whitespace().map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase()).collect();
    let judged = equal.trim().to_lowercase();
    if evolved.trim().is_empty() || (judged.starts_with("equal") && !judged.starts_with("not")) {
        Some("no information gain (judged equal to its parent)")
    } else if answer.to_lowercase().contains("sorry") && words.len() < 80 {
        Some("answer is a short apology")
    } else if words.iter().all(|w| w.is_empty() || STOP_WORDS.contains(&w.as_str())) {
        Some("answer is only punctuation and stop words")
    } else if COPIED.iter().any(|c| lower.contains(c)) {
        Some("copies words from the evolving prompt")
    } else {
        None
    }
}

/// The first user turn of each record of an instruction-data file.
fn instructions(path: &Path) -> Result<Vec<String>> {
    let loaded = crate::data::read::load(path, &Default::default())?;
    if let Some(p) = loaded.problems.first() {
        return Err(crate::Error::Input(format!("{}: {p}", path.display())));
    }
    Ok(loaded
        .records
        .iter()
        .filter_map(|r| match &r.example {
            Data::Sft(c) | Data::Labelled(c, _) | Data::Scored(c, _) => c.messages.iter().find(|m| m.role == "user").map(|m| m.content.clone()),
            Data::Preference(p) => p.prompt.iter().find(|m| m.role == "user").map(|m| m.content.clone()),
        })
        .collect())
}

impl Method for Evol {
    fn name(&self) -> &'static str {
        "evol"
    }

    fn about(&self) -> &'static str {
        "instructions (--input data) rewritten deeper or broader for --rounds rounds, with the paper's elimination rules"
    }

    fn run(&self, cx: &Context, work: &Path) -> Result<Outcome> {
        let mut pool: Vec<(String, String)> = instructions(cx.input("evol", "instruction data to evolve")?)?.into_iter().take(cx.n).enumerate().map(|(i, s)| (format!("i{i}"), s)).collect();
        let mut out = Outcome::default();
        for round in 1..=cx.rounds.max(1) {
            pool = self.round(cx, work, round, pool, &mut out)?;
        }
        Ok(out)
    }
}

impl Evol {
    /// One round over the pool: evolve, judge equality, answer, eliminate.
    fn round(&self, cx: &Context, work: &Path, round: usize, pool: Vec<(String, String)>, out: &mut Outcome) -> Result<Vec<(String, String)>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(cx.seed ^ (round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let picks: Vec<usize> = pool.iter().map(|_| rng.gen_range(0..EVOLUTIONS.len())).collect();
        let chat = |text: &str| cx.tok.encode_chat(cx.template.as_deref(), &[serde_json::json!({"role": "user", "content": text})]);
        let ids: Vec<String> = pool.iter().zip(&picks).map(|((id, _), &e)| format!("{id}.{}", EVOLUTIONS[e].0)).collect();
        let job = |i: usize, prompt: Vec<u32>| Job { id: ids[i].clone(), prompt, stream: i as u64 };
        let evolve: Vec<Job> = pool.iter().zip(&picks).enumerate().map(|(i, ((_, s), &e))| Ok(job(i, chat(&evolve_prompt(e, s))?))).collect::<Result<_>>()?;
        let gen = |n: usize| GenerateOptions { max_new_tokens: n, ..Default::default() };
        let evolved = cx.generate(&format!("evol {round}: rewrite"), &work.join(format!("round{round}-evolved.jsonl")), &evolve, gen(cx.max_new_tokens))?;
        let child = |i: usize| extract(&evolved[&ids[i]].text);
        let equal: Vec<Job> = (0..pool.len()).map(|i| Ok(job(i, chat(&EQUAL.replace("{first}", &pool[i].1).replace("{second}", &child(i)))?))).collect::<Result<_>>()?;
        let judged = cx.generate(&format!("evol {round}: equal?"), &work.join(format!("round{round}-equal.jsonl")), &equal, gen(4))?;
        let answer: Vec<Job> = (0..pool.len()).map(|i| Ok(job(i, chat(&child(i))?))).collect::<Result<_>>()?;
        let answers = cx.generate(&format!("evol {round}: answer"), &work.join(format!("round{round}-answers.jsonl")), &answer, gen(cx.max_new_tokens))?;
        let mut next = Vec::with_capacity(pool.len());
        for (i, parent) in pool.into_iter().enumerate() {
            let (e, a) = (&evolved[&ids[i]], &answers[&ids[i]]);
            let why = if !e.finished {
                Some("rewrite cut at the token limit")
            } else if !a.finished {
                Some("answer cut at the token limit")
            } else {
                eliminated(&child(i), &judged[&ids[i]].text, &a.text)
            };
            match why {
                Some(w) => {
                    out.drop(w, &child(i));
                    next.push(parent);
                }
                None => {
                    out.examples.push(Example {
                        instruction: child(i),
                        input: String::new(),
                        output: a.text.trim().to_string(),
                        provenance: cx.provenance("evol", format!("round{round}/{}", ids[i])),
                    });
                    next.push((ids[i].clone(), child(i)));
                }
            }
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_fill_the_method_and_the_instruction() {
        let p = evolve_prompt(0, "Name a fruit.");
        assert!(p.contains("Please add one more constraints/requirements") && p.ends_with("#The Given Prompt#: \r\n Name a fruit. \r\n#Rewritten Prompt#:\r\n"));
        assert!(evolve_prompt(5, "Name a fruit.").starts_with("I want you act as a Prompt Creator."));
    }

    #[test]
    fn the_papers_elimination_rules() {
        let long = "Apples are red or green fruits that grow on trees and are eaten fresh.";
        assert_eq!(eliminated("Name two red fruits.", "Not Equal", long), None);
        assert!(eliminated("Name two red fruits.", "Equal", long).unwrap().contains("information gain"));
        assert!(eliminated("Name two red fruits.", "Not Equal", "Sorry, I cannot help with that.").unwrap().contains("apology"));
        assert!(eliminated("Name two red fruits.", "Not Equal", "... it is the, and!").unwrap().contains("stop words"));
        assert!(eliminated("Rewrite the given prompt: name two red fruits.", "Not Equal", long).unwrap().contains("copies"));
        assert_eq!(extract("Sure! Here it is:\n\n#Rewritten Prompt#:\n\"Name two red fruits.\""), "Name two red fruits.");
        assert_eq!(extract("Created Prompt: Name a rare gem."), "Name a rare gem.");
        assert_eq!(extract("Name two red fruits."), "Name two red fruits.");
    }
}
