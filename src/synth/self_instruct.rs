//! Self-Instruct (Wang et al. 2023). Stage 1 grows a pool of instructions: each request
//! shows 8 numbered tasks (2 from the generated pool, 6 from the seed tasks, shuffled)
//! and the model continues the list as plain text (temperature 0.7, top-p 0.5, stopping
//! at a blank line or task 16). New instructions pass the paper's filters (3 < words <=
//! 150, no image/file/graph/map/drawing keywords, not "Write a program", no leading
//! punctuation or non-ASCII letter) and its novelty filter (ROUGE-L <= 0.7 against the
//! whole pool, [`super::rouge_filter`]). Stage 2 asks, few-shot from the seed tasks' own
//! labels, whether each instruction is a classification task, then generates instances
//! greedily: input first for ordinary tasks, output (the class label) first for
//! classification, as the paper does to keep labels balanced. Every instance becomes one
//! example. Each request's generation is kept, so a rerun replays the pool exactly and
//! continues.
use super::rouge_filter::Pool;
use super::{squash, Context, Example, Generated, Method, Outcome};
use crate::decode::jobs::Job;
use crate::decode::{GenerateOptions, SamplingParams};
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Deserialize;
use std::path::Path;

pub struct SelfInstruct;

/// A seed task as the paper's `seed_tasks.jsonl` has it.
#[derive(Debug, Clone, Deserialize)]
pub struct SeedTask {
    pub instruction: String,
    pub instances: Vec<Instance>,
    #[serde(default)]
    pub is_classification: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Instance {
    #[serde(default)]
    pub input: String,
    pub output: String,
}

const THRESHOLD: f64 = 0.7;
const KEYWORDS: [&str; 13] = ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw", "plot", "go to"];

pub fn read_seed_tasks(path: &Path) -> Result<Vec<SeedTask>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
    let tasks: Vec<SeedTask> =
        text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| serde_json::from_str(l).map_err(|e| Error::file(path, format!("line {}: {e}", i + 1)))).collect::<Result<_>>()?;
    if tasks.len() < 6 {
        return Err(Error::file(path, format!("{} seed tasks: Self-Instruct shows 6 per request, so it needs at least 6", tasks.len())));
    }
    Ok(tasks)
}

/// The paper's request: the tasks numbered, then the next number for the model to continue.
pub fn request_prompt(tasks: &[&str]) -> String {
    let mut p = String::from("Come up with a series of tasks:\n");
    for (i, t) in tasks.iter().enumerate() {
        p.push_str(&format!("{}. {}\n", i + 1, squash(t).trim_end_matches(':')));
    }
    p.push_str(&format!("{}.", tasks.len() + 1));
    p
}

/// The instructions in a continuation of [`request_prompt`], each with the filter that
/// dropped it (None: kept by the rule filters; novelty is checked by the caller).
pub fn parse_instructions(text: &str) -> Vec<(String, Option<&'static str>)> {
    let split = regex::Regex::new(r"\n\d+\s?\. ").expect("valid regex");
    split.split(text).map(squash).filter(|s| !s.is_empty()).map(|s| capitalize(&s)).map(|s| (s.clone(), rule_filter(&s))).collect()
}

/// Python's `str.capitalize`, as the paper applies it: first character upper, the rest lower.
fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c.flat_map(char::to_lowercase)).collect()).unwrap_or_default()
}

fn rule_filter(inst: &str) -> Option<&'static str> {
    let words = inst.split_whitespace().count();
    let first = inst.chars().next()?;
    let keyword = |w: &str| regex::Regex::new(&format!(r"(?i)\b({})\b", regex::escape(w))).expect("valid regex").is_match(inst);
    if words <= 3 || words > 150 {
        Some("instruction length (<= 3 or > 150 words)")
    } else if KEYWORDS.iter().any(|w| keyword(w)) {
        Some("keyword unsuited to a language model")
    } else if inst.starts_with("Write a program") {
        Some("starts with \"Write a program\"")
    } else if first.is_ascii_punctuation() {
        Some("starts with punctuation")
    } else if !first.is_ascii() {
        Some("starts with a non-ASCII character")
    } else {
        None
    }
}

