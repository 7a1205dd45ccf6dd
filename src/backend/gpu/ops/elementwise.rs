//! Elementwise ops and row gathering (`kernels/elementwise.cu`).

use super::{check_len, dim};
use crate::backend::gpu::kernels::{
    ADD_BIAS_F32, ADD_F32, ELEMENTWISE, GET_ROWS_F32, SCALE_F32, SOFTCAP_F32,
};
use crate::backend::gpu::{GpuBuffer, GpuDevice, LaunchConfig};
use crate::{Error, Result};

#[repr(C)]
#[derive(Clone, Copy)]
struct EltParams {
    x: u64,
    y: u64,
    count: u64,
    cols: u32,
    s: f32,
}

/// An elementwise update of `x` in place.
#[derive(Debug, Clone, Copy)]
pub enum EltOp<'a> {
    /// `x += y` (y at least as long).
    Add(&'a GpuBuffer<f32>),
    /// `x[r, c] += b[c]`, rows of `cols`.
    AddBias(&'a GpuBuffer<f32>, usize),
    /// `x *= s`.
    Scale(f32),
    /// `x = cap * tanh(x / cap)`.
    Softcap(f32),
}

/// Applies `op` to the first `count` elements of `x`.
pub fn elementwise(dev: &GpuDevice, x: &GpuBuffer<f32>, count: usize, op: EltOp) -> Result<()> {
    check_len("elementwise x", x, count)?;
    let (name, y, cols, s) = match op {
        EltOp::Add(y) => {
            check_len("add y", y, count)?;
            (ADD_F32, y.ptr(), 1, 0.0)
        }
        EltOp::AddBias(b, cols) => {
            if cols == 0 || !count.is_multiple_of(cols) {
                return Err(Error::Gpu(format!(
                    "add_bias: {count} elements in rows of {cols}"
                )));
            }
            check_len("add_bias bias", b, cols)?;
            (ADD_BIAS_F32, b.ptr(), cols, 0.0)
        }
        EltOp::Scale(s) => (SCALE_F32, 0, 1, s),
        EltOp::Softcap(c) => {
            if c <= 0.0 || !c.is_finite() {
                return Err(Error::Gpu(format!("softcap: cap {c} must be positive")));
            }
            (SOFTCAP_F32, 0, 1, c)
        }
    };
    if count == 0 {
        return Ok(());
    }
    let k = dev.kernel(&ELEMENTWISE, name)?;
    let p = EltParams {
        x: x.ptr(),
        y,
        count: count as u64,
        cols: dim("cols", cols)?,
        s,
    };
    let blocks = count.div_ceil(256).min(65535) as u32;
    // SAFETY: lengths checked.
    unsafe { dev.launch_params(&k, LaunchConfig::linear(blocks, 256), &p) }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct GetRowsParams {
    x: u64,
    idx: u64,
    out: u64,
    rows: u32,
    cols: u32,
}

/// `out[i, :] = x[idx[i], :]` for `i < n` (x is `[rows, cols]`); an index past the rows gives NaN.
pub fn get_rows(
    dev: &GpuDevice,
    x: &GpuBuffer<f32>,
    rows: usize,
    cols: usize,
    idx: &GpuBuffer<u32>,
    n: usize,
    out: &GpuBuffer<f32>,
) -> Result<()> {
    check_len("get_rows x", x, rows * cols)?;
    check_len("get_rows idx", idx, n)?;
    check_len("get_rows out", out, n * cols)?;
    if n == 0 || cols == 0 {
        return Ok(());
    }
    let k = dev.kernel(&ELEMENTWISE, GET_ROWS_F32)?;
    let p = GetRowsParams {
        x: x.ptr(),
        idx: idx.ptr(),
        out: out.ptr(),
        rows: dim("rows", rows)?,
        cols: dim("cols", cols)?,
    };
    // SAFETY: lengths checked; indices checked in the kernel.
    unsafe { dev.launch_params(&k, LaunchConfig::linear(dim("n", n)?, 256), &p) }
}
