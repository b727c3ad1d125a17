//! Which files of a Hub repository a command needs: a model's config, tokenizer and
//! weights (or one `.gguf`), or a dataset's data files. Pure functions over file names.
use crate::{Error, Result};

/// Small files a model directory may carry besides its weights; all that exist are fetched.
pub const MODEL_AUX: &[&str] = &["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json"];

pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";

/// What to fetch for a model.
#[derive(Debug, PartialEq)]
pub enum ModelPlan {
    /// One GGUF file (its tokenizer and template are inside it).
    Gguf(String),
    /// The small files plus either the index (shards are read from it) or the weight files.
    Safetensors { aux: Vec<String>, index: Option<String>, weights: Vec<String> },
}

/// Decide the files of a model repo. `quant` (from `org/name:Q4_K_M`) or `gguf_file`
/// (`--gguf-file`) ask for a GGUF; otherwise safetensors win and a lone `.gguf` is taken.
pub fn model_plan(names: &[&str], quant: Option<&str>, gguf_file: Option<&str>, id: &str) -> Result<ModelPlan> {
    let ggufs: Vec<&str> = names.iter().copied().filter(|n| n.to_ascii_lowercase().ends_with(".gguf")).collect();
    if let Some(f) = gguf_file {
        return match names.iter().find(|n| **n == f || n.rsplit('/').next() == Some(f)) {
            Some(n) => Ok(ModelPlan::Gguf(n.to_string())),
            None => Err(Error::Input(format!("{id} has no file {f:?}; its GGUF files: {}", list(&ggufs)))),
        };
    }
    if let Some(q) = quant {
        return pick_gguf(&ggufs, q, id).map(ModelPlan::Gguf);
    }
    let st: Vec<String> = names.iter().filter(|n| !n.contains('/') && n.ends_with(".safetensors")).map(|n| n.to_string()).collect();
    let aux: Vec<String> = MODEL_AUX.iter().filter(|a| names.contains(a)).map(|a| a.to_string()).collect();
    if names.contains(&SAFETENSORS_INDEX) {
        return Ok(ModelPlan::Safetensors { aux, index: Some(SAFETENSORS_INDEX.into()), weights: vec![] });
    }
    if !st.is_empty() {
        // A single-file checkpoint next to other exports (consolidated.safetensors ...): the one transformers loads.
        let weights = if st.iter().any(|n| n == "model.safetensors") { vec!["model.safetensors".to_string()] } else { st };
        return Ok(ModelPlan::Safetensors { aux, index: None, weights });
    }
    match ggufs.as_slice() {
        [one] => Ok(ModelPlan::Gguf(one.to_string())),
        [] => Err(Error::Unsupported(format!("{id} has neither safetensors nor GGUF weights (instill reads those two; files: {})", list(names)))),
        _ => Err(Error::Input(format!("{id} has several GGUF files: pick one with {id}:QUANT (e.g. :Q4_K_M) or --gguf-file NAME: {}", list(&ggufs)))),
    }
}

/// The `.gguf` whose name holds `quant` (case-insensitive): one where it stands as a whole
/// token (`x.Q4_0.gguf`, not `x.Q4_0_4_4.gguf`) wins; otherwise it must be unambiguous.
pub fn pick_gguf(ggufs: &[&str], quant: &str, id: &str) -> Result<String> {
    let q = quant.to_ascii_lowercase();
    let base = |n: &str| n.rsplit('/').next().unwrap_or(n).to_ascii_lowercase();
    let contains: Vec<&str> = ggufs.iter().copied().filter(|n| base(n).contains(&q)).collect();
    let token = |n: &str| {
        let b = base(n);
        b.match_indices(&q).any(|(i, _)| {
            let before = b[..i].chars().next_back();
            let after = b[i + q.len()..].chars().next();
            let sep = |c: Option<char>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            sep(before) && sep(after)
        })
    };
    let exact: Vec<&str> = contains.iter().copied().filter(|n| token(n)).collect();
    match (exact.as_slice(), contains.as_slice()) {
        ([one], _) | ([], [one]) => Ok(one.to_string()),
        (_, []) => Err(Error::Input(format!("{id} has no GGUF file matching {quant:?}; its GGUF files: {}", list(ggufs)))),
        _ => Err(Error::Input(format!("{id}: {quant:?} matches several GGUF files, name one with --gguf-file: {}", list(&contains)))),
    }
}

const DATA_EXTS: &[&str] = &[".jsonl", ".json", ".ndjson", ".parquet", ".jsonl.gz", ".json.gz"];
/// Files `datasets` treats as metadata, not data.
const METADATA: &[&str] = &["dataset_info.json", "dataset_infos.json", "dataset_dict.json", "state.json"];
const TRAIN: &[&str] = &["train", "training"];
const OTHER_SPLITS: &[&str] = &["test", "testing", "eval", "evaluation", "validation", "valid", "dev", "val"];

