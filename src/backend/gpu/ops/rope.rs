//! Rotary position embedding, normal and NeoX (`kernels/rope.cu`).

use super::attention::{check_kv, KvIndex, PagedKv};
use super::{check_len, dim};
use crate::backend::gpu::kernels::{QKV_ROPE_STORE_F32, ROPE, ROPE_F32};
use crate::backend::gpu::{GpuBuffer, GpuDevice, LaunchConfig};
use crate::{Error, Result};

/// Which elements rotate together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeMode {
    /// Pairs (2i, 2i+1): Llama.
    Normal,
    /// Pairs (i, i + rot_dim/2): Qwen2, Gemma (NeoX style).
    Neox,
}

/// The rotation's shape and frequencies.
#[derive(Debug, Clone, Copy)]
pub struct RopeConfig {
    /// Heads per token.
    pub heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Rotated elements per head (even, at most head_dim).
    pub rot_dim: usize,
    /// Pairing.
    pub mode: RopeMode,
    /// Frequency base (10000, 1000000).
    pub base: f32,
    /// Multiplies every angle (1 / linear scaling factor).
    pub freq_scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RopeParams {
    x: u64,
    positions: u64,
    freq_factors: u64,
    heads: u32,
    head_dim: u32,
    rot_dim: u32,
    neox: u32,
    base: f32,
    freq_scale: f32,
}

/// Rotates `x` (`[tokens, heads, head_dim]`) in place by each token's position.
/// `freq_factors` (`[rot_dim/2]`) divides the angles (Llama 3 scaling), when given.
pub fn rope(
    dev: &GpuDevice,
    cfg: &RopeConfig,
    x: &GpuBuffer<f32>,
    positions: &GpuBuffer<u32>,
    freq_factors: Option<&GpuBuffer<f32>>,
    tokens: usize,
) -> Result<()> {
    if !cfg.rot_dim.is_multiple_of(2) || cfg.rot_dim > cfg.head_dim {
        return Err(Error::Gpu(format!(
            "rope: rot_dim {} must be even and at most head_dim {}",
            cfg.rot_dim, cfg.head_dim
        )));
    }
    check_len("rope x", x, tokens * cfg.heads * cfg.head_dim)?;
    check_len("rope positions", positions, tokens)?;
    if let Some(f) = freq_factors {
        check_len("rope freq_factors", f, cfg.rot_dim / 2)?;
    }
    if tokens == 0 || cfg.heads == 0 || cfg.rot_dim == 0 {
        return Ok(());
    }
    let k = dev.kernel(&ROPE, ROPE_F32)?;
    let p = RopeParams {
        x: x.ptr(),
        positions: positions.ptr(),
        freq_factors: freq_factors.map_or(0, |b| b.ptr()),
        heads: dim("heads", cfg.heads)?,
        head_dim: dim("head_dim", cfg.head_dim)?,
        rot_dim: dim("rot_dim", cfg.rot_dim)?,
        neox: (cfg.mode == RopeMode::Neox) as u32,
        base: cfg.base,
        freq_scale: cfg.freq_scale,
    };
    if cfg.heads > 65535 {
        return Err(Error::Gpu(format!("rope: {} heads", cfg.heads)));
    }
    let lc = LaunchConfig {
        grid: (dim("tokens", tokens)?, cfg.heads as u32, 1),
        block: (64, 1, 1),
        shared_mem: 0,
    };
    // SAFETY: extents checked.
    unsafe { dev.launch_params(&k, lc, &p) }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct QkvRopeStoreParams {
    q_src: u64,
    k_src: u64,
    v_src: u64,
    q_out: u64,
    k_cache: u64,
    v_cache: u64,
    positions: u64,
    seq_of_token: u64,
    block_tables: u64,
    freq_factors: u64,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    rot_dim: u32,
    neox: u32,
    max_blocks: u32,
    base: f32,
    freq_scale: f32,
    q_stride: u32,
    k_stride: u32,
    v_stride: u32,
}

/// The attention input step in one launch: `qkv` `[tokens, (n_heads + 2 n_kv_heads) * head_dim]`
/// (Q | K | V columns); Q heads rotated into `q_out` (`[tokens, n_heads * head_dim]`), K heads
/// rotated and V heads copied into the F16 caches (`[num_blocks, n_kv_heads, 16, head_dim]`) at
/// each token's slot. `cfg.heads` is the number of Q heads; K uses the same rotation.
#[allow(clippy::too_many_arguments)]
pub fn qkv_rope_store(
    dev: &GpuDevice,
    cfg: &RopeConfig,
    n_kv_heads: usize,
    qkv: &GpuBuffer<f32>,
    q_out: &GpuBuffer<f32>,
    caches: (&GpuBuffer<half::f16>, &GpuBuffer<half::f16>, usize),
    idx: &KvIndex,
    freq_factors: Option<&GpuBuffer<f32>>,
) -> Result<()> {
    let (d, t) = (cfg.head_dim, idx.tokens);
    let (qc, kc) = (cfg.heads * d, n_kv_heads * d);
    check_len("qkv", qkv, t * (qc + 2 * kc))?;
    let w = qc + 2 * kc;
    let src = [
        (qkv.ptr(), w),
        (qkv.ptr_at(qc)?, w),
        (qkv.ptr_at(qc + kc)?, w),
    ];
    rope_store_launch(dev, cfg, n_kv_heads, src, q_out, caches, idx, freq_factors)
}

/// [`qkv_rope_store`] for separate products: `q` `[tokens, n_heads * head_dim]`, `k` and `v`
/// `[tokens, n_kv_heads * head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn rope_store(
    dev: &GpuDevice,
    cfg: &RopeConfig,
    n_kv_heads: usize,
    qkv: [&GpuBuffer<f32>; 3],
    q_out: &GpuBuffer<f32>,
    caches: (&GpuBuffer<half::f16>, &GpuBuffer<half::f16>, usize),
    idx: &KvIndex,
    freq_factors: Option<&GpuBuffer<f32>>,
) -> Result<()> {
    let (d, t) = (cfg.head_dim, idx.tokens);
    let (qc, kc) = (cfg.heads * d, n_kv_heads * d);
    check_len("rope_store q", qkv[0], t * qc)?;
    check_len("rope_store k", qkv[1], t * kc)?;
    check_len("rope_store v", qkv[2], t * kc)?;
    let src = [(qkv[0].ptr(), qc), (qkv[1].ptr(), kc), (qkv[2].ptr(), kc)];
    rope_store_launch(dev, cfg, n_kv_heads, src, q_out, caches, idx, freq_factors)
}

/// Launches `qkv_rope_store_f32` on Q, K and V rows at `src` (address, floats per token row),
/// whose extents the caller checked.
#[allow(clippy::too_many_arguments)]
fn rope_store_launch(
    dev: &GpuDevice,
    cfg: &RopeConfig,
    n_kv_heads: usize,
    src: [(u64, usize); 3],
    q_out: &GpuBuffer<f32>,
    caches: (&GpuBuffer<half::f16>, &GpuBuffer<half::f16>, usize),
    idx: &KvIndex,
    freq_factors: Option<&GpuBuffer<f32>>,
) -> Result<()> {
    let (k_cache, v_cache, num_blocks) = caches;
    let d = cfg.head_dim;
    if !cfg.rot_dim.is_multiple_of(2) || cfg.rot_dim > d {
        return Err(Error::Gpu(format!(
            "qkv_rope_store: rot_dim {} must be even and at most head_dim {d}",
            cfg.rot_dim
        )));
    }
    let t = idx.tokens;
    check_len("q_out", q_out, t * cfg.heads * d)?;
    let kv = PagedKv {
        k: k_cache,
        v: v_cache,
        num_blocks,
        n_kv_heads,
        head_dim: d,
    };
    check_kv(&kv, idx)?;
    if let Some(f) = freq_factors {
        check_len("rope freq_factors", f, cfg.rot_dim / 2)?;
    }
    let heads = cfg.heads + 2 * n_kv_heads;
    if t == 0 || heads == 0 {
        return Ok(());
    }
    if heads > 65535 {
        return Err(Error::Gpu(format!("qkv_rope_store: {heads} heads")));
    }
    let k = dev.kernel(&ROPE, QKV_ROPE_STORE_F32)?;
    let p = QkvRopeStoreParams {
        q_src: src[0].0,
        k_src: src[1].0,
        v_src: src[2].0,
        q_out: q_out.ptr(),
        k_cache: k_cache.ptr(),
        v_cache: v_cache.ptr(),
        positions: idx.positions.ptr(),
        seq_of_token: idx.seq_of_token.ptr(),
        block_tables: idx.block_tables.ptr(),
        freq_factors: freq_factors.map_or(0, |b| b.ptr()),
        n_heads: dim("n_heads", cfg.heads)?,
        n_kv_heads: dim("n_kv_heads", n_kv_heads)?,
        head_dim: dim("head_dim", d)?,
        rot_dim: dim("rot_dim", cfg.rot_dim)?,
        neox: (cfg.mode == RopeMode::Neox) as u32,
        max_blocks: dim("max_blocks", idx.max_blocks)?,
        base: cfg.base,
        freq_scale: cfg.freq_scale,
        q_stride: dim("q row stride", src[0].1)?,
        k_stride: dim("k row stride", src[1].1)?,
        v_stride: dim("v row stride", src[2].1)?,
    };
    let lc = LaunchConfig {
        grid: (dim("tokens", t)?, heads as u32, 1),
        block: (64, 1, 1),
        shared_mem: 0,
    };
    // SAFETY: extents checked (by the callers for the sources); block ids and positions are
    // validated by the backend's index.
    unsafe { dev.launch_params(&k, lc, &p) }
}
