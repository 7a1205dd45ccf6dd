//! Quantized matrix x vector(s): `y[b, r] = W[r, :] . x[b, :] (+ bias[r])` (`kernels/matvec.cu`).

use super::{check_len, dim, QMatrix};
use crate::backend::gpu::kernels::{self, MATVEC, MATVEC_PREFIX};
use crate::backend::gpu::{GpuBuffer, GpuDevice, LaunchConfig};
use crate::quant::GgmlType;
use crate::{Error, Result};

#[repr(C)]
#[derive(Clone, Copy)]
struct MatvecParams {
    w: u64,
    x: u64,
    bias: u64,
    y: u64,
    row_bytes: u64,
    rows: u32,
    cols: u32,
    x_stride: u32,
    y_stride: u32,
    rows_per_warp: u32,
}

/// `y[b, r] = sum_k W[r, k] x[b, k] (+ bias[r])` for `b < batch`; x is `[batch, cols]`, y is
/// `[batch, rows]`. Each weight is read once per vector; for many vectors use
/// [`super::matmul::matmul`].
pub fn matvec(
    dev: &GpuDevice,
    w: &QMatrix,
    x: &GpuBuffer<f32>,
    bias: Option<&GpuBuffer<f32>>,
    y: &GpuBuffer<f32>,
    batch: usize,
) -> Result<()> {
    let (wp, row_bytes) = w.checked("matvec")?;
    check_len("matvec x", x, batch * w.cols)?;
    check_len("matvec y", y, batch * w.rows)?;
    if let Some(b) = bias {
        check_len("matvec bias", b, w.rows)?;
    }
    if batch == 0 || w.rows == 0 {
        return Ok(());
    }
    if batch > 65535 {
        return Err(Error::Gpu(format!("matvec batch {batch} exceeds 65535")));
    }
    let name = if w.chunked() {
        format!(
            "{MATVEC_PREFIX}_{}",
            kernels::type_suffix(w.ty).unwrap_or("?")
        )
    } else {
        match w.ty {
            GgmlType::F32 => kernels::MATVEC_SCALAR_F32.to_string(),
            GgmlType::F16 => kernels::MATVEC_SCALAR_F16.to_string(),
            GgmlType::BF16 => kernels::MATVEC_SCALAR_BF16.to_string(),
            _ => {
                return Err(Error::Gpu(format!(
                    "matvec: {} with {} columns",
                    w.ty, w.cols
                )))
            }
        }
    };
    let k = dev.kernel(&MATVEC, &name)?;
    let warp = dev.info().warp_size as usize;
    // A warp computes MV_ROWS (4) rows in the chunked kernel, 1 in the element kernel. Small
    // matrices get blocks of 4 warps so that the rows spread over more multiprocessors.
    // Measured on the H100: 4 rows per warp cut 4096x4096 Q4_K from 19.9 to 14.7 us but doubled
    // 896x896 Q8_0 (2.9 -> 5.2 us, too few warps); so 4 from 4096 rows up.
    let rows_per_warp = if w.chunked() && w.rows >= 4096 { 4 } else { 1 };
    let mps = (dev.info().multiprocessors as usize).max(1);
    let threads = if w.rows / (rows_per_warp * 256 / warp) < 2 * mps {
        128
    } else {
        256
    };
    let rows_per_block = rows_per_warp * threads / warp;
    let p = MatvecParams {
        w: wp,
        x: x.ptr(),
        bias: bias.map_or(0, |b| b.ptr()),
        y: y.ptr(),
        row_bytes: row_bytes as u64,
        rows: dim("rows", w.rows)?,
        cols: dim("cols", w.cols)?,
        x_stride: dim("cols", w.cols)?,
        y_stride: dim("rows", w.rows)?,
        rows_per_warp: rows_per_warp as u32,
    };
    let cfg = LaunchConfig {
        grid: (
            dim("blocks", w.rows.div_ceil(rows_per_block))?,
            batch as u32,
            1,
        ),
        block: (threads as u32, 1, 1),
        shared_mem: 0,
    };
    // SAFETY: matrix, x, y and bias extents checked above; params mirror the kernel struct.
    unsafe { dev.launch_params(&k, cfg, &p) }
}