impl Method for SelfInstruct {
    fn name(&self) -> &'static str {
        "self-instruct"
    }

    fn about(&self) -> &'static str {
        "a pool of instructions grown from seed tasks (--input seed_tasks.jsonl), ROUGE-L filtered, then instances generated"
    }

    fn run(&self, cx: &Context, work: &Path) -> Result<Outcome> {
        let seeds = read_seed_tasks(cx.input("self-instruct", "the seed tasks (JSONL with instruction, instances, is_classification)")?)?;
        let mut out = Outcome::default();
        let pool = bootstrap(cx, &seeds, work, &mut out)?;
        let kinds = classify(cx, &seeds, &pool, work)?;
        instances(cx, &seeds, &pool, &kinds, work, &mut out)?;
        Ok(out)
    }
}

/// Stage 1: requests until the pool holds `n` new instructions (or `n + 20` requests gave
/// too few). Returns `(request id, instruction)` in the order they entered the pool.
fn bootstrap(cx: &Context, seeds: &[SeedTask], work: &Path, out: &mut Outcome) -> Result<Vec<(String, String)>> {
    let mut pool = Pool::default();
    seeds.iter().for_each(|s| pool.add(&s.instruction));
    let mut made: Vec<(String, String)> = vec![];
    let sampling = SamplingParams { temperature: 0.7, top_p: 0.5, seed: cx.seed, ..Default::default() };
    let stops = ["\n\n", "\n16", "16.", "16 ."].map(String::from).to_vec();
    let runner = crate::decode::jobs::Runner { label: None, ..cx.runner(GenerateOptions { max_new_tokens: 512, sampling, stop_strings: stops, ..Default::default() }, "") };
    let bar = crate::progress::Progress::new("self-instruct", "instruction", cx.n as u64, "{bar:30} {pos}/{len} instructions  {per_sec}  ETA {eta}", cx.progress);
    let (step, limit) = (cx.batch_size.max(1), cx.n + 20);
    let mut k = 0;
    while made.len() < cx.n && k < limit {
        let jobs: Vec<Job> =
            (k..(k + step).min(limit)).map(|r| Ok(Job { id: format!("request-{r}"), prompt: cx.tok.encode(&request(cx.seed, r, seeds, &made), true)?, stream: r as u64 })).collect::<Result<_>>()?;
        let got = runner.run(&jobs, &work.join("requests.jsonl"), |j, g| Ok(Some(Generated::from(j, g))))?;
        let by_id: std::collections::HashMap<&str, &Generated> = got.iter().map(|g| (g.id.as_str(), g)).collect();
        for j in &jobs {
            let g = by_id[j.id.as_str()];
            if !g.finished {
                out.drop("request cut at the token limit", &g.text);
                continue;
            }
            for (inst, rule) in parse_instructions(&g.text) {
                match rule {
                    Some(why) => out.drop(why, &inst),
                    None if made.len() >= cx.n => {}
                    None if !pool.admit(&inst, THRESHOLD) => out.drop("ROUGE-L > 0.7 against the pool", &inst),
                    None => made.push((j.id.clone(), inst)),
                }
            }
        }
        bar.start_at(made.len() as u64);
        k += jobs.len();
    }
    bar.finish_and_clear();
    Ok(made)
}

/// Request `r`'s prompt: 2 generated instructions (when there are) and seed ones to make
/// 8, shuffled, all drawn by a generator seeded with the run's seed and `r`.
fn request(seed: u64, r: usize, seeds: &[SeedTask], made: &[(String, String)]) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut tasks: Vec<&str> = made.choose_multiple(&mut rng, 2.min(made.len())).map(|(_, i)| i.as_str()).collect();
    let need = 8 - tasks.len();
    tasks.extend(seeds.choose_multiple(&mut rng, need).map(|s| s.instruction.as_str()));
    tasks.shuffle(&mut rng);
    request_prompt(&tasks)
}

