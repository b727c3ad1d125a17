//! Typed library errors. Every variant renders as one line a user can act on.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem with a named file (missing, truncated, wrong format, bad hash ...).
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    /// The input is valid on disk but not something we can run (unknown arch, quant type ...).
    #[error("{0}")]
    Unsupported(String),
    /// Bad user input (prompt too long, bad option value ...).
    #[error("{0}")]
    Input(String),
    #[error("download failed: {0}")]
    Download(String),
    #[error("tensor error: {}", first_line(.0))]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File { path: path.into(), msg: msg.into() }
    }
}

/// The message without the backtrace candle appends when RUST_BACKTRACE is set.
pub fn first_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}
