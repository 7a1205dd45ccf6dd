//! rocmforge: an LLM inference engine for GGUF models on AMD and NVIDIA GPUs and the CPU.
//!
//! Data flow: GGUF file -> [`gguf`] reader -> [`model`] config + weights on a [`backend`];
//! prompt -> [`tokenizer`] -> ids -> forward -> logits -> [`sampler`] -> token -> detokenizer.

pub mod backend;
pub mod cli;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod kv_cache;
pub mod model;
pub mod quant;
pub mod sampler;
pub mod server;
pub mod tokenizer;

pub use error::{Error, Result};
