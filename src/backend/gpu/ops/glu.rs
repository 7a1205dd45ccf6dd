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
    let name = match kind {
        GluKind::SwiGlu => SWIGLU_F32,
        GluKind::GeGlu => GEGLU_F32,
    };
    let k = dev.kernel(&GLU, name)?;
    let blocks = count.div_ceil(256).min(65535) as u32;
    let p = GluParams {
        gate: gate.ptr(),
        up: up.ptr(),
        out: out.ptr(),
        count: count as u64,
    };
    // SAFETY: lengths checked above; GluParams mirrors the kernel's struct.
    unsafe { dev.launch_params(&k, LaunchConfig::linear(blocks, 256), &p) }
}
