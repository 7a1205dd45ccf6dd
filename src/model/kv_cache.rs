//! The per-layer paged K/V storage a model's forward pass writes and reads.

use crate::backend::Backend;
use crate::Result;

/// K and V caches of every layer, `n_blocks` blocks of [`super::BLOCK_SIZE`] tokens each.
/// Which blocks belong to which sequence is the caller's business (block tables in the
/// [`super::Batch`]).
pub struct KvCache<B: Backend> {
    /// `[n_layer]` K caches.
    pub k: Vec<B::Kv>,
    /// `[n_layer]` V caches.
    pub v: Vec<B::Kv>,
    /// Blocks per layer.
    pub n_blocks: usize,
}

impl<B: Backend> KvCache<B> {
    /// Zero-filled caches for `n_layer` layers of `n_kv_heads x head_dim`.
    pub fn new(
        be: &B,
        n_layer: usize,
        n_blocks: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<Self> {
        let mut k = Vec::with_capacity(n_layer);
        let mut v = Vec::with_capacity(n_layer);
        for _ in 0..n_layer {
            k.push(be.kv_alloc(n_blocks, n_kv_heads, head_dim)?);
            v.push(be.kv_alloc(n_blocks, n_kv_heads, head_dim)?);
        }
        Ok(KvCache { k, v, n_blocks })
    }
}
