//! Attention over the paged F16 KV cache (`kernels/attention.cu`): cache writes, flash-style
//! attention for prefill and decode (causal or not, GQA, sliding window, soft-capping), and the
//! weighted sum of values as its own op.
//!
//! Cache layout, per layer and for K and V alike: `[num_blocks, n_kv_heads, 16, head_dim]` f16,
//! 16 = [`crate::model::BLOCK_SIZE`] token slots per block.

use super::{check_len, dim};
use crate::backend::gpu::kernels::{
    ATTENTION, ATTENTION_COMBINE, ATTENTION_F16KV, ATTENTION_TILED_D128, ATTENTION_TILED_D256,
    ATTENTION_TILED_D64, ATTENTION_VEC_D128, ATTENTION_VEC_D256, ATTENTION_VEC_D64, KV_STORE_F16,
    KV_WRITE_F16, WEIGHTED_V_F16KV,
};
use crate::backend::gpu::{GpuBuffer, GpuDevice, LaunchConfig};
use crate::model::BLOCK_SIZE;
use crate::{Error, Result};

/// Largest head dimension the kernels take.
pub const MAX_HEAD_DIM: usize = 256;

/// One layer's K and V caches.
#[derive(Clone, Copy)]
pub struct PagedKv<'a> {
    /// `[num_blocks, n_kv_heads, 16, head_dim]` keys.
    pub k: &'a GpuBuffer<half::f16>,
    /// Values, same layout.
    pub v: &'a GpuBuffer<half::f16>,
    /// Blocks in the cache.
    pub num_blocks: usize,
    /// KV heads.
    pub n_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
}

/// Where each token of a pass sits: device copies of the batch's tables.
#[derive(Clone, Copy)]
pub struct KvIndex<'a> {
    /// `[n_seqs, max_blocks]` physical block ids (every id < num_blocks: the KV manager's job).
    pub block_tables: &'a GpuBuffer<u32>,
    /// Columns of `block_tables`.
    pub max_blocks: usize,
    /// `[tokens]` sequence of each token.
    pub seq_of_token: &'a GpuBuffer<u32>,
    /// `[tokens]` position of each token.
    pub positions: &'a GpuBuffer<u32>,
    /// `[n_seqs]` KV length of each sequence after this pass.
    pub kv_lens: &'a GpuBuffer<u32>,
    /// Sequences.
    pub n_seqs: usize,
    /// Tokens in the pass.
    pub tokens: usize,
}

/// Attention variant.
#[derive(Debug, Clone, Copy)]
pub struct AttentionConfig {
    /// Query heads (a multiple of the KV heads).
    pub n_heads: usize,
    /// Multiplies q.k (usually 1/sqrt(head_dim)).
    pub scale: f32,
    /// Key j is visible to a token at position p only when j <= p.
    pub causal: bool,
    /// Sliding window: only keys with p - j < window (None: all).
    pub window: Option<u32>,
    /// Logit soft-capping: s = cap * tanh(s / cap) (Gemma 2).
    pub softcap: Option<f32>,
    /// Prefill-heavy passes may take the tiled kernel. Its float operations differ from the
    /// per-token kernel's, so a token's result would then depend on the rest of the pass; false
    /// keeps every token on the per-token kernel (batch invariance).
    pub tiled: bool,
}

/// Checks the caches and the index against each other and against their buffers.
pub(crate) fn check_kv(kv: &PagedKv, idx: &KvIndex) -> Result<()> {
    if kv.head_dim == 0 || kv.head_dim > MAX_HEAD_DIM {
        return Err(Error::Gpu(format!(
            "attention: head_dim {} not in 1..={MAX_HEAD_DIM}",
            kv.head_dim
        )));
    }
    let cache = kv.num_blocks * kv.n_kv_heads * BLOCK_SIZE * kv.head_dim;
    check_len("kv k cache", kv.k, cache)?;
    check_len("kv v cache", kv.v, cache)?;
    check_len(
        "block_tables",
        idx.block_tables,
        idx.n_seqs * idx.max_blocks,
    )?;
    check_len("seq_of_token", idx.seq_of_token, idx.tokens)?;
    check_len("positions", idx.positions, idx.tokens)?;
    check_len("kv_lens", idx.kv_lens, idx.n_seqs)?;
    if kv.n_kv_heads > 65535 {
        return Err(Error::Gpu(format!("{} kv heads", kv.n_kv_heads)));
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy)]
struct KvWriteParams {
    k: u64,
    v: u64,
    k_cache: u64,
    v_cache: u64,
    block_tables: u64,
    seq_of_token: u64,
    positions: u64,
    n_kv_heads: u32,
    head_dim: u32,
    max_blocks: u32,
}

