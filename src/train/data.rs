//! Training data: tokenized (through the cache), fitted to `max_len`, split off a
//! validation set, and laid out as a deterministic stream of micro-batches: epoch `e`
//! shuffles with `seed + e`, then packs (or pads) rows in that order. Step `k` always
//! takes the same micro-batches, so a resumed run needs only the step number.
use super::objective::Data;
use super::recipe::{DataSource, Recipe};
use crate::data::cache::{default_dir, tokenized, Side, Tokenized};
use crate::data::pack::{rows_from, Rows};
use crate::data::read::ReadOptions;
use crate::data::render::{fit_parts, Truncation};
use crate::tokenizer::{ChatTemplate, Tokenizer};
use crate::{Error, Result};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

/// What loading did to the examples (units: pairs count once).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    pub examples: usize,
    pub dropped: usize,
    pub truncated: usize,
    pub no_target: usize,
}

/// What an objective takes at a time: one conversation, a (chosen, rejected) pair, or a
/// labelled response with its mismatched KL sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub seqs: Vec<usize>,
    /// KTO: the sequence pairing this unit's prompt with another unit's completion.
    pub kl: Option<usize>,
}

/// A data set: token sequences, the units they form, and where each unit came from.
#[derive(Debug, Clone, Default)]
pub struct Set {
    pub seqs: Vec<Tokenized>,
    pub units: Vec<Unit>,
    /// The unit each sequence belongs to (`usize::MAX` for KL sequences).
    pub unit_of: Vec<usize>,
    /// The data file (index into `files`) of each unit.
    pub file_of: Vec<usize>,
    /// Each unit's data type where the method reads one (LoRAMoE: world knowledge true).
    pub world: Vec<Option<bool>>,
    pub files: Vec<std::path::PathBuf>,
}

impl Set {
    fn push(&mut self, seqs: Vec<Tokenized>, file: usize, world: Option<bool>) {
        let u = self.units.len();
        self.world.push(world);
        let ids: Vec<usize> = (self.seqs.len()..self.seqs.len() + seqs.len()).collect();
        self.unit_of.extend(std::iter::repeat_n(u, seqs.len()));
        self.seqs.extend(seqs);
        self.units.push(Unit { seqs: ids, kl: None });
        self.file_of.push(file);
    }

    /// The units whose sequences `rows` holds, in order of appearance (KL sequences aside).
    pub fn units_in(&self, rows: &Rows) -> Vec<usize> {
        let mut out: Vec<usize> = vec![];
        for &g in rows.examples.iter().flatten() {
            let u = self.unit_of[g];
            if u != usize::MAX && !out.contains(&u) {
                out.push(u);
            }
        }
        out
    }

    /// Which sample of `rows` each token belongs to and each sample's data type, for a
    /// method's own loss over the batch (`Adapter::aux_loss`).
    pub fn token_groups(&self, rows: &Rows) -> crate::peft::TokenGroups {
        let (mut seq_of, mut world) = (vec![], vec![]);
        for (r, ex) in rows.examples.iter().enumerate() {
            let base = world.len() as u32;
            seq_of.extend(rows.batch.segments[r].iter().map(|&s| if s == u32::MAX { s } else { base + s }));
            world.extend(ex.iter().map(|&g| self.unit_of.get(g).and_then(|&u| self.world.get(u).copied().flatten())));
        }
        crate::peft::TokenGroups { seq_of, world }
    }

    /// `file:line` of each unit in `units` (for errors that must name records).
    pub fn origins(&self, units: &[usize]) -> Vec<String> {
        units.iter().map(|&u| format!("{}:{}", self.files[self.file_of[u]].display(), self.seqs[self.units[u].seqs[0]].record)).collect()
    }

