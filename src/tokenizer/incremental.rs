//! Incremental detokenization that never emits a broken UTF-8 character.

use super::Tokenizer;

/// Turns a stream of token ids into text, holding back the bytes of a character that is split
/// across tokens (e.g. an emoji made of four `<0xNN>` byte tokens) until it is complete.
///
/// Pieces are emitted exactly as [`Tokenizer::token_bytes`] renders them, with no stripping: for
/// SentencePiece vocabularies the first generated token keeps its leading space (`▁there` ->
/// `" there"`), which is how llama.cpp prints a generation after the prompt. Bytes that can never
/// form a valid character are emitted as U+FFFD as soon as that is certain.
#[derive(Debug, Default, Clone)]
pub struct IncrementalDecoder {
    pending: Vec<u8>,
}

impl IncrementalDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds token `id` and returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.pending.extend_from_slice(tok.token_bytes(id));
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    // The prefix up to `valid` is valid UTF-8 by the error's contract.
                    out.push_str(&String::from_utf8_lossy(&self.pending[start..valid]));
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = valid + n;
                        }
                        None => {
                            // An incomplete character at the end: keep it for the next token.
                            start = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Whatever is still held back, decoded lossily; the decoder is empty afterwards.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}