/// Stores the pass's keys and values (`[tokens, n_kv_heads, head_dim]` f32) in the cache slots
/// of their positions, as f16.
pub fn kv_write(
    dev: &GpuDevice,
    kv: &PagedKv,
    idx: &KvIndex,
    k: &GpuBuffer<f32>,
    v: &GpuBuffer<f32>,
) -> Result<()> {
    check_kv(kv, idx)?;
    let n = idx.tokens * kv.n_kv_heads * kv.head_dim;
    check_len("kv_write k", k, n)?;
    check_len("kv_write v", v, n)?;
    if n == 0 {
        return Ok(());
    }
    let kern = dev.kernel(&ATTENTION, KV_WRITE_F16)?;
    let p = KvWriteParams {
        k: k.ptr(),
        v: v.ptr(),
        k_cache: kv.k.ptr(),
        v_cache: kv.v.ptr(),
        block_tables: idx.block_tables.ptr(),
        seq_of_token: idx.seq_of_token.ptr(),
        positions: idx.positions.ptr(),
        n_kv_heads: dim("n_kv_heads", kv.n_kv_heads)?,
        head_dim: dim("head_dim", kv.head_dim)?,
        max_blocks: dim("max_blocks", idx.max_blocks)?,
    };
    let lc = LaunchConfig {
        grid: (dim("tokens", idx.tokens)?, kv.n_kv_heads as u32, 1),
        block: (128, 1, 1),
        shared_mem: 0,
    };
    // SAFETY: buffer extents checked; block ids come from the KV manager.
    unsafe { dev.launch_params(&kern, lc, &p) }
}

/// Stores one tensor (`[tokens, n_kv_heads, head_dim]` f32) into one cache (`cache`, laid out
/// as [`PagedKv`]'s), as f16: [`kv_write`] for K or V alone.
pub fn kv_store(
    dev: &GpuDevice,
    cache: &GpuBuffer<half::f16>,
    kv_shape: (usize, usize, usize),
    idx: &KvIndex,
    x: &GpuBuffer<f32>,
) -> Result<()> {
    let (num_blocks, n_kv_heads, head_dim) = kv_shape;
    let kv = PagedKv {
        k: cache,
        v: cache,
        num_blocks,
        n_kv_heads,
        head_dim,
    };
    check_kv(&kv, idx)?;
    let n = idx.tokens * n_kv_heads * head_dim;
    check_len("kv_store x", x, n)?;
    if n == 0 {
        return Ok(());
    }
    let kern = dev.kernel(&ATTENTION, KV_STORE_F16)?;
    let p = KvWriteParams {
        k: x.ptr(),
        v: 0,
        k_cache: cache.ptr(),
        v_cache: 0,
        block_tables: idx.block_tables.ptr(),
        seq_of_token: idx.seq_of_token.ptr(),
        positions: idx.positions.ptr(),
        n_kv_heads: dim("n_kv_heads", n_kv_heads)?,
        head_dim: dim("head_dim", head_dim)?,
        max_blocks: dim("max_blocks", idx.max_blocks)?,
    };
    let lc = LaunchConfig {
        grid: (dim("tokens", idx.tokens)?, n_kv_heads as u32, 1),
        block: (128, 1, 1),
        shared_mem: 0,
    };
    // SAFETY: extents checked; block ids come from the KV manager.
    unsafe { dev.launch_params(&kern, lc, &p) }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct AttentionParams {
    q: u64,
    k_cache: u64,
    v_cache: u64,
    block_tables: u64,
    seq_of_token: u64,
    positions: u64,
    kv_lens: u64,
    out: u64,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    max_blocks: u32,
    causal: u32,
    window: u32,
    scale: f32,
    softcap: f32,
    tokens: u32,
    split_ml: u64,
    split_o: u64,
    counters: u64,
}

/// Key chunks per token of the per-token kernel (`ATT_MAX_CHUNKS` in `kernels/attention.cu`).
const MAX_CHUNKS: usize = 8;

/// Whether the per-token path takes `attention_vec_d*` where the head size allows
/// (`ROCMFORGE_ATT_VEC=0`: the older `attention_f16kv` + `attention_combine`, for comparisons).
fn vec_kernels() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("ROCMFORGE_ATT_VEC").as_deref() != Ok("0"))
}

