//! Super-NaturalInstructions evaluation: lines of `eval_dev.jsonl` (`task`, `categories`,
//! `definition`, `positive_examples`, `id`, `input`, `references`) prompted the standard
//! way (definition, k positive examples, then the instance) and scored by both official
//! metrics, exact match and ROUGE-L.
//!
//! Which metric a task is judged by follows the SuperNI paper's per-category reporting:
//! exact match for the classification-like categories below, ROUGE-L for the rest. Both
//! are always computed. Outputs that are not in English are scored with the official
//! cross-lingual tokenizer; the language is the task file's `Output_language`, read from
//! the `tasks/` folder beside the evaluation file when it exists.
use super::{field, jsonl, references, Suite};
use crate::data::formats::superni::{prompt, Demo};
use crate::eval::metrics::{ExactMatch, Metric, RougeL};
use crate::eval::Item;
use crate::{Error, Result};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Categories the SuperNI paper reports by exact match.
pub const EXACT_MATCH_CATEGORIES: &[&str] =
    &["Textual Entailment", "Cause Effect Classification", "Coreference Resolution", "Dialogue Act Recognition", "Answerability Classification", "Word Analogy"];

#[derive(Debug, Clone)]
pub struct SuperNi {
    pub path: PathBuf,
    /// Positive examples in each prompt.
    pub k_shot: usize,
    /// Keep this many instances per task (a seeded choice; None: all).
    pub per_task: Option<usize>,
    pub seed: u64,
    /// Task definitions to use instead of the file's (robustness runs).
    pub definitions: HashMap<String, String>,
    /// Task name -> output language (from the task files).
    pub languages: HashMap<String, String>,
    /// Evaluate only these tasks (None: all).
    pub only_tasks: Option<std::collections::HashSet<String>>,
}

impl SuperNi {
    pub fn new(path: &Path, k_shot: usize, per_task: Option<usize>, seed: u64) -> Result<Self> {
        let tasks = path.parent().unwrap_or(Path::new(".")).join("tasks");
        let languages = if tasks.is_dir() { output_languages(&tasks)? } else { HashMap::new() };
        Ok(SuperNi { path: path.to_path_buf(), k_shot, per_task, seed, definitions: HashMap::new(), languages, only_tasks: None })
    }

    fn xlingual(&self, task: &str) -> bool {
        self.languages.get(task).is_some_and(|l| l != "English")
    }

    fn item(&self, v: &serde_json::Value, line: usize) -> Result<Item> {
        let p = &self.path;
        let task = field(v, "task", p, line)?.to_string();
        let definition = match self.definitions.get(&task) {
            Some(d) => d.as_str(),
            None => field(v, "definition", p, line)?,
        };
        let demos: Vec<Demo> = v
            .get("positive_examples")
            .and_then(|d| d.as_array())
            .map(|a| a.iter().take(self.k_shot).map(|d| Demo { input: d["input"].as_str().unwrap_or(""), output: d["output"].as_str().unwrap_or(""), explanation: None }).collect())
            .unwrap_or_default();
        let categories = v.get("categories").and_then(|c| c.as_array()).map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect()).unwrap_or_default();
        // Some tasks' instances carry `"id": null`: their line number names them instead.
        let id = v.get("id").and_then(|i| i.as_str()).map_or_else(|| format!("{task}#{line}"), str::to_string);
        Ok(Item { id, xlingual: self.xlingual(&task), prompt: prompt(definition, &demos, &[], field(v, "input", p, line)?, false), references: references(v, p, line)?, task, categories })
    }
}

/// `Output_language` of every task file in `dir` (the first language when it lists several).
fn output_languages(dir: &Path) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::file(dir, e.to_string()))? {
        let f = e.map_err(|e| Error::file(dir, e.to_string()))?.path();
        if f.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&f).map_err(|e| Error::file(&f, e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&f, e.to_string()))?;
        if let Some(l) = v["Output_language"].as_array().and_then(|a| a.first()).and_then(|l| l.as_str()) {
            out.insert(f.file_stem().unwrap_or_default().to_string_lossy().into_owned(), l.to_string());
        }
    }
    Ok(out)
}

impl Suite for SuperNi {
    fn name(&self) -> &'static str {
        "superni"
    }

    fn items(&self) -> Result<Vec<Item>> {
        let lines = jsonl(&self.path)?;
        let mut items = lines.iter().map(|(n, v)| self.item(v, *n)).collect::<Result<Vec<_>>>()?;
        if let Some(only) = &self.only_tasks {
            items.retain(|i| only.contains(&i.task));
        }
        if let Some(k) = self.per_task {
            // Per task, a seeded choice of k instances; the file's order is kept.
            let mut by_task: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for (i, it) in items.iter().enumerate() {
                by_task.entry(it.task.as_str()).or_default().push(i);
            }
            let mut rng = StdRng::seed_from_u64(self.seed);
            let mut keep = vec![false; items.len()];
            for idx in by_task.values_mut() {
                idx.shuffle(&mut rng);
                idx.iter().take(k).for_each(|&i| keep[i] = true);
            }
            let mut it = keep.iter();
            items.retain(|_| *it.next().expect("one flag per item"));
        }
        Ok(items)
    }

    fn max_new_tokens(&self) -> usize {
        128
    }

    /// Demonstrations are separated by a blank line: a base model that goes on writing the
    /// next one has finished its answer.
    fn stop_strings(&self) -> Vec<String> {
        vec!["\n\n".into()]
    }

    fn metrics(&self, item: &Item) -> Vec<Box<dyn Metric>> {
        let rouge: Box<dyn Metric> = Box::new(RougeL { xlingual: item.xlingual });
        let em: Box<dyn Metric> = Box::new(ExactMatch);
        if item.categories.iter().any(|c| EXACT_MATCH_CATEGORIES.contains(&c.as_str())) {
            vec![em, rouge]
        } else {
            vec![rouge, em]
        }
    }

    fn correct(&self, scores: &BTreeMap<String, f64>) -> bool {
        scores.get("exact_match").is_some_and(|&s| s == 100.0)
    }
}
