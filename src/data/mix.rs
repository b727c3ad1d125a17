//! Mixtures (FLAN / OPT-IML style): several datasets and SuperNI tasks, with weights or
//! temperature sampling, per-source caps, a fraction of instances per task ("Quick
//! Learners" 6% / 25% / 100%), held-out tasks and instances excluded, all seeded.
use super::read::{stream, ReadOptions};
use super::write::{to_json, write_values, Layout};
use super::{Problem, Record};
use crate::{Error, Result};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mixture {
    #[serde(default)]
    pub seed: u64,
    /// Examples to draw in all; default: everything every source offers.
    pub total: Option<usize>,
    /// Without weights, sources are sampled in proportion to size^(1/temperature):
    /// 1 = proportional to size, larger values flatten towards uniform.
    #[serde(default = "one")]
    pub temperature: f64,
    pub sources: Vec<Source>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// A file, or a pattern with `*` in the file name (each match is its own source).
    pub path: String,
    pub weight: Option<f64>,
    /// At most this many examples from each matching file.
    pub max: Option<usize>,
    /// Keep this fraction of each file's examples (before `max`).
    pub fraction: Option<f64>,
    pub format: Option<String>,
    /// SuperNI: positive examples per prompt.
    pub k_shot: Option<usize>,
    /// At most this many examples from all of this source's files together, spread one
    /// at a time over its files in a seeded order (after `fraction` and `max`): with
    /// `max: 1`, `total: 40` is one instance from each of 40 tasks.
    pub total: Option<usize>,
    /// Files whose records' `id`s are left out (e.g. an evaluation set).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// File stems (task names) left out entirely.
    #[serde(default)]
    pub held_out_tasks: Vec<String>,
}

/// A mixture's result in memory: records with the source each came from.
pub struct Mixed {
    pub records: Vec<(String, Record)>,
    /// (source, available, drawn).
    pub counts: Vec<(String, usize, usize)>,
    pub problems: Vec<Problem>,
}

/// One file of a mixture and which of its records are drawn.
struct Pool {
    file: PathBuf,
    opts: ReadOptions,
    /// Record index (among the file's good records) -> position in the output.
    drawn: HashMap<usize, usize>,
}

/// What a mixture draws, as record indices only: files are read twice (count, then
/// draw), so a mixture of files larger than memory holds only these numbers.
pub struct Plan {
    pools: Vec<Pool>,
    /// Examples drawn in all.
    pub len: usize,
    /// (source, available, drawn).
    pub counts: Vec<(String, usize, usize)>,
    pub problems: Vec<Problem>,
}

impl Mixture {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
        let m: Mixture = serde_yaml::from_str(&text).map_err(|e| Error::file(path, e.to_string()))?;
        if m.sources.is_empty() {
            return Err(Error::file(path, "sources: the mixture lists no sources"));
        }
        if m.temperature <= 0.0 {
            return Err(Error::file(path, "temperature: must be positive"));
        }
        Ok(m)
    }
}

/// Files a source names, relative to `base` (the mixture file's directory).
fn expand(pattern: &str, base: &Path) -> Result<Vec<PathBuf>> {
    if crate::hub::is_hub_data(Path::new(pattern)) {
        return Ok(vec![PathBuf::from(pattern)]);
    }
    let p = base.join(pattern);
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
    if !name.contains('*') {
        return Ok(vec![p]);
    }
    let dir = p.parent().unwrap_or(Path::new("."));
    let (pre, post) = name.split_once('*').expect("has *");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(pre) && n.ends_with(post) && n.len() >= pre.len() + post.len()))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(Error::Input(format!("source {pattern:?} matches no files")));
    }
    Ok(out)
}

fn excluded_ids(files: &[String], base: &Path) -> Result<HashSet<String>> {
    let mut ids = HashSet::new();
    for f in files {
        let path = if crate::hub::is_hub_data(Path::new(f)) { PathBuf::from(f) } else { base.join(f) };
        for (_, v) in super::read::values(&path)? {
            if let Some(id) = v.ok().and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string)) {
                ids.insert(id);
            }
        }
    }
    Ok(ids)
}

