//! Model architectures (one file each) and the batch description every forward pass takes.
//!
//! The KV cache is paged: keys and values live in fixed-size blocks of [`BLOCK_SIZE`] token
//! slots, and each sequence has a block table mapping its logical block `pos / BLOCK_SIZE` to a
//! physical block id. `generate` uses one sequence; the server's scheduler packs many.

pub mod batch;
pub mod kv_cache;

pub use batch::{Batch, SeqSlot, BLOCK_SIZE};
pub use kv_cache::KvCache;