    /// Keep the units `keep` says (sequences renumbered).
    fn split(self, keep: impl Fn(usize) -> bool) -> (Set, Set) {
        let (mut a, mut b) = (Set { files: self.files.clone(), ..Default::default() }, Set { files: self.files.clone(), ..Default::default() });
        for (u, unit) in self.units.iter().enumerate() {
            let seqs = unit.seqs.iter().map(|&i| self.seqs[i].clone()).collect();
            let w = self.world[u];
            if keep(u) {
                a.push(seqs, self.file_of[u], w)
            } else {
                b.push(seqs, self.file_of[u], w)
            }
        }
        (a, b)
    }

    /// KTO's mismatched sequences: within each run of `batch` consecutive units, unit `i`'s
    /// prompt with unit `i - 1`'s completion (the first takes the last's), cut to `max_len`.
    pub fn add_kl(&mut self, batch: usize, max_len: usize) {
        let n = self.units.len();
        for start in (0..n).step_by(batch.max(1)) {
            let end = (start + batch).min(n);
            for u in start..end {
                let partner = if u == start { end - 1 } else { u - 1 };
                let (p, c) = (&self.seqs[self.units[u].seqs[0]], &self.seqs[self.units[partner].seqs[0]]);
                let cut = |t: &Tokenized| t.mask.iter().position(|&m| m).unwrap_or(t.ids.len());
                let (pc, cc) = (cut(p), cut(c));
                let mut ids: Vec<u32> = p.ids[..pc].iter().chain(&c.ids[cc..]).copied().collect();
                let mut mask: Vec<bool> = std::iter::repeat_n(false, pc).chain(c.mask[cc..].iter().copied()).collect();
                ids.truncate(max_len);
                mask.truncate(max_len);
                let kl = Tokenized { side: Side::Conversation, record: p.record, scores: vec![], ids, mask };
                self.units[u].kl = Some(self.seqs.len());
                self.seqs.push(kl);
                self.unit_of.push(usize::MAX);
            }
        }
    }
}

/// Load, fit and split the recipe's data for an objective that trains on `kind`:
/// (training, validation, counts).
pub fn load(recipe: &Recipe, tok: &Tokenizer, tmpl: &ChatTemplate, kind: Data) -> Result<(Set, Set, Counts)> {
    let mut counts = Counts::default();
    let mut train = read_all(&recipe.data, recipe, tok, tmpl, kind, &mut counts)?;
    let mut val = read_all(&recipe.val_data, recipe, tok, tmpl, kind, &mut Counts::default())?;
    if train.units.is_empty() {
        return Err(Error::Input(format!(
            "no training examples left of {} (dropped {} longer than max_len {}, {} without trained tokens)",
            counts.examples, counts.dropped, recipe.max_len, counts.no_target
        )));
    }
    if val.units.is_empty() && recipe.val_fraction > 0.0 {
        let n = train.units.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut StdRng::seed_from_u64(recipe.seed ^ 0x0005_EED0_F5A1));
        let n_val = ((n as f64) * recipe.val_fraction).round().max(1.0) as usize;
        let is_val: std::collections::HashSet<usize> = order[..n_val].iter().copied().collect();
        (val, train) = train.split(|u| is_val.contains(&u));
    }
    if kind == Data::Labelled {
        train.add_kl(recipe.batch_size, recipe.max_len);
        val.add_kl(recipe.batch_size, recipe.max_len);
    }
    Ok((train, val, counts))
}

/// Does a sequence of this side belong to an objective that trains on `kind`?
fn fits_kind(side: Side, scored: bool, kind: Data) -> bool {
    match kind {
        Data::Conversations => side == Side::Conversation,
        Data::Pairs => matches!(side, Side::Chosen | Side::Rejected),
        Data::Labelled => matches!(side, Side::Desirable | Side::Undesirable),
        Data::Scored => side == Side::Conversation && scored,
    }
}

