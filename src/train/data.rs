//! Training data: tokenized (through the cache), fitted to `max_len`, split off a
//! validation set, and laid out as a deterministic stream of micro-batches: epoch `e`
//! shuffles with `seed + e`, then packs (or pads) rows in that order. Step `k` always
//! takes the same micro-batches, so a resumed run needs only the step number.
use super::recipe::{DataSource, Recipe};
use crate::data::cache::{default_dir, tokenized, Side, Tokenized};
use crate::data::pack::{rows_from, Rows};
use crate::data::read::ReadOptions;
use crate::data::render::{fit_parts, Truncation};
use crate::tokenizer::{ChatTemplate, Tokenizer};
use crate::{Error, Result};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

/// What loading did to the examples.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    pub examples: usize,
    pub dropped: usize,
    pub truncated: usize,
    pub no_target: usize,
}

/// Load, fit and split the recipe's data: (training, validation, counts).
pub fn load(recipe: &Recipe, tok: &Tokenizer, tmpl: &ChatTemplate) -> Result<(Vec<Tokenized>, Vec<Tokenized>, Counts)> {
    let mut counts = Counts::default();
    let mut train = read_all(&recipe.data, recipe, tok, tmpl, &mut counts)?;
    let mut val = read_all(&recipe.val_data, recipe, tok, tmpl, &mut Counts::default())?;
    if train.is_empty() {
        return Err(Error::Input(format!(
            "no training examples left of {} (dropped {} longer than max_len {}, {} without trained tokens)",
            counts.examples, counts.dropped, recipe.max_len, counts.no_target
        )));
    }
    if val.is_empty() && recipe.val_fraction > 0.0 {
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(recipe.seed ^ 0x0005_EED0_F5A1));
        let n_val = ((train.len() as f64) * recipe.val_fraction).round().max(1.0) as usize;
        let is_val: std::collections::HashSet<usize> = order[..n_val].iter().copied().collect();
        let (v, t): (Vec<_>, Vec<_>) = train.into_iter().enumerate().partition(|(i, _)| is_val.contains(i));
        val = v.into_iter().map(|x| x.1).collect();
        train = t.into_iter().map(|x| x.1).collect();
    }
    Ok((train, val, counts))
}

fn read_all(sources: &[DataSource], recipe: &Recipe, tok: &Tokenizer, tmpl: &ChatTemplate, counts: &mut Counts) -> Result<Vec<Tokenized>> {
    let mut out = vec![];
    for (i, s) in sources.iter().enumerate() {
        let opts = ReadOptions { format: s.format.clone(), skip_invalid: s.skip_invalid, ..Default::default() };
        let file = materialize(&s.path, &recipe.output_dir(), i)?;
        let (seqs, _) = tokenized(&file, tok, tmpl, recipe.loss_on, &opts, &default_dir())?;
        if seqs.iter().any(|t| t.side != Side::Conversation) {
            return Err(Error::file(&s.path, "holds preference pairs; supervised fine-tuning trains on conversations (preference methods come with DPO/ORPO)"));
        }
        for t in seqs {
            counts.examples += 1;
            let long = t.ids.len() > recipe.max_len;
            match fit(t, recipe.max_len, recipe.truncation) {
                Some(t) if t.mask.iter().skip(1).any(|&m| m) => {
                    counts.truncated += usize::from(long);
                    out.push(t);
                }
                Some(_) => counts.no_target += 1,
                None => counts.dropped += 1,
            }
        }
    }
    Ok(out)
}

/// A mixture YAML is drawn (seeded, so the same every time) into `mixture-<i>.jsonl` in
/// the run directory, which then records exactly what was trained on; data files are
/// used as they are.
fn materialize(path: &std::path::Path, run_dir: &std::path::Path, i: usize) -> Result<std::path::PathBuf> {
    let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    if !is_yaml {
        return Ok(path.to_path_buf());
    }
    let m = crate::data::mix::Mixture::from_file(path)?;
    let plan = crate::data::mix::plan(&m, path.parent().unwrap_or(std::path::Path::new(".")))?;
    if let Some(p) = plan.problems.first() {
        return Err(Error::file(path, format!("{} problem(s) in its sources, the first: {p}", plan.problems.len())));
    }
    std::fs::create_dir_all(run_dir).map_err(|e| Error::file(run_dir, e.to_string()))?;
    let out = run_dir.join(format!("mixture-{i}.jsonl"));
    plan.write(&out)?;
    Ok(out)
}

fn fit(mut t: Tokenized, max_len: usize, policy: Truncation) -> Option<Tokenized> {
    fit_parts(&mut t.ids, &mut t.mask, max_len, policy).then_some(t)
}

/// The micro-batch stream: rows of example indices, `batch_size` rows per micro-batch.
pub struct Stream<'a> {
    examples: &'a [Tokenized],
    seed: u64,
    max_len: usize,
    packing: bool,
    batch_size: usize,
    pad: u32,
    epoch: usize,
    current: Vec<Vec<Vec<usize>>>,
    next: usize,
}

impl<'a> Stream<'a> {
    pub fn new(examples: &'a [Tokenized], recipe: &Recipe, pad: u32) -> Self {
        let mut s = Stream { examples, seed: recipe.seed, max_len: recipe.max_len, packing: recipe.packing, batch_size: recipe.batch_size, pad, epoch: 0, current: vec![], next: 0 };
        s.current = s.plan(0);
        s
    }

    /// Micro-batches in one epoch.
    pub fn per_epoch(&self) -> usize {
        self.current.len()
    }

    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Epoch `e`'s micro-batches.
    fn plan(&self, e: usize) -> Vec<Vec<Vec<usize>>> {
        let mut order: Vec<usize> = (0..self.examples.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(self.seed.wrapping_add(e as u64)));
        let mut rows: Vec<Vec<usize>> = vec![];
        if self.packing {
            let mut used = 0;
            for i in order {
                let n = self.examples[i].ids.len();
                if rows.is_empty() || used + n > self.max_len {
                    rows.push(vec![]);
                    used = 0;
                }
                rows.last_mut().expect("a row").push(i);
                used += n;
            }
        } else {
            rows = order.into_iter().map(|i| vec![i]).collect();
        }
        rows.chunks(self.batch_size).map(<[Vec<usize>]>::to_vec).collect()
    }

    /// The next micro-batch (epochs roll over).
    pub fn next_batch(&mut self) -> Rows {
        let at = self.advance();
        let groups = self.current[at].clone();
        rows_from(groups, self.pad, |i| (&self.examples[i].ids, &self.examples[i].mask))
    }

    /// Skip `n` micro-batches (resuming).
    pub fn skip(&mut self, n: usize) {
        for _ in 0..n {
            self.advance();
        }
    }

    /// Move to the next micro-batch, planning the next epoch when this one is used up;
    /// returns its index in the current epoch.
    fn advance(&mut self) -> usize {
        if self.next == self.current.len() {
            self.epoch += 1;
            self.current = self.plan(self.epoch);
            self.next = 0;
        }
        self.next += 1;
        self.next - 1
    }
}

/// Every example of `examples` in micro-batches (validation).
pub fn all_batches(examples: &[Tokenized], batch_size: usize, pad: u32) -> Vec<Rows> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].ids.len());
    order.chunks(batch_size).map(|c| rows_from(c.iter().map(|&i| vec![i]).collect(), pad, |i| (&examples[i].ids, &examples[i].mask))).collect()
}
