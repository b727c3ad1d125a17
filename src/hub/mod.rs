//! Model registry, cache directory and fetching.
//!
//! `-m` accepts a registry id, a `.gguf` file or a Hugging Face model directory;
//! [`resolve`] turns any of them into a [`ModelSource`].
mod fetch;
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

/// Resolve a `-m` argument. Registry ids must already be fetched unless `auto_fetch`.
pub fn resolve(model: &str, auto_fetch: bool) -> Result<ModelSource> {
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
    if model.ends_with(".gguf") || model.contains('/') {
        return Err(Error::file(p, "no such file or directory"));
    }
    let ids: Vec<&str> = REGISTRY.iter().map(|s| s.id).collect();
    Err(Error::Input(format!("unknown model {model:?}: give a .gguf file, a Hugging Face model directory, or one of: {}", ids.join(", "))))
}
