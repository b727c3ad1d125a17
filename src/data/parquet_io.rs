//! Parquet in and out, through Arrow: rows become the same JSON values the JSON readers
//! produce, so every layout works from Parquet (e.g. Hugging Face dataset exports).
use crate::{Error, Result};
use arrow_json::reader::{infer_json_schema_from_iterator, ReaderBuilder};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// Every row of a Parquet file as a JSON object.
pub fn read_rows(path: &Path) -> Result<Vec<Value>> {
    let bad = |e: &dyn std::fmt::Display| Error::file(path, format!("reading Parquet: {e}"));
    let file = std::fs::File::open(path).map_err(|e| Error::file(path, e.to_string()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(&e))?.build().map_err(|e| bad(&e))?;
    let mut rows = vec![];
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        let mut buf = Vec::new();
        {
            let mut w = arrow_json::LineDelimitedWriter::new(&mut buf);
            w.write(&batch).map_err(|e| bad(&e))?;
            w.finish().map_err(|e| bad(&e))?;
        }
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            rows.push(serde_json::from_slice(line).map_err(|e| bad(&e))?);
        }
    }
    Ok(rows)
}

/// Free-form JSON (tool schemas, call arguments) has no fixed Arrow type: store it as
/// JSON text, as Hugging Face datasets do; the readers parse it back.
const FREE_FORM: &[&str] = &["tool_calls", "tools"];

fn stringify_free_form(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| {
                    let x = if FREE_FORM.contains(&k.as_str()) && !x.is_string() && !x.is_null() { Value::String(x.to_string()) } else { stringify_free_form(x) };
                    (k.clone(), x)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(stringify_free_form).collect()),
        other => other.clone(),
    }
}

/// Write JSON objects as a Parquet file (schema inferred from the values), atomically.
pub fn write_rows(path: &Path, rows: &[Value]) -> Result<()> {
    let rows: Vec<Value> = rows.iter().map(stringify_free_form).collect();
    let rows = rows.as_slice();
    let bad = |e: &dyn std::fmt::Display| Error::file(path, format!("writing Parquet: {e}"));
    let schema = infer_json_schema_from_iterator(rows.iter().map(|r| Ok(r.clone()))).map_err(|e| bad(&e))?;
    let schema = Arc::new(schema);
    let mut decoder = ReaderBuilder::new(schema.clone()).build_decoder().map_err(|e| bad(&e))?;
    decoder.serialize(rows).map_err(|e| bad(&e))?;
    let tmp = path.with_extension("parquet.partial");
    let file = std::fs::File::create(&tmp)?;
    let mut w = ArrowWriter::try_new(file, schema, None).map_err(|e| bad(&e))?;
    while let Some(batch) = decoder.flush().map_err(|e| bad(&e))? {
        w.write(&batch).map_err(|e| bad(&e))?;
    }
    w.close().map_err(|e| bad(&e))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
