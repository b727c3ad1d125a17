//! Comparing reports of the same suite: per-category and per-task deltas of the primary
//! metric against the first report, and flips as in MUSCLE: a negative flip is an example
//! the first model got right and a later one gets wrong, a positive flip the reverse
//! ("right" is each example's `correct`). Writes `compare.md`, `compare.json` and a bar
//! chart per category, `categories.png`.
use super::report::Report;
use super::runner::read_scored;
use super::Scored;
use crate::{Error, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize)]
pub struct Flips {
    /// Examples both reports hold.
    pub common: usize,
    pub negative: usize,
    pub positive: usize,
    /// Negative flip rate, % of common examples.
    pub negative_rate: f64,
    pub positive_rate: f64,
    /// Up to 10 negative flips: (id, task, reference, before, after).
    pub negative_examples: Vec<(String, String, String, String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub names: Vec<String>,
    /// Overall primary score of each report.
    pub overall: Vec<f64>,
    /// Category -> primary score in each report (None where a report lacks it).
    pub categories: BTreeMap<String, Vec<Option<f64>>>,
    pub tasks: BTreeMap<String, Vec<Option<f64>>>,
    /// Each later report against the first.
    pub flips: Vec<Flips>,
}

/// Flips from `before` to `after`, matched by example id.
pub fn flips(before: &[Scored], after: &[Scored]) -> Flips {
    let after: HashMap<&str, &Scored> = after.iter().map(|s| (s.id.as_str(), s)).collect();
    let (mut common, mut negative, mut positive, mut examples) = (0, 0, 0, vec![]);
    for b in before {
        let Some(a) = after.get(b.id.as_str()) else { continue };
        common += 1;
        if b.correct && !a.correct {
            negative += 1;
            if examples.len() < 10 {
                examples.push((b.id.clone(), b.task.clone(), b.references.first().cloned().unwrap_or_default(), b.prediction.clone(), a.prediction.clone()));
            }
        } else if !b.correct && a.correct {
            positive += 1;
        }
    }
    let rate = |x: usize| if common == 0 { 0.0 } else { 100.0 * x as f64 / common as f64 };
    Flips { common, negative, positive, negative_rate: rate(negative), positive_rate: rate(positive), negative_examples: examples }
}

/// Compare report directories (the first is the baseline).
pub fn compare(dirs: &[PathBuf]) -> Result<Comparison> {
    if dirs.len() < 2 {
        return Err(Error::Input("compare needs at least two report directories".into()));
    }
    let reports: Vec<Report> = dirs.iter().map(|d| Report::read(d)).collect::<Result<_>>()?;
    if let Some((d, r)) = dirs.iter().zip(&reports).find(|(_, r)| r.suite != reports[0].suite) {
        return Err(Error::file(d, format!("is a {} report; {} is {}", r.suite, dirs[0].display(), reports[0].suite)));
    }
    let preds: Vec<Vec<Scored>> = dirs.iter().map(|d| read_scored(&d.join("predictions.jsonl"))).collect::<Result<_>>()?;
    let table = |pick: &dyn Fn(&Report) -> &BTreeMap<String, super::report::Group>| {
        let mut out: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
        for (i, r) in reports.iter().enumerate() {
            for (k, g) in pick(r) {
                out.entry(k.clone()).or_insert_with(|| vec![None; reports.len()])[i] = Some(g.primary_score);
            }
        }
        out
    };
    Ok(Comparison {
        names: dirs.iter().map(|d| name(d)).collect(),
        overall: reports.iter().map(|r| r.overall.primary_score).collect(),
        categories: table(&|r| &r.categories),
        tasks: table(&|r| &r.tasks),
        flips: preds[1..].iter().map(|p| flips(&preds[0], p)).collect(),
    })
}

fn name(d: &Path) -> String {
    d.file_name().map_or_else(|| d.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn cell(v: Option<f64>, base: Option<f64>, first: bool) -> String {
    match (v, base) {
        (Some(v), _) if first => format!("{v:.2}"),
        (Some(v), Some(b)) => format!("{v:.2} ({:+.2})", v - b),
        (Some(v), None) => format!("{v:.2}"),
        (None, _) => "-".into(),
    }
}

impl Comparison {
    pub fn markdown(&self) -> String {
        let mut s = String::from("# Comparison\n\nPrimary metric per group (ROUGE-L or exact match, as each task's suite chooses); deltas against the first report.\n\n");
        let head = |s: &mut String, first: &str| {
            let _ = writeln!(s, "| {first} | {} |", self.names.join(" | "));
            let _ = writeln!(s, "|---|{}", "---|".repeat(self.names.len()));
        };
        let row = |s: &mut String, k: &str, v: &[Option<f64>]| {
            let cells: Vec<String> = v.iter().enumerate().map(|(i, x)| cell(*x, v[0], i == 0)).collect();
            let _ = writeln!(s, "| {k} | {} |", cells.join(" | "));
        };
        head(&mut s, "");
        row(&mut s, "overall", &self.overall.iter().map(|x| Some(*x)).collect::<Vec<_>>());
        let _ = writeln!(s, "\n## Flips against {}\n\n| report | common | negative flips | positive flips |\n|---|---|---|---|", self.names[0]);
        for (n, f) in self.names[1..].iter().zip(&self.flips) {
            let _ = writeln!(s, "| {n} | {} | {} ({:.2}%) | {} ({:.2}%) |", f.common, f.negative, f.negative_rate, f.positive, f.positive_rate);
        }
        for (title, t) in [("category", &self.categories), ("task", &self.tasks)] {
            let _ = writeln!(s, "\n## By {title}\n");
            head(&mut s, title);
            for (k, v) in t {
                row(&mut s, k, v);
            }
        }
        for (n, f) in self.names[1..].iter().zip(&self.flips) {
            if !f.negative_examples.is_empty() {
                let _ = writeln!(s, "\n## Negative flips, {} -> {n} (first {})\n\n| id | task | reference | before | after |\n|---|---|---|---|---|", self.names[0], f.negative_examples.len());
                for (id, task, r, b, a) in &f.negative_examples {
                    let c = |x: &str| x.replace('|', "\\|").replace('\n', " ").chars().take(80).collect::<String>();
                    let _ = writeln!(s, "| {id} | {task} | {} | {} | {} |", c(r), c(b), c(a));
                }
            }
        }
        s
    }

    /// `compare.md`, `compare.json` and `categories.png` in `out`.
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|e| Error::file(out, e.to_string()))?;
        super::write_text(&out.join("compare.md"), &self.markdown())?;
        super::write_json(&out.join("compare.json"), self)?;
        let labels: Vec<String> = self.categories.keys().cloned().collect();
        let series: Vec<(&str, Vec<f64>)> = self.names.iter().enumerate().map(|(i, n)| (n.as_str(), self.categories.values().map(|v| v[i].unwrap_or(0.0)).collect())).collect();
        crate::plot::bars(&out.join("categories.png"), "Primary metric by category", "score (0-100)", &labels, &series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, correct: bool) -> Scored {
        Scored {
            id: id.into(),
            task: "t".into(),
            categories: vec![],
            prediction: format!("{id}-{correct}"),
            references: vec!["r".into()],
            scores: Default::default(),
            primary: "exact_match".into(),
            correct,
            prompt_tokens: 0,
            new_tokens: 0,
        }
    }

    #[test]
    fn flips_count_by_id() {
        let before = [s("a", true), s("b", true), s("c", false), s("d", false), s("only-before", true)];
        let after = [s("d", true), s("c", false), s("b", false), s("a", true), s("only-after", false)];
        let f = flips(&before, &after);
        assert_eq!((f.common, f.negative, f.positive), (4, 1, 1));
        assert_eq!((f.negative_rate, f.positive_rate), (25.0, 25.0));
        assert_eq!(f.negative_examples[0].0, "b");
        assert_eq!(f.negative_examples[0].4, "b-false");
    }
}
