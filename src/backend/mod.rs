//! The op set every model runs on, and its implementations (one directory per backend).
//!
//! A model is generic over `B: Backend` and monomorphized; the CLI picks the backend at run
//! time. Activations are `B::Tensor`s: f32 matrices `[rows, cols]` (row-major, one row per
//! token) resident on the device. Weights are `B::Weight`s: matrices `[rows, cols]` in their
//! GGUF quant type, resident on the device; `matmul` computes `x · Wᵀ` (llama.cpp's
//! `ggml_mul_mat(w, x)`). KV storage (`B::Kv`) is one layer's K or V cache, F16, paged:
//! `[n_blocks, BLOCK_SIZE, n_kv_heads, head_dim]`; a sequence's token at position `pos` lives at
//! `(block_table[pos / BLOCK_SIZE], pos % BLOCK_SIZE)`.
//!
//! Ops return `Result`: shape mismatches are errors, never panics. Host-side inputs (token ids,
//! positions, the [`Batch`]) are passed as slices; a GPU backend uploads what it needs.

pub mod cpu;
pub mod gpu;

use std::sync::Arc;

use crate::model::Batch;
use crate::quant::GgmlType;
use crate::Result;

/// Bytes in host memory shared with their owner (typically a memory-mapped GGUF file), so that
/// a CPU backend can use weights in place without copying them.
pub type HostBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// How rotary embedding pairs up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeKind {
    /// Adjacent pairs `(x[2i], x[2i+1])` (llama.cpp's `LLAMA_ROPE_TYPE_NORM`: llama).
    Normal,
    /// Pairs split by half the rotated dimensions `(x[i], x[i + n_rot/2])` (`NEOX`: qwen2, gemma3).
    Neox,
}

/// Rotary position embedding parameters of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeParams {
    pub kind: RopeKind,
    /// Number of heads in the tensor being rotated (its cols = n_heads * head_dim).
    pub n_heads: usize,
    pub head_dim: usize,
    /// Rotated dimensions per head (`rope.dimension_count`, <= head_dim).
    pub n_rot: usize,
    /// Frequency base (`rope.freq_base`, or the sliding-window base on SWA layers).
    pub freq_base: f32,
    /// Linear frequency scale (1 / `rope.scaling.factor`; 1.0 when unscaled).
    pub freq_scale: f32,
    /// Per-pair frequency divisors (`rope_freqs.weight`, Llama 3.1+), `[n_rot / 2]`.
    pub freq_factors: Option<Vec<f32>>,
}

/// Attention parameters of one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnParams {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies Q·K before the softmax.
    pub scale: f32,
    /// A key at position `j` is visible from a query at `p` only if `p - j < window`.
    pub window: Option<usize>,
    /// Attention logit soft-capping: `s = cap * tanh(s / cap)` (after `scale`).
    pub softcap: Option<f32>,
}

/// The gated linear unit of the feed-forward block: `act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GluKind {
    /// SiLU (llama, qwen2).
    SwiGlu,
    /// GELU, tanh approximation as llama.cpp's `ggml_gelu` (gemma3).
    GeGlu,
}