/// Stage 2a: is each instruction a classification task? Few-shot from the seed tasks'
/// own labels (up to 12, both kinds), answered greedily.
fn classify(cx: &Context, seeds: &[SeedTask], pool: &[(String, String)], work: &Path) -> Result<Vec<bool>> {
    let (yes, no): (Vec<&SeedTask>, Vec<&SeedTask>) = seeds.iter().partition(|s| s.is_classification);
    let shots: Vec<&SeedTask> = yes.iter().take(6).chain(no.iter().take(6)).copied().collect();
    let mut head = String::from("Can the following task be regarded as a classification task with finite output labels?\n\n");
    for s in &shots {
        head.push_str(&format!("Task: {}\nIs it classification? {}\n\n", squash(&s.instruction), if s.is_classification { "Yes" } else { "No" }));
    }
    let jobs: Vec<Job> = pool
        .iter()
        .enumerate()
        .map(|(i, (_, inst))| Ok(Job { id: format!("inst-{i}"), prompt: cx.tok.encode(&format!("{head}Task: {inst}\nIs it classification?"), true)?, stream: i as u64 }))
        .collect::<Result<_>>()?;
    let gen = GenerateOptions { max_new_tokens: 4, stop_strings: vec!["\n".into()], ..Default::default() };
    let by_id = cx.generate("self-instruct: classification?", &work.join("is_classification.jsonl"), &jobs, gen)?;
    Ok(jobs.iter().map(|j| by_id[&j.id].text.trim().to_lowercase().starts_with("yes")).collect())
}

/// Stage 2b: instances for each instruction, input-first or output-first.
fn instances(cx: &Context, seeds: &[SeedTask], pool: &[(String, String)], kinds: &[bool], work: &Path, out: &mut Outcome) -> Result<()> {
    let (clf_head, gen_head) = (instance_head(seeds, true), instance_head(seeds, false));
    let jobs: Vec<Job> = pool
        .iter()
        .zip(kinds)
        .enumerate()
        .map(|(i, ((_, inst), &clf))| Ok(Job { id: format!("inst-{i}"), prompt: cx.tok.encode(&format!("{}Task: {inst}\n", if clf { &clf_head } else { &gen_head }), true)?, stream: i as u64 }))
        .collect::<Result<_>>()?;
    let gen = GenerateOptions { max_new_tokens: cx.max_new_tokens, stop_strings: vec!["Example 6".into(), "Task:".into()], ..Default::default() };
    let by_id = cx.generate("self-instruct: instances", &work.join("instances.jsonl"), &jobs, gen)?;
    for ((j, (req, inst)), &clf) in jobs.iter().zip(pool).zip(kinds) {
        let g = &by_id[&j.id];
        let mut parsed = parse_instances(&g.text, clf);
        if !g.finished && parsed.pop().is_some() {
            out.drop("instance cut at the token limit", inst);
        }
        if parsed.is_empty() {
            out.drop("no instance could be parsed", inst);
        }
        let mut seen = vec![];
        for x in parsed {
            if x.output.trim().is_empty() {
                out.drop("instance with an empty output", inst);
            } else if x.input.trim() == x.output.trim() {
                out.drop("instance whose input is its output", inst);
            } else if seen.contains(&x) {
                out.drop("duplicate instance", inst);
            } else {
                seen.push(x.clone());
                out.examples.push(Example { instruction: inst.clone(), input: x.input, output: x.output, provenance: cx.provenance("self-instruct", format!("{req}/{}", j.id)) });
            }
        }
    }
    Ok(())
}

