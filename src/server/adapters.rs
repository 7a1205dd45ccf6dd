//! The real tokenizer and model behind the engine's and server's traits.

use crate::backend::Backend;
use crate::engine::sampling::sampling_params;
use crate::engine::{Draw, StepModel, TextDecoder, Vocab};
use crate::model::{Batch, KvCache, Model};
use crate::sampler::select::TokenSampler;
use crate::sampler::{SampleRow, SamplerChoice};
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

/// A loaded model with its paged KV cache, steppable by the engine; with a GPU sampler it draws
/// tokens on the device (only the ids come back to the host).
pub struct LoadedModel<B: Backend> {
    model: Model<B>,
    kv: KvCache<B>,
    n_ctx: usize,
    sampler: Option<TokenSampler>,
}

impl<B: Backend> LoadedModel<B> {
    /// Allocates a KV cache of `n_blocks` blocks for `model`; the engine samples host logits.
    pub fn new(model: Model<B>, n_blocks: usize, n_ctx: usize) -> Result<Self> {
        let kv = model.new_kv_cache(n_blocks)?;
        Ok(LoadedModel {
            model,
            kv,
            n_ctx,
            sampler: None,
        })
    }

    /// Samples with `choice` where the model runs: the GPU sampler on a GPU backend with `auto`
    /// or `gpu` (an error for `gpu` on the CPU); with `cpu` the engine samples host logits.
    pub fn with_sampler(mut self, choice: SamplerChoice) -> Result<Self> {
        let s = TokenSampler::new(self.model.backend(), choice)?;
        self.sampler = s.is_gpu().then_some(s);
        Ok(self)
    }
}

impl<B: Backend> StepModel for LoadedModel<B> {
    fn forward(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        self.model.forward(batch, &mut self.kv)
    }
    fn samples_on_device(&self) -> bool {
        self.sampler.is_some()
    }
    fn forward_sample(
        &mut self,
        batch: &Batch,
        draws: &[Draw],
        host_logits: bool,
    ) -> Result<(Vec<u32>, Option<Vec<f32>>)> {
        let Some(sampler) = self.sampler.as_mut() else {
            return Err(crate::Error::InvalidInput(
                "this model has no device sampler".into(),
            ));
        };
        let logits = self.model.forward_device(batch, &mut self.kv)?;
        let params: Vec<_> = draws
            .iter()
            .map(|d| sampling_params(d.spec, d.seed))
            .collect();
        let rows: Vec<SampleRow> = draws
            .iter()
            .zip(&params)
            .map(|(d, p)| SampleRow {
                params: p,
                recent: d.recent,
                seq_id: d.seq_id,
                step: d.step,
            })
            .collect();
        let be = self.model.backend();
        let tokens = sampler.sample(be, &logits, &rows)?;
        let host = if host_logits {
            Some(be.to_host(&logits)?)
        } else {
            None
        };
        Ok((tokens, host))
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
