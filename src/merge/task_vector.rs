//! Task vectors (Ilharco et al. 2023): `instill task-vector --base B --tuned T` writes
//! `scale * (T - B)` for every tensor as a HF directory (f32 safetensors, T's config.json
//! with an `instill_task_vector` entry naming B, T and the scale, T's tokenizer).
//!
//! Such a directory is a model a merge YAML can name: its tensors are read as deltas
//! over the merge's `base_model` (never re-derived by a subtraction), so
//! `task_arithmetic` with `base_model: C` and the vector at `weight: w` gives
//! `C + w * scale * (T - B)`: the "instruction residual" recipe (a continued-pretraining
//! model C plus the instruct-minus-base difference). Methods that need whole models see
//! `base + delta`.
use super::source::{Data, Model, TASK_VECTOR_KEY};
use super::write::{HfWriter, OutType};
use super::Summary;
use crate::{Error, Result};
use std::path::Path;

pub fn write(base: &str, tuned: &str, out: &Path, scale: f64, shard_bytes: usize, progress: &mut dyn FnMut(usize, usize, &str)) -> Result<Summary> {
    let here = Path::new(".");
    let (b, t) = (Model::open(base, base, here)?, Model::open(tuned, tuned, here)?);
    for m in [&b, &t] {
        if m.is_task_vector() {
            return Err(Error::Input(format!("{}: already a task vector", m.label)));
        }
    }
    let names = t.names();
    let mut shapes = vec![];
    for n in &names {
        let st = t.shape(n).expect("listed");
        let sb = b.shape(n).ok_or_else(|| Error::Input(format!("{base}: tensor {n:?} is missing (it is in {tuned})")))?;
        if sb != st {
            return Err(Error::Input(format!("tensor {n}: shape {sb:?} in {base} but {st:?} in {tuned}")));
        }
        shapes.push((n.clone(), st));
    }
    if let Some(extra) = b.names().into_iter().find(|n| t.shape(n).is_none()) {
        return Err(Error::Input(format!("{tuned}: tensor {extra:?} is missing (it is in {base})")));
    }
    let mut w = HfWriter::new(out, &shapes, OutType::F32, shard_bytes)?;
    for (i, n) in names.iter().enumerate() {
        let r = (|| -> Result<Vec<f32>> {
            let (Some(Data::Full(x)), Some(Data::Full(y))) = (t.load(n)?, b.load(n)?) else { unreachable!("checked above") };
            Ok(x.iter().zip(&y).map(|(a, c)| ((*a as f64 - *c as f64) * scale) as f32).collect())
        })()
        .and_then(|d| w.write(i, &d));
        if let Err(e) = r {
            w.abandon();
            return Err(e);
        }
        progress(i + 1, names.len(), n);
    }
    let mut config = t.config.clone();
    config[TASK_VECTOR_KEY] = serde_json::json!({"base": base, "tuned": tuned, "scale": scale});
    config["torch_dtype"] = "float32".into();
    let mut files = vec![("config.json".to_string(), serde_json::to_vec_pretty(&config).expect("json"))];
    files.extend(super::model_tokenizer_files(&t)?);
    let readme = format!(
        "# task vector\n\n`{scale} * ({tuned} - {base})`, written by `instill task-vector`. Use it as a model in an `instill merge` YAML: its tensors are deltas over the merge's base_model.\n"
    );
    files.push(("README.md".into(), readme.into_bytes()));
    let bytes = w.finish(&files)?;
    Ok(Summary { method: "task_vector", tensors: names.len(), bytes, out: out.to_path_buf() })
}
