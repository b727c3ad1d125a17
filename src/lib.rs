//! instill: instruction-tune, merge, evaluate and serve language models.
//!
//! The modules mirror the pipeline (see ARCHITECTURE.md): `hub` finds model files,
//! `model` runs them, `tokenizer` turns text and chats into ids, `decode` generates.
pub mod bench;
pub mod data;
pub mod decode;
pub mod error;
pub mod eval;
pub mod export;
pub mod hub;
pub mod merge;
pub mod model;
pub mod peft;
pub mod plot;
pub mod progress;
pub mod serve;
pub mod synth;
pub mod tokenizer;
pub mod train;
pub use tokenizer::Tokenizer;

pub use error::{Error, Result};
pub use model::{CausalLm, LoadOptions};
