//! Decoding: sampling rules, the logits seam and (batched, streaming) generation with a KV cache.
pub mod best_of;
pub mod generate;
pub mod jobs;
pub mod processor;
pub mod sampler;
pub mod steer;

pub use generate::{generate, FinishReason, GenerateOptions, Generation};
pub use processor::LogitsProcessor;
pub use sampler::{Sampler, SamplingParams};
