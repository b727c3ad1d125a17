//! `metrics.jsonl` (one JSON object per step, for plotting anywhere) and `loss.png`.
use crate::Result;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f64>,
    /// The objective's statistics (`rewards/chosen`, `rewards/accuracies`, ...; `val/...`
    /// on held-out data).
    #[serde(flatten)]
    pub extra: std::collections::BTreeMap<String, f64>,
}

pub struct Metrics {
    path: PathBuf,
    pub rows: Vec<StepMetrics>,
}

impl Metrics {
    /// Open `dir/metrics.jsonl`, keeping the rows of steps `<= keep_through` (a resumed
    /// run replaces what came after its checkpoint).
    pub fn open(dir: &Path, keep_through: usize) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        let rows: Vec<StepMetrics> = std::fs::read_to_string(&path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).filter(|m: &StepMetrics| m.step <= keep_through).collect();
        let m = Metrics { path, rows };
        m.rewrite()?;
        Ok(m)
    }

    fn rewrite(&self) -> Result<()> {
        let mut text = String::new();
        for r in &self.rows {
            text.push_str(&serde_json::to_string(r).expect("json"));
            text.push('\n');
        }
        crate::peft::write_atomic(&self.path, text.as_bytes())
    }

    pub fn push(&mut self, m: StepMetrics) -> Result<()> {
        let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&self.path)?;
        writeln!(f, "{}", serde_json::to_string(&m).expect("json"))?;
        self.rows.push(m);
        Ok(())
    }

    /// Loss (and validation loss) against step, and the learning rate, as PNGs.
    pub fn plot(&self, dir: &Path, title: &str) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let loss: Vec<(f64, f64)> = self.rows.iter().map(|r| (r.step as f64, r.loss)).collect();
        let val: Vec<(f64, f64)> = self.rows.iter().filter_map(|r| r.val_loss.map(|v| (r.step as f64, v))).collect();
        let mut series = vec![("train loss", loss)];
        if !val.is_empty() {
            series.push(("validation loss", val));
        }
        crate::plot::lines(&dir.join("loss.png"), &format!("{title}: loss"), "step", "loss", &series)?;
        let lr: Vec<(f64, f64)> = self.rows.iter().map(|r| (r.step as f64, r.lr)).collect();
        crate::plot::lines(&dir.join("lr.png"), &format!("{title}: learning rate"), "step", "lr", &[("lr", lr)])?;
        // Preference objectives: rewards and margins, and accuracy, against step.
        let curve = |k: &str| -> Vec<(f64, f64)> { self.rows.iter().filter_map(|r| r.extra.get(k).map(|v| (r.step as f64, *v))).collect() };
        let rewards: Vec<(&str, Vec<(f64, f64)>)> =
            ["rewards/chosen", "rewards/rejected", "rewards/margins", "val/rewards/margins"].into_iter().map(|k| (k, curve(k))).filter(|(_, c)| !c.is_empty()).collect();
        if !rewards.is_empty() {
            crate::plot::lines(&dir.join("rewards.png"), &format!("{title}: rewards"), "step", "reward", &rewards)?;
        }
        let acc: Vec<(&str, Vec<(f64, f64)>)> = ["rewards/accuracies", "val/rewards/accuracies"].into_iter().map(|k| (k, curve(k))).filter(|(_, c)| !c.is_empty()).collect();
        if !acc.is_empty() {
            crate::plot::lines(&dir.join("accuracy.png"), &format!("{title}: preference accuracy"), "step", "accuracy", &acc)?;
        }
        Ok(())
    }
}
