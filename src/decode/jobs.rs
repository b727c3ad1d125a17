//! A batched, resumable generation run over prompts that have ids: the prompts decode by
//! continuous batching (`generate::Decoder`: a finished row's place goes to the next
//! prompt, longest prompts first), each finished record is appended to a JSONL file as it
//! finishes, and a rerun into the same file skips the ids already there, so a killed run
//! resumes without regenerating what it finished. Evaluation suites and synthesis methods both
//! run on it.
use super::generate::Decoder;
use super::{GenerateOptions, Generation};
use crate::model::CausalLm;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

/// One prompt to generate from.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub prompt: Vec<u32>,
    /// The sampler's random stream, independent of the job's place in a batch.
    pub stream: u64,
}

/// A line of a run's output file.
pub trait Record: Serialize + DeserializeOwned {
    fn id(&self) -> &str;
}

/// How to run the jobs.
pub struct Runner<'a> {
    pub model: &'a CausalLm,
    pub tok: &'a Tokenizer,
    pub gen: GenerateOptions,
    pub batch_size: usize,
    /// Shown on the progress bar ("eval", "magpie: instructions" ...); None: no bar.
    pub label: Option<String>,
}

impl Runner<'_> {
    /// Generates every job whose id is not yet in `out` and appends `record(job,
    /// generation)` for it (None: nothing is written and the job is done); returns the
    /// records of `out` that belong to `jobs`, in the jobs' order.
    pub fn run<R: Record>(&self, jobs: &[Job], out: &Path, mut record: impl FnMut(&Job, Generation) -> Result<Option<R>>) -> Result<Vec<R>> {
        let mut seen = HashSet::new();
        if let Some(dup) = jobs.iter().find(|j| !seen.insert(j.id.as_str())) {
            return Err(Error::Input(format!("id {:?} appears twice in one run", dup.id)));
        }
        let mut done: Vec<R> = read_records(out)?;
        let have: HashSet<String> = done.iter().map(|r| r.id().to_string()).collect();
        done.retain(|r| seen.contains(r.id()));
        let mut todo: Vec<&Job> = jobs.iter().filter(|j| !have.contains(&j.id)).collect();
        // Similar lengths share a batch (less left padding); longest first, so the memory
        // peak shows at once.
        todo.sort_by_key(|j| std::cmp::Reverse(j.prompt.len()));
        let bar = self.progress(jobs.len(), jobs.len() - todo.len());
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(out).map_err(|e| Error::file(out, e.to_string()))?;
        let width = self.batch_size.max(1);
        // Continuous batching over all the jobs; steering needs its batch whole, so it
        // goes batch by batch.
        let groups: Vec<&[&Job]> = if self.gen.steer.is_some() { todo.chunks(width).collect() } else { vec![&todo[..]] };
        for group in groups.into_iter().filter(|g| !g.is_empty()) {
            let prompts: Vec<Vec<u32>> = group.iter().map(|j| j.prompt.clone()).collect();
            let gen = GenerateOptions { streams: group.iter().map(|j| j.stream).collect(), ..self.gen.clone() };
            let mut dec = Decoder::new(self.model, self.tok, &prompts, &gen, width)?;
            while !dec.is_done() {
                let finished = crate::model::on_workers(|| dec.step(&mut |_, _| {}))?;
                let (count, mut lines) = (finished.len(), String::new());
                for (i, g) in finished {
                    if let Some(r) = record(group[i], g)? {
                        lines.push_str(&serde_json::to_string(&r).expect("serializable"));
                        lines.push('\n');
                        done.push(r);
                    }
                }
                // One write per step: a kill leaves at most one partial line, dropped on resume.
                if !lines.is_empty() {
                    file.write_all(lines.as_bytes()).and_then(|_| file.flush()).map_err(|e| Error::file(out, e.to_string()))?;
                }
                bar.inc(count as u64);
            }
        }
        bar.finish_and_clear();
        let order: std::collections::HashMap<&str, usize> = jobs.iter().enumerate().map(|(i, j)| (j.id.as_str(), i)).collect();
        done.sort_by_key(|r| order[r.id()]);
        Ok(done)
    }

    fn progress(&self, total: usize, done: usize) -> crate::progress::Progress {
        let label = self.label.clone().unwrap_or_default();
        let bar = crate::progress::Progress::new(&label, "prompt", total as u64, "{bar:30} {pos}/{len}  {per_sec}  ETA {eta}", self.label.is_some());
        bar.start_at(done as u64);
        bar
    }
}

/// The records already in `path` (none when it does not exist). A last line cut short by
/// a kill is dropped (and the file rewritten without it); a bad line elsewhere is an error
/// naming the file and line.
pub fn read_records<R: DeserializeOwned>(path: &Path) -> Result<Vec<R>> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(vec![]) };
    let lines: Vec<&str> = text.lines().collect();
    let mut out = vec![];
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<R>(line) {
            Ok(s) => out.push(s),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {
                let kept: String = lines[..i].iter().map(|l| format!("{l}\n")).collect();
                crate::peft::write_atomic(path, kept.as_bytes())?;
            }
            Err(e) => return Err(Error::file(path, format!("line {}: {e}", i + 1))),
        }
    }
    Ok(out)
}
