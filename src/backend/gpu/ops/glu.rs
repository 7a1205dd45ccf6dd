//! SwiGLU and GeGLU: `out = act(gate) * up`, elementwise (`kernels/glu.cu`).

use super::check_len;
use crate::backend::gpu::kernels::{GEGLU_F32, GLU, SWIGLU_F32};
use crate::backend::gpu::{GpuBuffer, GpuDevice, LaunchConfig};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy)]
struct GluParams {
    gate: u64,
    up: u64,
    out: u64,
    count: u64,
    n: u64,
    stride: u64,
}

/// The activation of a gated linear unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GluKind {
    /// SiLU(gate) * up (Llama, Qwen2).
    SwiGlu,
    /// GELU-tanh(gate) * up (Gemma).
    GeGlu,
}

/// `out[i] = act(gate[i]) * up[i]` for `i < count`.
pub fn glu(
    dev: &GpuDevice,
    kind: GluKind,
    gate: &GpuBuffer<f32>,
    up: &GpuBuffer<f32>,
    out: &GpuBuffer<f32>,
    count: usize,
) -> Result<()> {
    check_len("glu gate", gate, count)?;
    check_len("glu up", up, count)?;
    check_len("glu out", out, count)?;
    if count == 0 {
        return Ok(());
    }
    launch(dev, kind, gate.ptr(), up.ptr(), out, count, count, count)
}

/// `out[r, j] = act(gu[r, j]) * gu[r, n + j]` for `rows` rows: gate and up side by side in one
/// `[rows, 2n]` tensor (the product of concatenated gate and up weights).
pub fn glu_fused(
    dev: &GpuDevice,
    kind: GluKind,
    gu: &GpuBuffer<f32>,
    out: &GpuBuffer<f32>,
    rows: usize,
    n: usize,
) -> Result<()> {
    check_len("glu gate|up", gu, rows * 2 * n)?;
    check_len("glu out", out, rows * n)?;
    if rows * n == 0 {
        return Ok(());
    }
    let up = gu.ptr() + (n * std::mem::size_of::<f32>()) as u64;
    launch(dev, kind, gu.ptr(), up, out, rows * n, n, 2 * n)
}

#[allow(clippy::too_many_arguments)]
fn launch(
    dev: &GpuDevice,
    kind: GluKind,
    gate: u64,
    up: u64,
    out: &GpuBuffer<f32>,
    count: usize,
    n: usize,
    stride: usize,
) -> Result<()> {
    let name = match kind {
        GluKind::SwiGlu => SWIGLU_F32,
        GluKind::GeGlu => GEGLU_F32,
    };
    let k = dev.kernel(&GLU, name)?;
    let blocks = count.div_ceil(256).min(65535) as u32;
    let p = GluParams {
        gate,
        up,
        out: out.ptr(),
        count: count as u64,
        n: n as u64,
        stride: stride as u64,
    };
    // SAFETY: callers checked the extents; GluParams mirrors the kernel's struct.
    unsafe { dev.launch_params(&k, LaunchConfig::linear(blocks, 256), &p) }
}
