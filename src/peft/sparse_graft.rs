//! Composing sparse fine-tunings (Ansell et al. 2022: skills and languages learned as
//! separate sparse deltas are added onto one base). Where several deltas touch the same
//! element they conflict; the report counts those elements, and how many of them pull
//! in opposite directions, per weight and in all.
use super::sparse_delta::{Entry, SparseDelta};
use crate::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What happens at an element several deltas change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Overlap {
    /// Add the changes (Composable SFT).
    Sum,
    /// Their mean (no element moves further than any one skill moved it).
    Mean,
    /// Refuse to compose deltas that overlap.
    Error,
}

/// The conflicts of one weight.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WeightConflicts {
    pub name: String,
    /// Elements changed by more than one delta.
    pub overlap: usize,
    /// Of those, elements some deltas raise and others lower.
    pub opposite: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GraftReport {
    /// Elements each delta changes, in the order given.
    pub nnz: Vec<usize>,
    /// Elements the composition changes.
    pub nnz_total: usize,
    pub overlap: usize,
    pub opposite: usize,
    pub policy: Overlap,
    /// Weights with any overlap, most overlapping first.
    pub weights: Vec<WeightConflicts>,
}

/// Compose `deltas` (named for errors) under `policy`.
pub fn compose(deltas: &[(String, SparseDelta)], policy: Overlap) -> Result<(SparseDelta, GraftReport)> {
    // weight -> element -> the changes there.
    let mut by_weight: BTreeMap<&str, BTreeMap<u32, Vec<f32>>> = BTreeMap::new();
    for (_, d) in deltas {
        for e in &d.entries {
            let w = by_weight.entry(&e.name).or_default();
            for (&i, &x) in e.indices.iter().zip(&e.delta) {
                w.entry(i).or_default().push(x);
            }
        }
    }
    let (mut entries, mut weights) = (vec![], vec![]);
    for (name, elems) in by_weight {
        let mut c = WeightConflicts { name: name.to_string(), overlap: 0, opposite: 0 };
        let mut e = Entry { name: name.to_string(), indices: vec![], delta: vec![], values: None };
        for (i, xs) in elems {
            if xs.len() > 1 {
                c.overlap += 1;
                c.opposite += usize::from(xs.iter().any(|&x| x > 0.0) && xs.iter().any(|&x| x < 0.0));
            }
            let sum: f32 = xs.iter().sum();
            e.indices.push(i);
            e.delta.push(if policy == Overlap::Mean { sum / xs.len() as f32 } else { sum });
        }
        if c.overlap > 0 {
            weights.push(c);
        }
        entries.push(e);
    }
    weights.sort_by(|a, b| b.overlap.cmp(&a.overlap).then(a.name.cmp(&b.name)));
    let out = SparseDelta { entries };
    let report = GraftReport {
        nnz: deltas.iter().map(|(_, d)| d.nnz()).collect(),
        nnz_total: out.nnz(),
        overlap: weights.iter().map(|w| w.overlap).sum(),
        opposite: weights.iter().map(|w| w.opposite).sum(),
        policy,
        weights,
    };
    if policy == Overlap::Error && report.overlap > 0 {
        let names: Vec<&str> = deltas.iter().map(|(n, _)| n.as_str()).collect();
        let worst = &report.weights[0];
        return Err(Error::Input(format!(
            "graft: {} overlap at {} elements ({} in opposite directions; most in {}: {}); use --overlap sum or mean to compose them anyway",
            names.join(", "),
            report.overlap,
            report.opposite,
            worst.name,
            worst.overlap
        )));
    }
    Ok((out, report))
}

/// A skill directory's sparse delta: the directory itself, or a run's `adapter/`.
pub fn skill_dir(dir: &Path) -> PathBuf {
    let inner = dir.join("adapter");
    if !dir.join(super::sparse_delta::CONFIG_FILE).exists() && inner.join(super::sparse_delta::CONFIG_FILE).exists() {
        inner
    } else {
        dir.to_path_buf()
    }
}

/// Read the skills' deltas, compose them under `policy` and add the result to `model`.
pub fn graft(model: &mut crate::CausalLm, skills: &[PathBuf], policy: Overlap) -> Result<(SparseDelta, GraftReport)> {
    let mut deltas = vec![];
    for s in skills {
        let dir = skill_dir(s);
        let (d, _) = SparseDelta::read(&dir)?;
        // Checked against the model one by one, so an error names the skill's file.
        super::sparse_delta::touched_vars(model, &d, &dir)?;
        deltas.push((s.display().to_string(), d));
    }
    let (delta, report) = compose(&deltas, policy)?;
    delta.apply(model, skills.first().map_or(Path::new("."), |p| p.as_path()))?;
    Ok((delta, report))
}

/// Write the report as `dir/graft.json`, atomically.
pub fn save_report(dir: &Path, report: &GraftReport) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e.to_string()))?;
    super::write_atomic(&dir.join("graft.json"), serde_json::to_string_pretty(report).expect("json").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(entries: &[(&str, &[u32], &[f32])]) -> SparseDelta {
        SparseDelta { entries: entries.iter().map(|(n, i, d)| Entry { name: n.to_string(), indices: i.to_vec(), delta: d.to_vec(), values: None }).collect() }
    }

    #[test]
    fn overlaps_are_summed_averaged_or_refused_and_counted() {
        let a = delta(&[("w", &[1, 4, 9], &[1.0, -2.0, 0.5]), ("v", &[0], &[3.0])]);
        let b = delta(&[("w", &[4, 9, 12], &[1.0, 0.25, 7.0])]);
        let skills = vec![("a".to_string(), a), ("b".to_string(), b)];
        let (sum, r) = compose(&skills, Overlap::Sum).unwrap();
        assert_eq!((r.nnz.clone(), r.nnz_total, r.overlap, r.opposite), (vec![4, 3], 5, 2, 1));
        assert_eq!(r.weights, vec![WeightConflicts { name: "w".into(), overlap: 2, opposite: 1 }]);
        let w = sum.entries.iter().find(|e| e.name == "w").unwrap();
        assert_eq!((w.indices.clone(), w.delta.clone()), (vec![1, 4, 9, 12], vec![1.0, -1.0, 0.75, 7.0]));
        let (mean, _) = compose(&skills, Overlap::Mean).unwrap();
        assert_eq!(mean.entries.iter().find(|e| e.name == "w").unwrap().delta, vec![1.0, -0.5, 0.375, 7.0]);
        let err = compose(&skills, Overlap::Error).unwrap_err().to_string();
        assert!(err.contains("2 elements") && err.contains("1 in opposite"), "{err}");
    }
}
