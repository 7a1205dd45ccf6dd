//! GGUF files: the validating, memory-mapped reader, metadata values, the writer and the
//! `info` summary.

pub mod info;
pub mod quantize;
mod reader;
mod value;
mod writer;

#[cfg(test)]
mod tests;

pub use reader::{GgufFile, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS};
pub use value::{type_id, type_name, Array, Value};
pub use writer::GgufWriter;
