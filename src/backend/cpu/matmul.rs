//! `x · Wᵀ` on quantized weights (the kernels live in `crate::quant`).

use half::f16;
use rayon::prelude::*;

use super::{CpuTensor, CpuWeight};
use crate::quant::GgmlType;
use crate::{Error, Result};

/// Dequantizes one row. Stand-in for `crate::quant::dequantize_row` (F32/F16 only).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    match ty {
        GgmlType::F32 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        _ => return Err(Error::Quant(format!("dequantize: {ty} not supported yet"))),
    }
    Ok(())
}

/// `x [n, cols] · wᵀ` -> `[n, rows]`.
pub fn matmul(w: &CpuWeight, x: &CpuTensor) -> Result<CpuTensor> {
    if x.cols != w.cols {
        return Err(Error::InvalidInput(format!(
            "matmul: input [{}, {}] for weight [{}, {}]",
            x.rows, x.cols, w.rows, w.cols
        )));
    }
    let mut out = vec![0f32; x.rows * w.rows];
    match w.ty {
        GgmlType::F32 => {
            let wb = w.bytes();
            let cols = w.cols;
            // out is [n, rows]; compute column-wise over weight rows in parallel.
            let mut out_t = vec![0f32; w.rows * x.rows];
            out_t
                .par_chunks_mut(x.rows.max(1))
                .enumerate()
                .for_each(|(r, o)| {
                    let row: Vec<f32> = wb[r * cols * 4..(r + 1) * cols * 4]
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    for (t, o) in o.iter_mut().enumerate() {
                        let xr = &x.data[t * cols..(t + 1) * cols];
                        *o = row.iter().zip(xr).map(|(a, b)| a * b).sum();
                    }
                });
            for r in 0..w.rows {
                for t in 0..x.rows {
                    out[t * w.rows + r] = out_t[r * x.rows + t];
                }
            }
        }
        ty => return Err(Error::Quant(format!("matmul: {ty} not supported yet"))),
    }
    Ok(CpuTensor {
        data: out,
        rows: x.rows,
        cols: w.rows,
    })
}
