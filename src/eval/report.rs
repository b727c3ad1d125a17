//! Aggregating scored predictions: overall, per category and per task means of every
//! metric (the official SuperNI code's `compute_grouped_metrics`), written as
//! `scores.json` and a Markdown `report.md`.
use super::Scored;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Means over a group of examples.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Group {
    pub n: usize,
    /// Metric -> mean, 0-100.
    pub scores: BTreeMap<String, f64>,
    /// The group's main metric (its examples' most common one) and its mean.
    pub primary: String,
    pub primary_score: f64,
    /// Examples counted correct (for flips).
    pub correct: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub suite: String,
    pub settings: serde_json::Value,
    pub overall: Group,
    pub categories: BTreeMap<String, Group>,
    pub tasks: BTreeMap<String, Group>,
    /// Wall time of this invocation, and examples generated in it.
    pub wall_s: f64,
    pub generated: usize,
    pub examples_per_s: f64,
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

pub fn group<'a>(lines: impl Iterator<Item = &'a Scored>) -> Group {
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let mut primaries: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut n, mut correct, mut primary_sum) = (0, 0, 0.0);
    for s in lines {
        n += 1;
        correct += usize::from(s.correct);
        for (k, v) in &s.scores {
            *sums.entry(k.clone()).or_default() += v;
        }
        *primaries.entry(s.primary.as_str()).or_default() += 1;
        primary_sum += s.scores.get(&s.primary).copied().unwrap_or(0.0);
    }
    let primary = primaries.iter().max_by_key(|(_, c)| **c).map(|(p, _)| p.to_string()).unwrap_or_default();
    let mean = |x: f64| if n == 0 { 0.0 } else { round4(x / n as f64) };
    Group { n, scores: sums.into_iter().map(|(k, v)| (k, mean(v))).collect(), primary, primary_score: mean(primary_sum), correct }
}

impl Report {
    pub fn new(suite: &str, settings: serde_json::Value, lines: &[Scored], wall_s: f64, generated: usize) -> Self {
        let mut by_task: BTreeMap<&str, Vec<&Scored>> = BTreeMap::new();
        let mut by_cat: BTreeMap<&str, Vec<&Scored>> = BTreeMap::new();
        for s in lines {
            by_task.entry(s.task.as_str()).or_default().push(s);
            for c in &s.categories {
                by_cat.entry(c.as_str()).or_default().push(s);
            }
        }
        let groups = |m: BTreeMap<&str, Vec<&Scored>>| m.into_iter().map(|(k, v)| (k.to_string(), group(v.into_iter()))).collect();
        Report {
            suite: suite.into(),
            settings,
            overall: group(lines.iter()),
            categories: groups(by_cat),
            tasks: groups(by_task),
            wall_s,
            generated,
            examples_per_s: if wall_s > 0.0 { generated as f64 / wall_s } else { 0.0 },
        }
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("scores.json");
        let text = std::fs::read_to_string(&p).map_err(|e| Error::file(&p, e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| Error::file(&p, e.to_string()))
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = format!("# {} evaluation\n\n", self.suite);
        let _ = writeln!(s, "Settings: `{}`\n", self.settings);
        let _ = writeln!(s, "{} examples; {} generated in {:.0} s ({:.2} examples/s).\n", self.overall.n, self.generated, self.wall_s, self.examples_per_s);
        let metrics: Vec<&String> = self.overall.scores.keys().collect();
        let header = |s: &mut String, first: &str| {
            let _ = writeln!(s, "| {first} | n | primary | {} | correct |", metrics.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(" | "));
            let _ = writeln!(s, "|---|---|---|{}---|", "---|".repeat(metrics.len()));
        };
        let row = |s: &mut String, name: &str, g: &Group| {
            let vals: Vec<String> = metrics.iter().map(|m| g.scores.get(*m).map_or("-".into(), |v| format!("{v:.2}"))).collect();
            let _ = writeln!(s, "| {name} | {} | {} {:.2} | {} | {} |", g.n, g.primary, g.primary_score, vals.join(" | "), g.correct);
        };
        header(&mut s, "overall");
        row(&mut s, "all", &self.overall);
        for (title, groups) in [("category", &self.categories), ("task", &self.tasks)] {
            if groups.len() > 1 {
                let _ = writeln!(s, "\n## By {title}\n");
                header(&mut s, title);
                for (k, g) in groups {
                    row(&mut s, k, g);
                }
            }
        }
        s
    }
}

/// `scores.json` and `report.md` in `dir`, atomically.
pub fn write(dir: &Path, r: &Report) -> Result<()> {
    super::write_json(&dir.join("scores.json"), r)?;
    super::write_text(&dir.join("report.md"), &r.markdown())
}