fn read_all(sources: &[DataSource], recipe: &Recipe, tok: &Tokenizer, tmpl: &ChatTemplate, kind: Data, counts: &mut Counts) -> Result<Set> {
    let mut out = Set { files: sources.iter().map(|s| s.path.clone()).collect(), ..Default::default() };
    for (i, s) in sources.iter().enumerate() {
        let opts = ReadOptions { format: s.format.clone(), skip_invalid: s.skip_invalid, ..Default::default() };
        let file = materialize(&s.path, &recipe.output_dir(), i)?;
        let (seqs, _) = tokenized(&file, tok, tmpl, recipe.loss_on, &opts, &default_dir())?;
        if let Some(bad) = seqs.iter().find(|t| !fits_kind(t.side, !t.scores.is_empty(), kind)) {
            return Err(Error::file(&s.path, format!("line/record {}: objective `{}` trains on {}, but this file holds {}", bad.record, recipe.objective, kind.describe(), side_name(bad))));
        }
        let width = if kind == Data::Pairs { 2 } else { 1 };
        if let Some(t) = seqs.iter().find(|t| t.scores.len() != seqs[0].scores.len() && kind == Data::Scored) {
            return Err(Error::file(&s.path, format!("line/record {}: {} scores where the first record has {}", t.record, t.scores.len(), seqs[0].scores.len())));
        }
        let types = data_types(recipe, s, &file)?;
        let mut it = seqs.into_iter().peekable();
        while it.peek().is_some() {
            let unit: Vec<Tokenized> = it.by_ref().take(width).collect();
            let world = match &types {
                Some(t) => t.of(&s.path, unit[0].record)?,
                None => None,
            };
            counts.examples += 1;
            let long = unit.iter().any(|t| t.ids.len() > recipe.max_len);
            let fitted: Option<Vec<Tokenized>> = unit.into_iter().map(|t| fit(t, recipe.max_len, recipe.truncation)).collect();
            match fitted {
                Some(u) if u.iter().all(|t| t.mask.iter().skip(1).any(|&m| m)) => {
                    counts.truncated += usize::from(long);
                    out.push(u, i, world);
                }
                Some(_) => counts.no_target += 1,
                None => counts.dropped += 1,
            }
        }
    }
    Ok(out)
}

/// The data types of a file's records (LoRAMoE's world-knowledge / task label): each
/// record's `loramoe.type_field`, else the source's `task_type`.
struct DataTypes {
    records: std::collections::HashMap<u32, bool>,
    default: Option<bool>,
    field: String,
    required: bool,
}

impl DataTypes {
    fn of(&self, path: &std::path::Path, record: u32) -> Result<Option<bool>> {
        match (self.records.get(&record).copied().or(self.default), self.required) {
            (None, true) => Err(Error::file(
                path,
                format!("line/record {record}: no `{}` (1 or \"world\": world knowledge, 0 or \"task\"), which loramoe.balance_weight needs; or set `task_type` on the data source", self.field),
            )),
            (w, _) => Ok(w),
        }
    }
}

/// Read the data types when the method uses them (LoRAMoE); None otherwise.
fn data_types(recipe: &Recipe, s: &DataSource, file: &std::path::Path) -> Result<Option<DataTypes>> {
    if recipe.method != super::recipe::Method::Loramoe {
        return Ok(None);
    }
    let field = recipe.loramoe.type_field.clone();
    let parse = |v: &serde_json::Value| crate::peft::loramoe::parse_type(v);
    let default = s.task_type.as_ref().map(parse).transpose().map_err(|e| Error::file(&s.path, format!("task_type: {e}")))?;
    let mut records = std::collections::HashMap::new();
    for (origin, v) in crate::data::read::values(file)? {
        let Ok(v) = v else { continue };
        if let Some(t) = v.get(&field).filter(|t| !t.is_null()) {
            let w = parse(t).map_err(|e| Error::file(&s.path, format!("line/record {}: {field}: {e}", origin.index)))?;
            records.insert(origin.index as u32, w);
        }
    }
    Ok(Some(DataTypes { records, default, field, required: recipe.loramoe.balance_weight > 0.0 }))
}

fn side_name(t: &Tokenized) -> &'static str {
    match t.side {
        Side::Conversation if !t.scores.is_empty() => "scored responses",
        Side::Conversation => "conversations",
        Side::Chosen | Side::Rejected => "preference pairs",
        Side::Desirable | Side::Undesirable => "labelled (KTO) responses",
    }
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