/// The operations a model needs. Shapes are `[rows, cols]`; `n` below is the number of tokens.
pub trait Backend: Send + Sync + Sized + 'static {
    /// An f32 activation matrix on the device.
    type Tensor: Send;
    /// A weight matrix in its GGUF type on the device.
    type Weight: Send + Sync;
    /// One layer's K or V cache on the device.
    type Kv: Send;

    /// A short name for reports ("CPU", "CUDA", ...).
    fn name(&self) -> String;
    /// Worker threads used on the host.
    fn threads(&self) -> usize;

    // ---- memory ----

    /// A weight `[rows, cols]` of type `ty` from its GGUF bytes (row-major, rows of `cols`
    /// elements as ggml stores them).
    fn weight(
        &self,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: HostBytes,
    ) -> Result<Self::Weight>;
    /// `(type, rows, cols)` of a weight.
    fn weight_shape(&self, w: &Self::Weight) -> (GgmlType, usize, usize);
    /// A tensor `[rows, cols]` holding `data` (row-major).
    fn tensor(&self, data: &[f32], rows: usize, cols: usize) -> Result<Self::Tensor>;
    /// `(rows, cols)` of a tensor.
    fn shape(&self, t: &Self::Tensor) -> (usize, usize);
    /// A tensor's contents copied to the host, row-major.
    fn to_host(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    /// One layer's K or V cache of `n_blocks` blocks, zero-filled.
    fn kv_alloc(&self, n_blocks: usize, n_kv_heads: usize, head_dim: usize) -> Result<Self::Kv>;

    // ---- ops ----

    /// Rows `tokens` of an embedding table `[n_vocab, n_embd]`, dequantized: `[n, n_embd]`.
    fn embedding(&self, table: &Self::Weight, tokens: &[u32]) -> Result<Self::Tensor>;
    /// RMS norm times `w` (`[1, d]`) over each group of `d` consecutive elements of each row of
    /// `x` (`d` = cols for a plain norm, head_dim for per-head Q/K norms).
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Tensor, eps: f32) -> Result<Self::Tensor>;
    /// `x += delta`, then returns `rms_norm(x) * w` (the residual add fused with the next norm).
    fn add_rms_norm(
        &self,
        x: &mut Self::Tensor,
        delta: &Self::Tensor,
        w: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor>;
    /// `x [n, cols] · wᵀ` -> `[n, rows]`.
    fn matmul(&self, w: &Self::Weight, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// `x [n, cols] · wᵀ (+ b)` -> `[n, rows]`, the bias (`[1, rows]`) added to every row; a
    /// GPU backend adds it in the product's kernel.
    fn matmul_bias(
        &self,
        w: &Self::Weight,
        x: &Self::Tensor,
        b: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor> {
        let mut y = self.matmul(w, x)?;
        if let Some(b) = b {
            self.add_bias(&mut y, b)?;
        }
        Ok(y)
    }
    /// Several products of one `x`, each `(w, b)` as in [`Backend::matmul_bias`]; a GPU backend
    /// prepares x once for all of them.
    fn matmul_bias_many(
        &self,
        ws: &[(&Self::Weight, Option<&Self::Tensor>)],
        x: &Self::Tensor,
    ) -> Result<Vec<Self::Tensor>> {
        ws.iter().map(|&(w, b)| self.matmul_bias(w, x, b)).collect()
    }
    /// `x += y` (same shape).
    fn add(&self, x: &mut Self::Tensor, y: &Self::Tensor) -> Result<()>;
    /// `x[i, :] += b[0, :]` for every row.
    fn add_bias(&self, x: &mut Self::Tensor, b: &Self::Tensor) -> Result<()>;
    /// `x *= s`.
    fn scale(&self, x: &mut Self::Tensor, s: f32) -> Result<()>;
    /// `x = cap * tanh(x / cap)`.
    fn softcap(&self, x: &mut Self::Tensor, cap: f32) -> Result<()>;
    /// Rotary embedding in place; `x` is `[n, n_heads * head_dim]`, `positions` `[n]`.
    fn rope(&self, x: &mut Self::Tensor, positions: &[u32], p: &RopeParams) -> Result<()>;
    /// Writes row `i` of `x` (`[n, n_kv_heads * head_dim]`) into the cache at token `i`'s slot
    /// (its sequence's block table at its position).
    fn kv_store(&self, cache: &mut Self::Kv, x: &Self::Tensor, batch: &Batch) -> Result<()>;
    /// Causal attention of `q` (`[n, n_heads * head_dim]`) over each token's sequence in the
    /// caches, positions `0..=pos` (and within `window`), GQA: query head `h` uses KV head
    /// `h / (n_heads / n_kv_heads)`. Returns `[n, n_heads * head_dim]`.
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Kv,
        v: &Self::Kv,
        batch: &Batch,
        p: &AttnParams,
    ) -> Result<Self::Tensor>;
    /// `act(gate) * up`, elementwise (same shapes).
    fn glu(&self, gate: &Self::Tensor, up: &Self::Tensor, kind: GluKind) -> Result<Self::Tensor>;
    /// `act(gu[:, :h]) * gu[:, h:]` for `gu` `[n, 2h]`: gate and up side by side (the product
    /// of concatenated gate and up weights). The default splits on the host.
    fn glu_fused(&self, gu: &Self::Tensor, kind: GluKind) -> Result<Self::Tensor> {
        let (n, w) = self.shape(gu);
        if w % 2 != 0 {
            return Err(crate::Error::InvalidInput(format!(
                "glu_fused: {w} columns is not gate|up"
            )));
        }
        let h = w / 2;
        let host = self.to_host(gu)?;
        let (mut g, mut u) = (Vec::with_capacity(n * h), Vec::with_capacity(n * h));
        for row in host.chunks_exact(w) {
            g.extend_from_slice(&row[..h]);
            u.extend_from_slice(&row[h..]);
        }
        self.glu(&self.tensor(&g, n, h)?, &self.tensor(&u, n, h)?, kind)
    }
    /// The attention input step of fused Q/K/V products: `qkv` is `[n, q_cols + 2 kv_cols]`
    /// (Q | K | V, `q_cols = rope_q.n_heads * head_dim`, `kv_cols = rope_k.n_heads * head_dim`).
    /// Rotates Q and K, writes K and V into the caches at the batch's slots, returns Q. The
    /// default splits on the host and calls `rope` and `kv_store`.
    fn qkv_rope_store(
        &self,
        qkv: &Self::Tensor,
        rope_q: &RopeParams,
        rope_k: &RopeParams,
        k_cache: &mut Self::Kv,
        v_cache: &mut Self::Kv,
        batch: &Batch,
    ) -> Result<Self::Tensor> {
        qkv_rope_store_split(self, qkv, rope_q, rope_k, k_cache, v_cache, batch)
    }
    /// The attention input step of separate Q, K and V products (`q` `[n, q_cols]`, `k` and
    /// `v` `[n, kv_cols]`): rotates Q and K, writes K and V into the caches at the batch's
    /// slots, returns Q. The default calls `rope` twice and `kv_store` twice.
    #[allow(clippy::too_many_arguments)]
    fn rope_store(
        &self,
        q: Self::Tensor,
        k: Self::Tensor,
        v: &Self::Tensor,
        rope_q: &RopeParams,
        rope_k: &RopeParams,
        k_cache: &mut Self::Kv,
        v_cache: &mut Self::Kv,
        batch: &Batch,
    ) -> Result<Self::Tensor> {
        rope_store_parts(self, q, k, v, (rope_q, rope_k), (k_cache, v_cache), batch)
    }
    /// Softmax of each row in place.
    fn softmax(&self, x: &mut Self::Tensor) -> Result<()>;
    /// Index of the largest element of each row (the first one on ties).
    fn argmax(&self, x: &Self::Tensor) -> Result<Vec<u32>>;
    /// The rows `rows` of `x`, in that order.
    fn get_rows(&self, x: &Self::Tensor, rows: &[u32]) -> Result<Self::Tensor>;

    // ---- passes ----

    /// Whether models should stack Q/K/V and gate/up weights into one product each (one
    /// launch instead of three or two on a GPU; the CPU keeps them apart).
    fn fuse_projections(&self) -> bool {
        false
    }

    /// An identity of a KV cache's storage (its device address on a GPU backend; 0 on a host
    /// backend), so that a captured pass is replayed only over the same caches.
    fn kv_id(&self, _kv: &Self::Kv) -> u64 {
        0
    }

    /// Runs one forward pass over `batch`: `f` calls the ops. A GPU backend stages the batch's
    /// index data once for all ops, and may capture a decode step as a graph and replay it for
    /// later passes of the same shape over the same caches (`kv_key`) instead of calling `f`.
    /// The tensor returned is valid until the next pass.
    fn forward_pass(
        &self,
        _batch: &Batch,
        _kv_key: u64,
        f: &mut dyn FnMut() -> Result<Self::Tensor>,
    ) -> Result<Self::Tensor> {
        f()
    }

    // ---- device access (GPU sampler) ----

    /// The GPU device this backend runs on; `None` for a host backend.
    fn gpu_device(&self) -> Option<&gpu::GpuDevice> {
        None
    }
    /// A tensor's device buffer (row-major, row stride = cols) on a GPU backend, so that the GPU
    /// sampler reads the logits in place; `None` for a host backend.
    fn gpu_buffer<'a>(&'a self, _t: &'a Self::Tensor) -> Option<&'a gpu::GpuBuffer<f32>> {
        None
    }
}

/// [`Backend::rope_store`] by its parts: `rope` on Q and K, `kv_store` of K and V.
pub fn rope_store_parts<B: Backend>(
    be: &B,
    q: B::Tensor,
    k: B::Tensor,
    v: &B::Tensor,
    rope: (&RopeParams, &RopeParams),
    caches: (&mut B::Kv, &mut B::Kv),
    batch: &Batch,
) -> Result<B::Tensor> {
    let (mut q, mut k) = (q, k);
    be.rope(&mut q, batch.positions, rope.0)?;
    be.rope(&mut k, batch.positions, rope.1)?;
    be.kv_store(caches.0, &k, batch)?;
    be.kv_store(caches.1, v, batch)?;
    Ok(q)
}

/// [`Backend::qkv_rope_store`] by its parts: split on the host, `rope`, `kv_store`.
pub fn qkv_rope_store_split<B: Backend>(
    be: &B,
    qkv: &B::Tensor,
    rope_q: &RopeParams,
    rope_k: &RopeParams,
    k_cache: &mut B::Kv,
    v_cache: &mut B::Kv,
    batch: &Batch,
) -> Result<B::Tensor> {
    let (n, w) = be.shape(qkv);
    let qc = rope_q.n_heads * rope_q.head_dim;
    let kc = rope_k.n_heads * rope_k.head_dim;
    if w != qc + 2 * kc {
        return Err(crate::Error::InvalidInput(format!(
            "qkv_rope_store: {w} columns for Q {qc} + K {kc} + V {kc}"
        )));
    }
    let host = be.to_host(qkv)?;
    let (mut q, mut k, mut v) = (
        Vec::with_capacity(n * qc),
        Vec::with_capacity(n * kc),
        Vec::with_capacity(n * kc),
    );
    for row in host.chunks_exact(w) {
        q.extend_from_slice(&row[..qc]);
        k.extend_from_slice(&row[qc..qc + kc]);
        v.extend_from_slice(&row[qc + kc..]);
    }
    let (q, k, v) = (
        be.tensor(&q, n, qc)?,
        be.tensor(&k, n, kc)?,
        be.tensor(&v, n, kc)?,
    );
    rope_store_parts(be, q, k, &v, (rope_q, rope_k), (k_cache, v_cache), batch)
}
