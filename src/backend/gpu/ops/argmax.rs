//! Row argmax (`kernels/argmax.cu`): greedy sampling on the device.

use super::{check_len, dim};
use crate::backend::gpu::kernels::{ARGMAX, ARGMAX_F32};
use crate::backend::gpu::{GpuBuffer, GpuDevice, LaunchConfig};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy)]
struct ArgmaxParams {
    x: u64,
    out: u64,
    n: u32,
}

/// `out[r]` = first index of the largest value of row `r` (`rows` rows of `n`).
pub fn argmax(
    dev: &GpuDevice,
    x: &GpuBuffer<f32>,
    out: &GpuBuffer<u32>,
    rows: usize,
    n: usize,
) -> Result<()> {
    check_len("argmax x", x, rows * n)?;
    check_len("argmax out", out, rows)?;
    if rows == 0 {
        return Ok(());
    }
    let k = dev.kernel(&ARGMAX, ARGMAX_F32)?;
    let p = ArgmaxParams {
        x: x.ptr(),
        out: out.ptr(),
        n: dim("n", n)?,
    };
    // SAFETY: extents checked.
    unsafe { dev.launch_params(&k, LaunchConfig::linear(dim("rows", rows)?, 1024), &p) }
}
