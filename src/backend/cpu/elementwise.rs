//! Elementwise ops: residual add, bias add, soft-capping.

use super::CpuTensor;
use crate::{Error, Result};

/// `x += y`.
pub fn add(x: &mut CpuTensor, y: &CpuTensor) -> Result<()> {
    if x.rows != y.rows || x.cols != y.cols {
        return Err(Error::InvalidInput(format!(
            "add: [{}, {}] + [{}, {}]",
            x.rows, x.cols, y.rows, y.cols
        )));
    }
    x.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
    Ok(())
}

/// `x[i, :] += b[0, :]`.
pub fn add_bias(x: &mut CpuTensor, b: &CpuTensor) -> Result<()> {
    if b.rows != 1 || b.cols != x.cols {
        return Err(Error::InvalidInput(format!(
            "add_bias: bias [{}, {}] for rows of {}",
            b.rows, b.cols, x.cols
        )));
    }
    for row in x.data.chunks_mut(x.cols.max(1)) {
        row.iter_mut().zip(&b.data).for_each(|(a, b)| *a += b);
    }
    Ok(())
}

/// `x = cap * tanh(x / cap)` (as ggml: scale, tanh, scale).
pub fn softcap(x: &mut [f32], cap: f32) {
    let inv = 1.0 / cap;
    x.iter_mut().for_each(|v| *v = (*v * inv).tanh() * cap);
}