/// Decide what the mixture draws. `base` resolves relative paths (the mixture file's
/// directory).
pub fn plan(m: &Mixture, base: &Path) -> Result<Plan> {
    let mut rng = StdRng::seed_from_u64(m.seed);
    // Every matching file becomes one pool: (file, options, its records in draw order, source).
    let mut pools: Vec<(PathBuf, ReadOptions, Vec<usize>, usize)> = vec![];
    let mut problems = vec![];
    for (si, s) in m.sources.iter().enumerate() {
        let mut opts = ReadOptions { format: s.format.clone(), ..Default::default() };
        opts.superni.exclude_ids = excluded_ids(&s.exclude, base)?;
        if let Some(k) = s.k_shot {
            opts.superni.k_positive = k;
        }
        for file in expand(&s.path, base)? {
            let stem = file.file_stem().and_then(|x| x.to_str()).unwrap_or("").to_string();
            if s.held_out_tasks.contains(&stem) {
                continue;
            }
            let mut n = 0;
            for item in stream(&file, &opts)? {
                match item {
                    Ok(_) => n += 1,
                    Err(p) => problems.push(p),
                }
            }
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            if let Some(f) = s.fraction {
                order.truncate(((n as f64) * f).ceil() as usize);
            }
            if let Some(cap) = s.max {
                order.truncate(cap);
            }
            pools.push((file, opts.clone(), order, si));
        }
        if let Some(t) = s.total {
            let mine: Vec<usize> = (0..pools.len()).filter(|&p| pools[p].3 == si).collect();
            let keep = spread(&mine.iter().map(|&p| pools[p].2.len()).collect::<Vec<_>>(), t, &mut rng);
            for (&p, k) in mine.iter().zip(keep) {
                pools[p].2.truncate(k);
            }
        }
    }
    let sizes: Vec<usize> = pools.iter().map(|p| p.2.len()).collect();
    let available: usize = sizes.iter().sum();
    let total = m.total.unwrap_or(available).min(available);
    let shares = shares(m, &pools.iter().map(|p| p.3).collect::<Vec<_>>(), &sizes);
    let draws = allocate(&shares, &sizes, total);
    // The output is every drawn (pool, record) in one seeded shuffle.
    let mut slots: Vec<(usize, usize)> = vec![];
    for (pi, (p, &n)) in pools.iter().zip(&draws).enumerate() {
        slots.extend(p.2[..n].iter().map(|&i| (pi, i)));
    }
    slots.shuffle(&mut rng);
    let mut drawn: Vec<HashMap<usize, usize>> = vec![HashMap::new(); pools.len()];
    for (pos, &(pi, i)) in slots.iter().enumerate() {
        drawn[pi].insert(i, pos);
    }
    let counts = pools.iter().zip(&draws).map(|(p, &n)| (p.0.display().to_string(), p.2.len(), n)).collect();
    let pools = pools.into_iter().zip(drawn).map(|((file, opts, _, _), drawn)| Pool { file, opts, drawn }).collect();
    Ok(Plan { pools, len: slots.len(), counts, problems })
}

impl Plan {
    /// The drawn records, file by file, each with its source name and output position.
    pub fn drawn(&self) -> impl Iterator<Item = Result<(usize, String, Record)>> + '_ {
        self.pools.iter().flat_map(|p| {
            let name = p.file.display().to_string();
            let records: Box<dyn Iterator<Item = Result<(usize, String, Record)>>> = match stream(&p.file, &p.opts) {
                Err(e) => Box::new(std::iter::once(Err(e))),
                Ok(s) => Box::new(s.filter_map(|r| r.ok()).enumerate().filter_map(move |(i, r)| p.drawn.get(&i).map(|&pos| Ok((pos, name.clone(), r))))),
            };
            records
        })
    }

    /// Write the mixture in its shuffled order (JSONL or Parquet, atomically), with each
    /// record's source in a `source` field. Drawn records are spilled to a temporary file
    /// first, so memory holds offsets, not records.
    pub fn write(&self, out: &Path) -> Result<usize> {
        let spill_path = out.with_extension("mix-spill");
        let result = self.write_via(out, &spill_path);
        let _ = std::fs::remove_file(&spill_path);
        result
    }

    fn write_via(&self, out: &Path, spill_path: &Path) -> Result<usize> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(spill_path);
        let mut spill = std::io::BufWriter::new(file.map_err(|e| Error::file(spill_path, e.to_string()))?);
        let mut at = vec![(0u64, 0usize); self.len];
        let mut offset = 0u64;
        for item in self.drawn() {
            let (pos, name, r) = item?;
            let mut v = to_json(&r.example, Layout::Messages).ok_or_else(|| Error::Input(format!("{}: cannot be written as messages", r.origin)))?;
            v["source"] = name.into();
            let line = serde_json::to_vec(&v).map_err(|e| Error::Input(e.to_string()))?;
            spill.write_all(&line)?;
            at[pos] = (offset, line.len());
            offset += line.len() as u64;
        }
        let spill = spill.into_inner().map_err(|e| Error::file(spill_path, e.to_string()))?;
        let rows = at.into_iter().map(|(o, n)| {
            let mut buf = vec![0u8; n];
            spill.read_exact_at(&mut buf, o)?;
            serde_json::from_slice(&buf).map_err(|e| Error::Input(e.to_string()))
        });
        write_values(out, rows)
    }
}

/// Draw the mixture into memory, in its shuffled order.
pub fn mix(m: &Mixture, base: &Path) -> Result<Mixed> {
    let p = plan(m, base)?;
    let mut slots: Vec<Option<(String, Record)>> = vec![None; p.len];
    for item in p.drawn() {
        let (pos, name, r) = item?;
        slots[pos] = Some((name, r));
    }
    Ok(Mixed { records: slots.into_iter().flatten().collect(), counts: p.counts, problems: p.problems })
}

