//! RMSNorm fused with the residual add (`kernels/rms_norm.cu`).

use super::{check_len, dim};
use crate::backend::gpu::kernels::{RMS_NORM, RMS_NORM_F32, RMS_NORM_F32_R8};
use crate::backend::gpu::{GpuBuffer, GpuDevice, LaunchConfig};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy)]
struct RmsNormParams {
    x: u64,
    residual: u64,
    sum_out: u64,
    weight: u64,
    out: u64,
    n: u32,
    eps: f32,
}

/// For each of `rows` rows of `n`: `s = x + residual` (residual optional), `sum_out = s`
/// (optional; may be `x` or `residual` itself, for an in-place residual stream),
/// `out = s / sqrt(mean(s^2) + eps) * weight` (out may be `x`).
#[allow(clippy::too_many_arguments)]
pub fn rms_norm(
    dev: &GpuDevice,
    x: &GpuBuffer<f32>,
    residual: Option<&GpuBuffer<f32>>,
    sum_out: Option<&GpuBuffer<f32>>,
    weight: &GpuBuffer<f32>,
    out: &GpuBuffer<f32>,
    rows: usize,
    n: usize,
    eps: f32,
) -> Result<()> {
    check_len("rms_norm x", x, rows * n)?;
    check_len("rms_norm out", out, rows * n)?;
    check_len("rms_norm weight", weight, n)?;
    if let Some(r) = residual {
        check_len("rms_norm residual", r, rows * n)?;
    }
    if let Some(s) = sum_out {
        check_len("rms_norm sum_out", s, rows * n)?;
    }
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let threads: u32 = if n >= 1024 { 1024 } else { 256 };
    // Rows of up to 8 elements per thread stay in registers (`rms_norm_f32_r8`).
    let name = if n <= 8 * threads as usize {
        RMS_NORM_F32_R8
    } else {
        RMS_NORM_F32
    };
    let k = dev.kernel(&RMS_NORM, name)?;
    let p = RmsNormParams {
        x: x.ptr(),
        residual: residual.map_or(0, |b| b.ptr()),
        sum_out: sum_out.map_or(0, |b| b.ptr()),
        weight: weight.ptr(),
        out: out.ptr(),
        n: dim("n", n)?,
        eps,
    };
    // SAFETY: extents checked.
    unsafe { dev.launch_params(&k, LaunchConfig::linear(dim("rows", rows)?, threads), &p) }
}