/// The tiled prefill kernel serves passes with at least this many query tokens per sequence on
/// average (fewer: decode steps, where one block per (token, head) spreads the work wider).
pub const TILED_MIN_TOKENS_PER_SEQ: usize = 8;
/// Query tokens per block of the tiled kernel (`ATQ` in `kernels/attention.cu`).
const TILED_QUERIES: usize = 16;

/// `out[t, h, :] = softmax_j(q[t, h] . K[j]) V[j]` over the keys visible to token t
/// (`q` and `out` are `[tokens, n_heads, head_dim]`).
pub fn attention(
    dev: &GpuDevice,
    cfg: &AttentionConfig,
    kv: &PagedKv,
    idx: &KvIndex,
    q: &GpuBuffer<f32>,
    out: &GpuBuffer<f32>,
) -> Result<()> {
    check_kv(kv, idx)?;
    if kv.n_kv_heads == 0 || !cfg.n_heads.is_multiple_of(kv.n_kv_heads) {
        return Err(Error::Gpu(format!(
            "attention: {} heads not a multiple of {} kv heads",
            cfg.n_heads, kv.n_kv_heads
        )));
    }
    let n = idx.tokens * cfg.n_heads * kv.head_dim;
    check_len("attention q", q, n)?;
    check_len("attention out", out, n)?;
    if n == 0 {
        return Ok(());
    }
    if cfg.n_heads > 65535 {
        return Err(Error::Gpu(format!("attention: {} heads", cfg.n_heads)));
    }
    let mut p = AttentionParams {
        q: q.ptr(),
        k_cache: kv.k.ptr(),
        v_cache: kv.v.ptr(),
        block_tables: idx.block_tables.ptr(),
        seq_of_token: idx.seq_of_token.ptr(),
        positions: idx.positions.ptr(),
        kv_lens: idx.kv_lens.ptr(),
        out: out.ptr(),
        n_heads: dim("n_heads", cfg.n_heads)?,
        n_kv_heads: dim("n_kv_heads", kv.n_kv_heads)?,
        head_dim: dim("head_dim", kv.head_dim)?,
        max_blocks: dim("max_blocks", idx.max_blocks)?,
        causal: cfg.causal as u32,
        window: cfg.window.unwrap_or(0),
        scale: cfg.scale,
        softcap: cfg.softcap.unwrap_or(0.0),
        tokens: dim("tokens", idx.tokens)?,
        split_ml: 0,
        split_o: 0,
        counters: 0,
    };
    // Prefill: the tiled kernel (queries share each block of keys through shared memory).
    let tiled = match kv.head_dim {
        d if !d.is_multiple_of(16) => None,
        0..=64 => Some(ATTENTION_TILED_D64),
        65..=128 => Some(ATTENTION_TILED_D128),
        _ => Some(ATTENTION_TILED_D256),
    };
    let prefill_heavy = idx.tokens >= TILED_MIN_TOKENS_PER_SEQ * idx.n_seqs;
    if let Some(name) = tiled.filter(|_| cfg.tiled && prefill_heavy) {
        let kern = dev.kernel(&ATTENTION, name)?;
        let lc = LaunchConfig {
            grid: (
                dim("blocks", idx.tokens.div_ceil(TILED_QUERIES))?,
                cfg.n_heads as u32,
                1,
            ),
            block: (4 * TILED_QUERIES as u32, 1, 1),
            shared_mem: 0,
        };
        // SAFETY: as below; the kernel skips the grid's tokens past `tokens`.
        return unsafe { dev.launch_params(&kern, lc, &p) };
    }
    // Per token: each (token, head) split over up to MAX_CHUNKS chunks of keys whose size
    // follows the token's own visible length, then the chunks merged: by the last block of each
    // (token, head) where the vector kernel and the device's counters serve, else by a second
    // launch.
    let slots = idx.tokens * cfg.n_heads * MAX_CHUNKS;
    let scratch = dev.alloc_pooled::<f32>(slots * (kv.head_dim + 2))?;
    p.split_ml = scratch.ptr();
    p.split_o = scratch.ptr() + (slots * 2 * 4) as u64;
    let vec = match kv.head_dim {
        64 => Some(ATTENTION_VEC_D64),
        128 => Some(ATTENTION_VEC_D128),
        256 => Some(ATTENTION_VEC_D256),
        _ => None,
    }
    .filter(|_| vec_kernels());
    let kern = match vec {
        Some(name) => {
            p.counters = dev.zeroed_counters(idx.tokens * cfg.n_heads)?.unwrap_or(0);
            dev.kernel(&ATTENTION, name)?
        }
        None => dev.kernel(&ATTENTION, ATTENTION_F16KV)?,
    };
    let lc = LaunchConfig {
        grid: (
            dim("tokens", idx.tokens)?,
            cfg.n_heads as u32,
            MAX_CHUNKS as u32,
        ),
        block: (4 * dev.info().warp_size, 1, 1),
        shared_mem: 0,
    };
    // SAFETY: extents checked; positions < kv_len and block ids are the KV manager's contract;
    // the scratch holds tokens x heads x MAX_CHUNKS (max, sum) pairs, then as many head_dim
    // vectors; the counters (when set) hold tokens x heads zeros.
    unsafe { dev.launch_params(&kern, lc, &p)? };
    if p.counters == 0 {
        let combine = dev.kernel(&ATTENTION, ATTENTION_COMBINE)?;
        let lc = LaunchConfig {
            grid: (dim("tokens", idx.tokens)?, cfg.n_heads as u32, 1),
            block: (dim("threads", kv.head_dim.min(256))?, 1, 1),
            shared_mem: 0,
        };
        // SAFETY: as above; reads what the split kernel wrote (same stream, in order).
        unsafe { dev.launch_params(&combine, lc, &p)? };
    }
    // The scratch returns to the pool after the launches are queued; later users are ordered
    // after them.
    drop(scratch);
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy)]
struct WeightedVParams {
    w: u64,
    v_cache: u64,
    block_tables: u64,
    seq_of_token: u64,
    out: u64,
    n_keys: u32,
    w_stride: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    max_blocks: u32,
}

