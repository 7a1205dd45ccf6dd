//! The reader's source files only (not src/gguf/mod.rs, whose writer and quantizer need more
//! crates), at the same module paths as in the library.

#[path = "../../../src/gguf/info.rs"]
pub mod info;
#[path = "../../../src/gguf/reader.rs"]
mod reader;
#[path = "../../../src/gguf/value.rs"]
mod value;

pub use reader::GgufFile;