/// The instance prompt's instruction and examples from the seed tasks of that kind.
fn instance_head(seeds: &[SeedTask], clf: bool) -> String {
    let mut head = if clf {
        String::from("Given the classification task definition and the class labels, generate an input that corresponds to each of the class labels. If the task doesn't require input, just generate the correct class label.\n\n")
    } else {
        String::from(
            "Come up with examples for the following tasks. Try to generate multiple examples when possible. If the task doesn't require additional input, you can generate the output directly.\n\n",
        )
    };
    for s in seeds.iter().filter(|s| s.is_classification == clf).take(4) {
        head.push_str(&format!("Task: {}\n", squash(&s.instruction)));
        for (n, x) in s.instances.iter().take(5).enumerate() {
            head.push_str(&render_instance(n + 1, x, clf));
        }
        head.push('\n');
    }
    head
}

fn render_instance(n: usize, x: &Instance, clf: bool) -> String {
    let input = if x.input.trim().is_empty() { "Not applicable".to_string() } else { x.input.trim().to_string() };
    if clf {
        format!("Class label: {}\nInput: {input}\n", x.output.trim())
    } else {
        format!("Example {n}\nInput: {input}\nOutput: {}\n", x.output.trim())
    }
}

/// Instances in a stage-2 continuation ("Example N / Input: / Output:" or "Class label: /
/// Input:"); "Not applicable" and empty inputs become empty.
pub fn parse_instances(text: &str, clf: bool) -> Vec<Instance> {
    let input = |s: &str| {
        let s = s.trim();
        if s.eq_ignore_ascii_case("not applicable") {
            String::new()
        } else {
            s.to_string()
        }
    };
    if clf {
        return text
            .split("Class label:")
            .filter_map(|part| {
                let (label, rest) = part.split_once("Input:")?;
                Some(Instance { input: input(rest), output: label.trim().to_string() })
            })
            .collect();
    }
    // As the paper's parser: a part without "Output:" is all output (a task that needs
    // no input, answered directly).
    let split = regex::Regex::new(r"Example\s?\d+").expect("valid regex");
    split
        .split(text)
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| match part.split_once("Output:") {
            Some((before, output)) => {
                let before = before.trim();
                Instance { input: input(before.strip_prefix("Input:").unwrap_or(before)), output: output.trim().to_string() }
            }
            None => Instance { input: String::new(), output: part.to_string() },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_the_tasks_and_asks_for_the_next() {
        let p = request_prompt(&["Sort   the list:", "Name a color."]);
        assert_eq!(p, "Come up with a series of tasks:\n1. Sort the list\n2. Name a color.\n3.");
    }

    #[test]
    fn continuation_is_split_capitalized_and_rule_filtered() {
        let text = " Write a poem about AUTUMN leaves.\n10. Draw a map of the city center.\n11. Sum it.\n12 . Write a program that adds two numbers together.\n13. \"Quoted start of a task here\"\n14. Explain why the sky looks blue.";
        let got = parse_instructions(text);
        let kept: Vec<&str> = got.iter().filter(|(_, r)| r.is_none()).map(|(s, _)| s.as_str()).collect();
        assert_eq!(kept, ["Write a poem about autumn leaves.", "Explain why the sky looks blue."]);
        let why: Vec<&str> = got.iter().filter_map(|(_, r)| *r).collect();
        assert_eq!(why.len(), 4, "{got:?}");
        assert!(why.contains(&"keyword unsuited to a language model") && why.contains(&"starts with punctuation"));
    }

    #[test]
    fn instances_parse_input_first_and_output_first() {
        let gen = "Example 1\nInput: 2 + 2\nOutput: 4\nExample 2\nInput: Not applicable\nOutput: Hello there.\n";
        assert_eq!(parse_instances(gen, false), vec![Instance { input: "2 + 2".into(), output: "4".into() }, Instance { input: String::new(), output: "Hello there.".into() }]);
        assert_eq!(parse_instances("- flour\n- eggs\n", false), vec![Instance { input: String::new(), output: "- flour\n- eggs".into() }]);
        let clf = "Class label: Positive\nInput: I loved it.\nClass label: Negative\nInput: Awful.\n";
        assert_eq!(parse_instances(clf, true), vec![Instance { input: "I loved it.".into(), output: "Positive".into() }, Instance { input: "Awful.".into(), output: "Negative".into() }]);
    }
}
