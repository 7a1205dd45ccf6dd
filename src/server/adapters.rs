//! The real tokenizer and model behind the engine's and server's traits.

use crate::backend::Backend;
use crate::engine::{StepModel, TextDecoder, Vocab};
use crate::model::{Batch, KvCache, Model};
use crate::tokenizer::{EncodeOptions, IncrementalDecoder, Tokenizer};
use crate::Result;
use std::sync::Arc;

use super::ServeTokenizer;

/// A GGUF tokenizer as the engine's [`Vocab`] and the server's [`ServeTokenizer`].
pub struct GgufTokenizer(pub Arc<Tokenizer>);

struct Decoder {
    tok: Arc<Tokenizer>,
    inner: IncrementalDecoder,
}

impl TextDecoder for Decoder {
    fn push(&mut self, id: u32) -> String {
        self.inner.push(&self.tok, id)
    }
    fn finish(&mut self) -> String {
        self.inner.finish()
    }
}

impl Vocab for GgufTokenizer {
    fn n_vocab(&self) -> usize {
        self.0.vocab_size()
    }
    fn is_eog(&self, id: u32) -> bool {
        self.0.is_eog(id)
    }
    fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.0.token_bytes(id).to_vec()
    }
    fn decoder(&self) -> Box<dyn TextDecoder> {
        Box::new(Decoder {
            tok: self.0.clone(),
            inner: IncrementalDecoder::new(),
        })
    }
}

impl ServeTokenizer for GgufTokenizer {
    fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        self.0.encode(
            text,
            EncodeOptions {
                add_special,
                parse_special,
            },
        )
    }
    fn decode(&self, ids: &[u32]) -> String {
        self.0.decode(ids)
    }
    fn bos_text(&self) -> String {
        self.0
            .bos()
            .and_then(|b| self.0.token_text(b))
            .unwrap_or("")
            .to_string()
    }
    fn eos_text(&self) -> String {
        self.0
            .eos()
            .and_then(|b| self.0.token_text(b))
            .unwrap_or("")
            .to_string()
    }
}

/// A loaded model with its paged KV cache, steppable by the engine.
pub struct LoadedModel<B: Backend> {
    model: Model<B>,
    kv: KvCache<B>,
    n_ctx: usize,
}

impl<B: Backend> LoadedModel<B> {
    /// Allocates a KV cache of `n_blocks` blocks for `model`.
    pub fn new(model: Model<B>, n_blocks: usize, n_ctx: usize) -> Result<Self> {
        let kv = model.new_kv_cache(n_blocks)?;
        Ok(LoadedModel { model, kv, n_ctx })
    }
}

impl<B: Backend> StepModel for LoadedModel<B> {
    fn forward(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        self.model.forward(batch, &mut self.kv)
    }
    fn n_vocab(&self) -> usize {
        self.model.config().n_vocab
    }
    fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    fn n_kv_blocks(&self) -> usize {
        self.kv.n_blocks
    }
}
