//! Records from JSON, JSONL (optionally gzipped) and Parquet files, with their origins.
//! Every unreadable record becomes a [`Problem`]; reading goes on past it.
use super::{formats, Origin, Problem, Record};
use crate::{Error, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Options that change how records are interpreted.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Layout name (`alpaca`, `sharegpt`, ...); detected from the first record when None.
    pub format: Option<String>,
    /// Renames of top-level fields applied before parsing: (from, to).
    pub columns: Vec<(String, String)>,
    pub superni: formats::superni::SuperNiOptions,
    /// Callers that refuse files with problems go on without the bad records instead.
    pub skip_invalid: bool,
}

/// What reading a file gave: the layout, the good records and every problem.
#[derive(Debug)]
pub struct Loaded {
    pub format: &'static str,
    pub records: Vec<Record>,
    pub problems: Vec<Problem>,
}

type Item = (Origin, std::result::Result<Value, Problem>);

/// Raw JSON values of a file with their origins (problems for unparsable ones): JSONL
/// (plain or gzipped) line by line, JSON and Parquet files whole.
/// An `hf://datasets/...` path reads the dataset's files one after the other.
pub fn values(path: &Path) -> Result<Box<dyn Iterator<Item = Item>>> {
    if let Some(files) = crate::hub::data_files(path)? {
        let mut all: Box<dyn Iterator<Item = Item>> = Box::new(std::iter::empty());
        for f in files {
            all = Box::new(all.chain(values(&f)?));
        }
        return Ok(all);
    }
    let file = std::fs::File::open(path).map_err(|e| Error::file(path, e.to_string()))?;
    let mut reader: Box<dyn Read> = Box::new(file);
    let name = path.to_string_lossy().to_string();
    let name = match name.strip_suffix(".gz") {
        Some(n) => {
            reader = Box::new(flate2::read::GzDecoder::new(reader));
            n.to_string()
        }
        None => name,
    };
    if name.ends_with(".parquet") {
        let rows = super::parquet_io::read_rows(path)?;
        let path = path.to_path_buf();
        return Ok(Box::new(rows.into_iter().enumerate().map(move |(i, v)| (Origin { file: path.clone(), index: i + 1, is_line: false }, Ok(v)))));
    }
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        return Ok(Box::new(jsonl(path.to_path_buf(), reader)));
    }
    let mut bytes = vec![];
    reader.read_to_end(&mut bytes).map_err(|e| Error::file(path, e.to_string()))?;
    let p = path.to_path_buf();
    let origin = move |i| Origin { file: p.clone(), index: i, is_line: false };
    let text = std::str::from_utf8(&bytes).map_err(|e| Error::file(path, format!("not valid UTF-8 at byte {}", e.valid_up_to())))?;
    let v: Value = serde_json::from_str(text).map_err(|e| Error::file(path, format!("invalid JSON at line {} column {}: {e}", e.line(), e.column())))?;
    Ok(match v {
        Value::Array(items) => Box::new(items.into_iter().enumerate().map(move |(i, v)| (origin(i + 1), Ok(v)))),
        other => Box::new(std::iter::once((origin(1), Ok(other)))),
    })
}

/// JSONL lines as they are read; blank lines are skipped, a read error ends the stream.
fn jsonl(path: std::path::PathBuf, reader: Box<dyn Read>) -> impl Iterator<Item = Item> {
    let mut lines = BufReader::new(reader).split(b'\n').enumerate();
    let mut done = false;
    std::iter::from_fn(move || loop {
        if done {
            return None;
        }
        let (i, line) = lines.next()?;
        let origin = Origin { file: path.clone(), index: i + 1, is_line: true };
        let problem = |msg: String| Problem { origin: origin.clone(), field: String::new(), msg };
        let bytes = match line {
            Ok(b) => b,
            Err(e) => {
                done = true;
                return Some((origin.clone(), Err(problem(e.to_string()))));
            }
        };
        let parsed = match std::str::from_utf8(&bytes) {
            Err(e) => Err(problem(format!("not valid UTF-8 at byte {}", e.valid_up_to()))),
            Ok(t) if t.trim().is_empty() => continue,
            Ok(t) => serde_json::from_str(t).map_err(|e| problem(format!("invalid JSON at column {}: {e}", e.column()))),
        };
        return Some((origin, parsed));
    })
}

/// Records of a file one at a time, each a record or a problem. Memory stays bounded for
/// JSONL however large the file.
pub struct Stream {
    pub format: &'static str,
    fmt: &'static dyn formats::Format,
    opts: ReadOptions,
    values: std::iter::Peekable<Box<dyn Iterator<Item = Item>>>,
    pending: std::collections::VecDeque<std::result::Result<Record, Problem>>,
}

impl Iterator for Stream {
    type Item = std::result::Result<Record, Problem>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.pending.is_empty() {
            let (origin, v) = self.values.next()?;
            let v = match v {
                Ok(v) => rename(v, &self.opts.columns),
                Err(p) => return Some(Err(p)),
            };
            match self.fmt.parse(&v, &self.opts) {
                Ok(examples) => self.pending.extend(examples.into_iter().map(|example| Ok(Record { origin: origin.clone(), example }))),
                Err(errs) => self.pending.extend(errs.into_iter().map(|(field, msg)| Err(Problem { origin: origin.clone(), field, msg }))),
            }
        }
        self.pending.pop_front()
    }
}

/// Open a file as a [`Stream`], detecting the layout from its first readable record.
pub fn stream(path: &Path, opts: &ReadOptions) -> Result<Stream> {
    let mut values = values(path)?.peekable();
    let fmt = match &opts.format {
        Some(name) => formats::by_name(name)?,
        None => {
            // Problems before the first good record stay in the stream; look past them.
            let mut skipped = vec![];
            while let Some((_, Err(_))) = values.peek() {
                skipped.push(values.next().expect("peeked"));
            }
            let first = match values.peek() {
                Some((_, Ok(v))) => rename(v.clone(), &opts.columns),
                _ => return Err(Error::file(path, "no readable records")),
            };
            let fmt = formats::detect(&first)
                .ok_or_else(|| Error::file(path, format!("cannot tell the layout from the first record's fields {:?}; pass --format {}", keys(&first), formats::names().join("|"))))?;
            let rest: Box<dyn Iterator<Item = Item>> = Box::new(skipped.into_iter().chain(values));
            values = rest.peekable();
            fmt
        }
    };
    Ok(Stream { format: fmt.name(), fmt, opts: opts.clone(), values, pending: Default::default() })
}

/// Read, detect the layout and parse a whole file, collecting every problem.
pub fn load(path: &Path, opts: &ReadOptions) -> Result<Loaded> {
    let s = stream(path, opts)?;
    let mut loaded = Loaded { format: s.format, records: vec![], problems: vec![] };
    for item in s {
        match item {
            Ok(r) => loaded.records.push(r),
            Err(p) => loaded.problems.push(p),
        }
    }
    Ok(loaded)
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn rename(v: Value, columns: &[(String, String)]) -> Value {
    let Value::Object(mut o) = v else { return v };
    for (from, to) in columns {
        if let Some(x) = o.remove(from) {
            o.insert(to.clone(), x);
        }
    }
    Value::Object(o)
}