fn words(name: &str) -> Vec<String> {
    name.to_ascii_lowercase().split(|c: char| "-._ /".contains(c) || c.is_ascii_digit()).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// A dataset repo's train files, as `datasets` picks them for a repo without a loading
/// script or config: files whose name or folder names the train split (`train.jsonl`,
/// `data/train-00000-of-00002.parquet`); with no split names at all, every data file.
/// Returns the files and a few words on why.
pub fn dataset_files(names: &[&str], id: &str) -> Result<(Vec<String>, &'static str)> {
    let data: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !n.split('/').any(|part| part.starts_with('.')))
        .filter(|n| DATA_EXTS.iter().any(|e| n.to_ascii_lowercase().ends_with(e)))
        .filter(|n| !METADATA.contains(&n.rsplit('/').next().unwrap_or(n)))
        .collect();
    let has = |n: &str, keys: &[&str]| words(n).iter().any(|w| keys.contains(&w.as_str()));
    let train: Vec<String> = data.iter().filter(|n| has(n, TRAIN)).map(|n| n.to_string()).collect();
    if !train.is_empty() {
        return Ok((sorted(train), "the train split"));
    }
    if data.is_empty() {
        return Err(Error::Input(format!("dataset {id} has no JSON, JSONL or Parquet files (files: {})", list(names))));
    }
    if data.iter().any(|n| has(n, OTHER_SPLITS)) {
        return Err(Error::Input(format!("dataset {id} has no train split; name a file as hf://datasets/{id}/FILE: {}", list(&data))));
    }
    Ok((sorted(data.iter().map(|n| n.to_string()).collect()), "every data file (no split names)"))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    let shown: Vec<&str> = names.iter().copied().take(20).collect();
    let more = if names.len() > 20 { format!(" and {} more", names.len() - 20) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_quant_pick() {
        let g = ["m.Q4_0.gguf", "m.Q4_0_4_4.gguf", "m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "sub/m-q8_0.gguf"];
        assert_eq!(pick_gguf(&g, "q4_k_m", "o/m").unwrap(), "m-Q4_K_M.gguf");
        assert_eq!(pick_gguf(&g, "Q4_0", "o/m").unwrap(), "m.Q4_0.gguf");
        assert_eq!(pick_gguf(&g, "Q8_0", "o/m").unwrap(), "sub/m-q8_0.gguf");
        let e = pick_gguf(&g, "Q4_K", "o/m").unwrap_err().to_string();
        assert!(e.contains("m-Q4_K_M.gguf") && e.contains("m-Q4_K_S.gguf") && e.contains("--gguf-file"), "{e}");
        assert!(pick_gguf(&g, "Q5_K_M", "o/m").unwrap_err().to_string().contains("no GGUF file matching"));
    }

    #[test]
    fn model_plans() {
        let st = ["config.json", "model.safetensors", "consolidated.safetensors", "tokenizer.json", "README.md", "onnx/model.onnx"];
        let p = model_plan(&st, None, None, "o/m").unwrap();
        assert_eq!(p, ModelPlan::Safetensors { aux: vec!["config.json".into(), "tokenizer.json".into()], index: None, weights: vec!["model.safetensors".into()] });
        let sharded = ["config.json", SAFETENSORS_INDEX, "model-00001-of-00002.safetensors"];
        assert!(matches!(model_plan(&sharded, None, None, "o/m").unwrap(), ModelPlan::Safetensors { index: Some(_), .. }));
        let gg = ["a.Q4_K_M.gguf", "a.Q8_0.gguf"];
        assert!(model_plan(&gg, None, None, "o/m").unwrap_err().to_string().contains(":QUANT"));
        assert_eq!(model_plan(&gg, None, Some("a.Q8_0.gguf"), "o/m").unwrap(), ModelPlan::Gguf("a.Q8_0.gguf".into()));
        assert!(model_plan(&["pytorch_model.bin"], None, None, "o/m").is_err());
    }

    #[test]
    fn dataset_picks() {
        let (f, _) = dataset_files(&["README.md", "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet", "data/test-00000-of-00001.parquet"], "o/d").unwrap();
        assert_eq!(f, ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]);
        let (f, _) = dataset_files(&["alpaca_data.json", ".gitattributes", "dataset_info.json"], "o/d").unwrap();
        assert_eq!(f, ["alpaca_data.json"]);
        assert!(dataset_files(&["test.jsonl", "validation.jsonl"], "o/d").unwrap_err().to_string().contains("no train split"));
    }
}
