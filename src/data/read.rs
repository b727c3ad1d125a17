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

/// Raw JSON values of a file with their origins (problems for unparsable ones).
pub fn values(path: &Path) -> Result<Vec<(Origin, std::result::Result<Value, Problem>)>> {
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
        return Ok(rows.into_iter().enumerate().map(|(i, v)| (Origin { file: path.to_path_buf(), index: i + 1, is_line: false }, Ok(v))).collect());
    }
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        return Ok(jsonl(path, reader));
    }
    let mut bytes = vec![];
    reader.read_to_end(&mut bytes).map_err(|e| Error::file(path, e.to_string()))?;
    let origin = |i| Origin { file: path.to_path_buf(), index: i, is_line: false };
    let text = std::str::from_utf8(&bytes).map_err(|e| Error::file(path, format!("not valid UTF-8 at byte {}", e.valid_up_to())))?;
    let v: Value = serde_json::from_str(text).map_err(|e| Error::file(path, format!("invalid JSON at line {} column {}: {e}", e.line(), e.column())))?;
    Ok(match v {
        Value::Array(items) => items.into_iter().enumerate().map(|(i, v)| (origin(i + 1), Ok(v))).collect(),
        other => vec![(origin(1), Ok(other))],
    })
}

fn jsonl(path: &Path, reader: Box<dyn Read>) -> Vec<(Origin, std::result::Result<Value, Problem>)> {
    let mut out = vec![];
    for (i, line) in BufReader::new(reader).split(b'\n').enumerate() {
        let origin = Origin { file: path.to_path_buf(), index: i + 1, is_line: true };
        let problem = |msg: String| Problem { origin: origin.clone(), field: String::new(), msg };
        let bytes = match line {
            Ok(b) => b,
            Err(e) => {
                out.push((origin.clone(), Err(problem(e.to_string()))));
                break;
            }
        };
        let parsed = match std::str::from_utf8(&bytes) {
            Err(e) => Err(problem(format!("not valid UTF-8 at byte {}", e.valid_up_to()))),
            Ok(t) if t.trim().is_empty() => continue,
            Ok(t) => serde_json::from_str(t).map_err(|e| problem(format!("invalid JSON at column {}: {e}", e.column()))),
        };
        out.push((origin, parsed));
    }
    out
}

/// Read, detect the layout and parse a file into records, collecting every problem.
pub fn load(path: &Path, opts: &ReadOptions) -> Result<Loaded> {
    let vals = values(path)?;
    let fmt = match &opts.format {
        Some(name) => formats::by_name(name)?,
        None => {
            let first = vals.iter().find_map(|(_, v)| v.as_ref().ok()).ok_or_else(|| Error::file(path, "no readable records"))?;
            formats::detect(&rename(first.clone(), &opts.columns)).ok_or_else(|| {
                Error::file(path, format!("cannot tell the layout from the first record's fields {:?}; pass --format {}", keys(first), formats::names().join("|")))
            })?
        }
    };
    let mut loaded = Loaded { format: fmt.name(), records: vec![], problems: vec![] };
    for (origin, v) in vals {
        let v = match v {
            Ok(v) => rename(v, &opts.columns),
            Err(p) => {
                loaded.problems.push(p);
                continue;
            }
        };
        match fmt.parse(&v, opts) {
            Ok(examples) => loaded.records.extend(examples.into_iter().map(|example| Record { origin: origin.clone(), example })),
            Err(errs) => loaded.problems.extend(errs.into_iter().map(|(field, msg)| Problem { origin: origin.clone(), field, msg })),
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
