//! Row softmax (`kernels/softmax.cu`).

use super::{check_len, dim};
use crate::backend::gpu::kernels::{SOFTMAX, SOFTMAX_F32};
use crate::backend::gpu::{GpuBuffer, GpuDevice, LaunchConfig};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy)]
struct SoftmaxParams {
    x: u64,
    y: u64,
    n: u32,
    scale: f32,
}

/// `y[r, :] = softmax(scale * x[r, :])` for `rows` rows of `n`; y may be x.
pub fn softmax(
    dev: &GpuDevice,
    x: &GpuBuffer<f32>,
    y: &GpuBuffer<f32>,
    rows: usize,
    n: usize,
    scale: f32,
) -> Result<()> {
    check_len("softmax x", x, rows * n)?;
    check_len("softmax y", y, rows * n)?;
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let k = dev.kernel(&SOFTMAX, SOFTMAX_F32)?;
    let p = SoftmaxParams {
        x: x.ptr(),
        y: y.ptr(),
        n: dim("n", n)?,
        scale,
    };
    // SAFETY: extents checked.
    unsafe { dev.launch_params(&k, LaunchConfig::linear(dim("rows", rows)?, 256), &p) }
}
