//! `x · Wᵀ` on quantized weights (the kernels live in `crate::quant`).

use super::{CpuTensor, CpuWeight};
use crate::{Error, Result};

pub use crate::quant::dequantize_row;

/// `x [n, cols] · wᵀ` -> `[n, rows]`.
pub fn matmul(w: &CpuWeight, x: &CpuTensor) -> Result<CpuTensor> {
    if x.cols != w.cols {
        return Err(Error::InvalidInput(format!(
            "matmul: input [{}, {}] for weight [{}, {}]",
            x.rows, x.cols, w.rows, w.cols
        )));
    }
    let mut out = vec![0f32; x.rows * w.rows];
    crate::quant::matmul(w.ty, w.bytes(), w.rows, w.cols, &x.data, &mut out)?;
    Ok(CpuTensor {
        data: out,
        rows: x.rows,
        cols: w.rows,
    })
}
