//! Decoding: sampling rules and (batched, streaming) generation with a KV cache.
pub mod best_of;
pub mod generate;
pub mod sampler;

pub use generate::{generate, FinishReason, GenerateOptions, Generation};
pub use sampler::{Sampler, SamplingParams};
