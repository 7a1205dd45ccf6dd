//! One error type for the whole library. Every message names the offending file, field and value.

use thiserror::Error;

/// The library's error. Messages are one line and name what is wrong.
#[derive(Debug, Error)]
pub enum Error {
    /// A malformed or unsupported GGUF file.
    #[error("invalid GGUF: {0}")]
    Gguf(String),
    /// A model whose metadata or tensors do not fit a supported architecture.
    #[error("unsupported model: {0}")]
    Model(String),
    /// Tokenizer construction or use failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A quantization format problem (unknown type, bad length).
    #[error("quant: {0}")]
    Quant(String),
    /// A GPU driver, compiler or kernel failure.
    #[error("gpu: {0}")]
    Gpu(String),
    /// Sampling failed (e.g. NaN logits).
    #[error("sampler: {0}")]
    Sampler(String),
    /// Invalid user input (arguments, request fields).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An I/O error with the path involved.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
