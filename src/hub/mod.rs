//! Model registry, cache directory and fetching.
//!
//! `-m` accepts a registry id, a `.gguf` file, a Hugging Face model directory or a Hub
//! repo (`org/name[@revision][:QUANT]`); [`resolve`] turns any of them into a
//! [`ModelSource`]. Data paths may be `hf://datasets/org/name[/file]` ([`data_files`]).
mod fetch;
mod hf;
mod pick;
mod registry;

pub use fetch::{fetch, install_verified, sha256_file};
pub use registry::{find, ModelSpec, Part, REGISTRY};

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The model every command uses when none is named.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// Where a model's weights live on disk.
#[derive(Debug, Clone)]
pub enum ModelSource {
    Gguf(PathBuf),
    HfDir(PathBuf),
}

impl ModelSource {
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Gguf(p) | ModelSource::HfDir(p) => p,
        }
    }
}

/// `$INSTILL_HOME`, else `~/.cache/instill`.
pub fn cache_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("INSTILL_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("instill")
}

/// The cached path of a registry model (whether or not it has been fetched yet).
pub fn cached_path(spec: &ModelSpec) -> PathBuf {
    cache_dir().join("models").join(spec.id).join(spec.file_name)
}

/// Resolve a `-m` argument. Registry ids and Hub repos must already be in their caches unless `auto_fetch`.
pub fn resolve(model: &str, auto_fetch: bool) -> Result<ModelSource> {
    resolve_with(model, auto_fetch, None)
}

/// [`resolve`], with `gguf_file` naming the `.gguf` to take from a Hub repo (`--gguf-file`).
pub fn resolve_with(model: &str, auto_fetch: bool, gguf_file: Option<&str>) -> Result<ModelSource> {
    if let Some(f) = gguf_file {
        let (r, quant) = hf::parse_model(model).ok_or_else(|| Error::Input(format!("--gguf-file {f:?} picks a file in a Hugging Face Hub repo, and {model:?} is not one (org/name)")))?;
        if quant.is_some() {
            return Err(Error::Input(format!("{model:?}: give either a :QUANT suffix or --gguf-file, not both")));
        }
        return hf::model(&r, None, Some(f), !auto_fetch);
    }
    let p = Path::new(model);
    if p.is_dir() {
        return Ok(ModelSource::HfDir(p.to_path_buf()));
    }
    if p.is_file() {
        return Ok(ModelSource::Gguf(p.to_path_buf()));
    }
    if let Some(spec) = find(model) {
        let path = cached_path(spec);
        if path.is_file() {
            return Ok(ModelSource::Gguf(path));
        }
        if auto_fetch {
            return fetch(spec, false).map(ModelSource::Gguf);
        }
        return Err(Error::Input(format!("model {model:?} is not downloaded yet: run `instill fetch {model}`")));
    }
    if let Some((r, quant)) = hf::parse_model(model) {
        return hf::model(&r, quant.as_deref(), None, !auto_fetch);
    }
    if model.ends_with(".gguf") || model.contains('/') {
        return Err(Error::file(p, "no such file or directory"));
    }
    let ids: Vec<&str> = REGISTRY.iter().map(|s| s.id).collect();
    Err(Error::Input(format!("unknown model {model:?}: give a .gguf file, a Hugging Face model directory, a Hub repo (org/name), or one of: {}", ids.join(", "))))
}

/// The local files behind a data path: for `hf://datasets/org/name[@revision][/file]`, the
/// dataset's files, downloaded into the Hugging Face cache (once per process); None for
/// any other path.
pub fn data_files(path: &Path) -> Result<Option<Vec<PathBuf>>> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashMap<String, Vec<PathBuf>>>> = OnceLock::new();
    let Some(s) = path.to_str().filter(|s| s.starts_with("hf://")) else { return Ok(None) };
    let (r, file) = hf::parse_data(s).ok_or_else(|| Error::Input(format!("{s}: expected hf://datasets/org/name[@revision][/file]")))?;
    let seen = SEEN.get_or_init(Default::default);
    if let Some(files) = seen.lock().expect("hub data cache").get(s) {
        return Ok(Some(files.clone()));
    }
    let files = hf::dataset(&r, file.as_deref())?;
    seen.lock().expect("hub data cache").insert(s.to_string(), files.clone());
    Ok(Some(files))
}

/// Whether a data path names a Hub dataset (it is then not a local path to join or canonicalize).
pub fn is_hub_data(path: &Path) -> bool {
    path.to_str().is_some_and(|s| s.starts_with("hf://"))
}