/// Group sequence ids into rows in order: packed up to `max_len` tokens a row, or one a row.
pub fn pack_rows(ids: &[usize], len: impl Fn(usize) -> usize, max_len: usize, packing: bool) -> Vec<Vec<usize>> {
    if !packing {
        return ids.iter().map(|&i| vec![i]).collect();
    }
    let mut rows: Vec<Vec<usize>> = vec![];
    let mut used = 0;
    for &i in ids {
        let n = len(i);
        if rows.is_empty() || used + n > max_len {
            rows.push(vec![]);
            used = 0;
        }
        rows.last_mut().expect("a row").push(i);
        used += n;
    }
    rows
}

/// The micro-batch stream: micro-batches of rows of sequence ids. Supervised fine-tuning
/// takes `batch_size` rows per micro-batch (each packed with examples); unit objectives
/// take `batch_size` units (pairs, labelled examples), their sequences packed into rows.
pub struct Stream<'a> {
    set: &'a Set,
    seed: u64,
    max_len: usize,
    packing: bool,
    batch_size: usize,
    pad: u32,
    /// Batch by units rather than by rows.
    by_units: bool,
    /// Keep the data's order every epoch (KTO).
    sequential: bool,
    epoch: usize,
    current: Vec<Vec<Vec<usize>>>,
    next: usize,
}

impl<'a> Stream<'a> {
    pub fn new(set: &'a Set, recipe: &Recipe, pad: u32, by_units: bool, sequential: bool) -> Self {
        let mut s = Stream { set, seed: recipe.seed, max_len: recipe.max_len, packing: recipe.packing, batch_size: recipe.batch_size, pad, by_units, sequential, epoch: 0, current: vec![], next: 0 };
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
        let mut order: Vec<usize> = (0..self.set.units.len()).collect();
        if !self.sequential {
            order.shuffle(&mut StdRng::seed_from_u64(self.seed.wrapping_add(e as u64)));
        }
        let len = |i: usize| self.set.seqs[i].ids.len();
        if self.by_units {
            return order.chunks(self.batch_size).map(|c| pack_rows(&c.iter().flat_map(|&u| self.set.units[u].seqs.clone()).collect::<Vec<_>>(), len, self.max_len, self.packing)).collect();
        }
        let seqs: Vec<usize> = order.iter().map(|&u| self.set.units[u].seqs[0]).collect();
        let rows = pack_rows(&seqs, len, self.max_len, self.packing);
        rows.chunks(self.batch_size).map(<[Vec<usize>]>::to_vec).collect()
    }

    /// The next micro-batch (epochs roll over).
    pub fn next_batch(&mut self) -> Rows {
        let at = self.advance();
        let groups = self.current[at].clone();
        rows_from(groups, self.pad, |i| (&self.set.seqs[i].ids, &self.set.seqs[i].mask))
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

/// Every unit of `set` in micro-batches (validation): supervised examples one a row,
/// sorted by length, `batch_size` rows a batch; units `batch_size` at a time, in order.
pub fn all_batches(set: &Set, batch_size: usize, pad: u32, by_units: bool, layout: (usize, bool)) -> Vec<Rows> {
    let seq = |i: usize| (&set.seqs[i].ids[..], &set.seqs[i].mask[..]);
    if by_units {
        let order: Vec<usize> = (0..set.units.len()).collect();
        return order
            .chunks(batch_size)
            .map(|c| {
                let ids: Vec<usize> = c.iter().flat_map(|&u| set.units[u].seqs.clone()).collect();
                rows_from(pack_rows(&ids, |i| set.seqs[i].ids.len(), layout.0, layout.1), pad, seq)
            })
            .collect();
    }
    let mut order: Vec<usize> = set.units.iter().map(|u| u.seqs[0]).collect();
    order.sort_by_key(|&i| set.seqs[i].ids.len());
    order.chunks(batch_size).map(|c| rows_from(c.iter().map(|&i| vec![i]).collect(), pad, seq)).collect()
}
