//! Reading the tokenizer metadata of a GGUF file.

use super::{Tokenizer, Vocab, SPECIAL_ID_KEYS};
use crate::{Error, Result};

impl Vocab {
    /// Reads the tokenizer metadata of a GGUF file (tensors are not needed).
    pub fn from_gguf(f: &crate::gguf::GgufFile) -> Result<Vocab> {
        let n_key = "tokenizer.ggml.tokens";
        let tokens = f.get_str_array(n_key)?.to_vec();
        let scores = match f.get("tokenizer.ggml.scores") {
            None => None,
            Some(_) => Some(match f.get_f32_array("tokenizer.ggml.scores") {
                Ok(s) => s.to_vec(),
                Err(e) => match f.get_i32_array("tokenizer.ggml.scores") {
                    Ok(s) => s.iter().map(|&x| x as f32).collect(),
                    Err(_) => return Err(e),
                },
            }),
        };
        let token_types = match f.get("tokenizer.ggml.token_type") {
            None => None,
            Some(_) => Some(f.get_i32_array("tokenizer.ggml.token_type")?.to_vec()),
        };
        let merges = match f.get("tokenizer.ggml.merges") {
            None => Vec::new(),
            Some(_) => f.get_str_array("tokenizer.ggml.merges")?.to_vec(),
        };
        let mut special_ids = Vec::new();
        for key in SPECIAL_ID_KEYS {
            if let Some(v) = f.get(key) {
                let i = v.as_integer().ok_or_else(|| {
                    Error::Tokenizer(format!("{key} = {} is not an integer", v.display_abbrev(4)))
                })?;
                let i = i64::try_from(i).map_err(|_| {
                    Error::Tokenizer(format!("{key} = {i} is outside the vocabulary"))
                })?;
                special_ids.push((key.to_string(), i));
            }
        }
        Ok(Vocab {
            model: f.get_str("tokenizer.ggml.model")?.to_string(),
            pre: f.get_str_opt("tokenizer.ggml.pre")?.map(str::to_string),
            name: f.get_str_opt("general.name")?.map(str::to_string),
            tokens,
            scores,
            token_types,
            merges,
            special_ids,
            add_bos: f.get_bool_opt("tokenizer.ggml.add_bos_token")?,
            add_eos: f.get_bool_opt("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: f.get_bool_opt("tokenizer.ggml.add_space_prefix")?,
        })
    }
}

impl Tokenizer {
    /// Builds the tokenizer of a GGUF file from its metadata (works on vocab-only files).
    pub fn from_gguf(f: &crate::gguf::GgufFile) -> Result<Tokenizer> {
        Self::from_vocab(Vocab::from_gguf(f)?)
    }
}