/// How many of each pool to keep so that `total` are kept in all: one at a time from each
/// pool in a seeded order, round after round.
fn spread(sizes: &[usize], total: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.shuffle(rng);
    let mut keep = vec![0; sizes.len()];
    let mut left = total.min(sizes.iter().sum());
    while left > 0 {
        for &i in &order {
            if left > 0 && keep[i] < sizes[i] {
                keep[i] += 1;
                left -= 1;
            }
        }
    }
    keep
}

/// Each pool's share: size^(1/T); a source with a weight gets that weight in all, split
/// over its files in proportion to their size^(1/T).
fn shares(m: &Mixture, source_of: &[usize], sizes: &[usize]) -> Vec<f64> {
    let tempered: Vec<f64> = sizes.iter().map(|&n| (n as f64).powf(1.0 / m.temperature)).collect();
    let group_total = |s: usize| -> f64 { source_of.iter().zip(&tempered).filter(|(&g, _)| g == s).map(|(_, t)| t).sum() };
    // Weighted sources are scaled against the unweighted mass so both kinds can mix.
    let all: f64 = tempered.iter().sum();
    source_of
        .iter()
        .zip(&tempered)
        .map(|(&s, &t)| match m.sources[s].weight {
            Some(w) if t > 0.0 => w * all * t / group_total(s),
            Some(_) => 0.0,
            None => t,
        })
        .collect()
}

/// How many to draw from each pool given its share, capped by pool size, with what a
/// capped pool cannot give passed on to the others.
pub fn allocate(share: &[f64], sizes: &[usize], total: usize) -> Vec<usize> {
    let mut got = vec![0usize; sizes.len()];
    let mut left = total;
    let mut open: Vec<usize> = (0..sizes.len()).filter(|&i| sizes[i] > 0 && share[i] > 0.0).collect();
    while left > 0 && !open.is_empty() {
        let sum: f64 = open.iter().map(|&i| share[i]).sum();
        let mut given = 0;
        for &i in &open {
            let want = ((left as f64) * share[i] / sum).floor() as usize;
            let n = want.min(sizes[i] - got[i]);
            got[i] += n;
            given += n;
        }
        if given == 0 {
            // Rounding left a few: hand them out one each, largest share first.
            let mut by_share = open.clone();
            by_share.sort_by(|&a, &b| share[b].total_cmp(&share[a]));
            for i in by_share.into_iter().take(left) {
                got[i] += 1;
                given += 1;
            }
        }
        left -= given;
        open.retain(|&i| got[i] < sizes[i]);
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_total_is_spread_one_at_a_time() {
        let keep = spread(&[1, 1, 1, 1, 1], 2, &mut StdRng::seed_from_u64(0));
        assert_eq!((keep.iter().sum::<usize>(), keep.iter().max()), (2, Some(&1)));
        assert_eq!(spread(&[5, 1, 3], 7, &mut StdRng::seed_from_u64(0)).iter().sum::<usize>(), 7);
        let mut small = spread(&[5, 1, 3], 7, &mut StdRng::seed_from_u64(1));
        small.sort();
        assert_eq!(small, vec![1, 3, 3]);
        assert_eq!(spread(&[2, 2], 10, &mut StdRng::seed_from_u64(0)), vec![2, 2]);
    }

    #[test]
    fn allocation_follows_weights_caps_and_temperature() {
        assert_eq!(allocate(&[1.0, 3.0], &[1000, 1000], 400), vec![100, 300]);
        // A capped pool's remainder goes to the others.
        assert_eq!(allocate(&[1.0, 1.0], &[50, 1000], 400), vec![50, 350]);
        assert_eq!(allocate(&[1.0, 1.0], &[3, 4], 100), vec![3, 4]);
        // Shares: proportional to size at T=1, flatter at high T; a weighted source's
        // weight is split over its files.
        let src = |weight: Option<f64>| Source { path: String::new(), weight, max: None, total: None, fraction: None, format: None, k_shot: None, exclude: vec![], held_out_tasks: vec![] };
        let m = |t: f64, sources: Vec<Source>| Mixture { seed: 0, total: None, temperature: t, sources };
        assert_eq!(allocate(&shares(&m(1.0, vec![src(None), src(None)]), &[0, 1], &[100, 900]), &[100, 900], 100), vec![10, 90]);
        let flat = allocate(&shares(&m(1000.0, vec![src(None), src(None)]), &[0, 1], &[100, 900]), &[100, 900], 100);
        assert!(flat[0] >= 49 && flat[0] <= 51, "{flat:?}");
        // Source 0 (weight 1, two files) vs source 1 (weight 1, one file): half each.
        let s = shares(&m(1.0, vec![src(Some(1.0)), src(Some(1.0))]), &[0, 0, 1], &[100, 300, 1000]);
        assert_eq!(allocate(&s, &[100, 300, 1000], 800), vec![100, 300, 400]);
    }
}
