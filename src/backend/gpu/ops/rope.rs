//! Rotary position embedding, normal and NeoX (`kernels/rope.cu`).

use super::{check_len, dim};
use crate::backend::gpu::kernels::{ROPE, ROPE_F32};
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
