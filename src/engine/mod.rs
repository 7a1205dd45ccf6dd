//! The engine: one thread owns every request and the KV block allocation, fed by a channel.
//!
//! Each step the [`scheduler`] plans which tokens run (continuous batching, chunked prefill,
//! preemption), the [`runner`] turns the plan into one [`Batch`] and calls the model, and the
//! engine loop ([`core`]) samples a token for each sequence that reached its end, detokenizes it
//! incrementally, matches stop strings and streams [`Event`]s back to the request's receiver.
//! A request whose receiver is gone (client disconnected) is cancelled at the next step and its
//! blocks are freed.
//!
//! The model, the vocabulary and the sampler are reached through the small traits below, so the
//! scheduling logic is tested with deterministic doubles and the real ones are plugged in by
//! `rocmforge_cli serve`.

pub mod core;
pub mod metrics;
pub mod request;
pub mod runner;
pub mod sampling;
pub mod scheduler;
pub mod stop;

pub use self::core::{spawn, EngineConfig, EngineHandle, SubmitError};
pub use metrics::Metrics;
pub use request::{Event, FinishReason, GenRequest, SamplingSpec, TokenLogprob, Usage};

use crate::model::Batch;
use crate::Result;

/// A model the engine can step: one batched forward pass over a paged KV cache it owns.
pub trait StepModel {
    /// Runs `batch`, writing its keys and values into the blocks named by its block tables, and
    /// returns `[batch.logits_for.len(), n_vocab]` logits.
    fn forward(&mut self, batch: &Batch) -> Result<Vec<f32>>;
    /// Whether [`StepModel::forward_sample`] draws tokens where the logits are (the GPU
    /// sampler); when false the engine samples [`StepModel::forward`]'s host logits itself.
    fn samples_on_device(&self) -> bool {
        false
    }
    /// Runs `batch` and draws one token per logits row, `draws[i]` for row `i`, without copying
    /// the logits to the host; they come back too (`[rows, n_vocab]`) when `host_logits` (for
    /// log-probs).
    fn forward_sample(
        &mut self,
        _batch: &Batch,
        _draws: &[Draw],
        _host_logits: bool,
    ) -> Result<(Vec<u32>, Option<Vec<f32>>)> {
        Err(crate::Error::InvalidInput(
            "this model has no device sampler".into(),
        ))
    }
    /// Logits per token.
    fn n_vocab(&self) -> usize;
    /// Longest sequence (tokens) the model accepts.
    fn n_ctx(&self) -> usize;
    /// Physical KV blocks in its cache.
    fn n_kv_blocks(&self) -> usize;
}

/// Incremental, UTF-8-safe detokenization of one sequence.
pub trait TextDecoder: Send {
    /// Text completed by token `id` (whole characters only; may be empty).
    fn push(&mut self, id: u32) -> String;
    /// Whatever is still buffered at the end.
    fn finish(&mut self) -> String;
}

/// The vocabulary facts the engine needs.
pub trait Vocab: Send + Sync {
    /// Number of token ids.
    fn n_vocab(&self) -> usize;
    /// End-of-generation token.
    fn is_eog(&self, id: u32) -> bool;
    /// Raw bytes of a token (for log-probs).
    fn token_bytes(&self, id: u32) -> Vec<u8>;
    /// A fresh incremental decoder.
    fn decoder(&self) -> Box<dyn TextDecoder>;
}

/// Everything one draw depends on besides the logits.
#[derive(Debug, Clone, Copy)]
pub struct Draw<'a> {
    /// The request's settings.
    pub spec: &'a SamplingSpec,
    /// The random key (the user's seed, or one drawn for the request).
    pub seed: u64,
    /// The sequence's recent tokens (for penalties).
    pub recent: &'a [u32],
    /// 0 with a user seed (the draw depends on (seed, step) only), else the request id.
    pub seq_id: u64,
    /// Index of the token being generated.
    pub step: u64,
}

/// Everything one draw depends on.
#[derive(Debug, Clone, Copy)]
pub struct SampleArgs<'a> {
    /// The request's settings.
    pub spec: &'a SamplingSpec,
    /// The random key (the user's seed, or one drawn for the request).
    pub seed: u64,
    /// One row of logits.
    pub logits: &'a [f32],
    /// The sequence's recent tokens (for penalties).
    pub recent: &'a [u32],
    /// 0 with a user seed (the draw depends on (seed, step) only), else the request id.
    pub seq_id: u64,
    /// Index of the token being generated.
    pub step: u64,
}

/// Picks a token from logits.
pub trait TokenSampler: Send {
    /// One draw.
    fn sample(&mut self, args: &SampleArgs) -> Result<u32>;
}

#[cfg(test)]
pub(crate) mod tests;
