//! The real tokenizer and model behind the engine's and server's traits.

use crate::engine::{TextDecoder, Vocab};
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