/// The attention weights x V product on its own: `out[t, h, :] = sum_{j < n_keys} w[t, h, j] V[j]`
/// with `w` `[tokens, n_heads, n_keys]` and V from token t's sequence in the cache.
pub fn weighted_v(
    dev: &GpuDevice,
    n_heads: usize,
    kv: &PagedKv,
    idx: &KvIndex,
    w: &GpuBuffer<f32>,
    n_keys: usize,
    out: &GpuBuffer<f32>,
) -> Result<()> {
    check_kv(kv, idx)?;
    if kv.n_kv_heads == 0 || !n_heads.is_multiple_of(kv.n_kv_heads) {
        return Err(Error::Gpu(format!(
            "weighted_v: {n_heads} heads not a multiple of {} kv heads",
            kv.n_kv_heads
        )));
    }
    if n_keys > idx.max_blocks * BLOCK_SIZE {
        return Err(Error::Gpu(format!(
            "weighted_v: {n_keys} keys exceed {} block-table columns",
            idx.max_blocks
        )));
    }
    check_len("weighted_v w", w, idx.tokens * n_heads * n_keys)?;
    check_len("weighted_v out", out, idx.tokens * n_heads * kv.head_dim)?;
    if idx.tokens == 0 || n_heads == 0 {
        return Ok(());
    }
    let kern = dev.kernel(&ATTENTION, WEIGHTED_V_F16KV)?;
    let p = WeightedVParams {
        w: w.ptr(),
        v_cache: kv.v.ptr(),
        block_tables: idx.block_tables.ptr(),
        seq_of_token: idx.seq_of_token.ptr(),
        out: out.ptr(),
        n_keys: dim("n_keys", n_keys)?,
        w_stride: dim("n_keys", n_keys)?,
        n_heads: dim("n_heads", n_heads)?,
        n_kv_heads: dim("n_kv_heads", kv.n_kv_heads)?,
        head_dim: dim("head_dim", kv.head_dim)?,
        max_blocks: dim("max_blocks", idx.max_blocks)?,
    };
    let lc = LaunchConfig {
        grid: (
            dim("tokens", idx.tokens)?,
            dim("n_heads", n_heads.min(65535))?,
            1,
        ),
        block: (128, 1, 1),
        shared_mem: 0,
    };
    // SAFETY: extents checked.
    unsafe { dev.launch_params(&kern, lc, &p) }
}
