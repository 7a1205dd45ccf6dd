//! Qwen2 (the Qwen2.5 family). Its graph is llama's (see `llama.rs`); what differs is data:
//! Q/K/V projections carry biases (required here, as in llama.cpp), RoPE pairs are NeoX-style
//! (from [`Config`]), and the small models tie the output matrix to the token embeddings
//! (`output.weight` absent).

use crate::backend::Backend;
use crate::model::llama::Llama;
use crate::model::weights::Loader;
use crate::model::{Batch, Config, KvCache};
use crate::{Error, Result};

/// A loaded qwen2 model.
pub struct Qwen2<B: Backend>(Llama<B>);

impl<B: Backend> Qwen2<B> {
    /// Loads the weights of `config` through `l`.
    pub fn load(l: &mut Loader<B>, config: Config) -> Result<Self> {
        for il in 0..config.n_layer {
            for t in ["attn_q.bias", "attn_k.bias", "attn_v.bias"] {
                let name = format!("blk.{il}.{t}");
                if !l.has(&name) {
                    return Err(Error::Model(format!("tensor '{name}' is missing")));
                }
            }
        }
        Ok(Qwen2(Llama::load(l, config)?))
    }

    /// The hyperparameters.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// Logits `[batch.logits_for.len(), n_vocab]` (row-major) for `batch`.
    pub fn forward(&self, be: &B, batch: &Batch, kv: &mut KvCache<B>) -> Result<B::Tensor> {
        self.0.forward(be, batch, kv)
    }
}
