//! Quantized matrix x matrix for prompt processing: `Y[t, r] = X[t, :] . W[r, :] (+ bias[r])`
//! (`kernels/matmul.cu`, the portable tiled kernel), and dequantization to F16.

use super::{check_len, dim, QMatrix};
use crate::backend::gpu::kernels::{self, DEQUANT_F16_PREFIX, MATMUL, MATMUL_PREFIX};
use crate::backend::gpu::{GpuBuffer, GpuDevice, LaunchConfig};
use crate::{Error, Result};

#[repr(C)]
#[derive(Clone, Copy)]
struct MatmulParams {
    w: u64,
    x: u64,
    bias: u64,
    y: u64,
    row_bytes: u64,
    rows: u32,
    cols: u32,
    tokens: u32,
    y_stride: u32,
}

/// `Y[t, r] = sum_k X[t, k] W[r, k] (+ bias[r])`; X is `[tokens, cols]`, Y `[tokens, rows]`.
/// Falls back to [`super::matvec::matvec`] for float matrices whose rows are not a multiple
/// of 32.
pub fn matmul(
    dev: &GpuDevice,
    w: &QMatrix,
    x: &GpuBuffer<f32>,
    bias: Option<&GpuBuffer<f32>>,
    y: &GpuBuffer<f32>,
    tokens: usize,
) -> Result<()> {
    let (wp, row_bytes) = w.checked("matmul")?;
    if !w.chunked() {
        return super::matvec::matvec(dev, w, x, bias, y, tokens);
    }
    check_len("matmul x", x, tokens * w.cols)?;
    check_len("matmul y", y, tokens * w.rows)?;
    if let Some(b) = bias {
        check_len("matmul bias", b, w.rows)?;
    }
    if tokens == 0 || w.rows == 0 {
        return Ok(());
    }
    let name = format!(
        "{MATMUL_PREFIX}_{}",
        kernels::type_suffix(w.ty).unwrap_or("?")
    );
    let k = dev.kernel(&MATMUL, &name)?;
    let p = MatmulParams {
        w: wp,
        x: x.ptr(),
        bias: bias.map_or(0, |b| b.ptr()),
        y: y.ptr(),
        row_bytes: row_bytes as u64,
        rows: dim("rows", w.rows)?,
        cols: dim("cols", w.cols)?,
        tokens: dim("tokens", tokens)?,
        y_stride: dim("rows", w.rows)?,
    };
    let gy = tokens.div_ceil(64);
    if gy > 65535 {
        return Err(Error::Gpu(format!("matmul of {tokens} tokens: too many")));
    }
    let cfg = LaunchConfig {
        grid: (dim("blocks", w.rows.div_ceil(64))?, gy as u32, 1),
        block: (256, 1, 1),
        shared_mem: 0,
    };
    // SAFETY: extents checked above; params mirror the kernel struct.
    unsafe { dev.launch_params(&k, cfg, &p) }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DequantParams {
    w: u64,
    out: u64,
    row_bytes: u64,
    rows: u32,
    cols: u32,
}

/// Dequantizes the whole matrix to F16 into `out` (`[rows, cols]`, bit patterns of f16).
pub fn dequantize_f16(dev: &GpuDevice, w: &QMatrix, out: &GpuBuffer<half::f16>) -> Result<()> {
    let (wp, row_bytes) = w.checked("dequantize")?;
    if !w.chunked() {
        return Err(Error::Gpu(format!(
            "dequantize: {} columns is not a multiple of 32",
            w.cols
        )));
    }
    check_len("dequantize out", out, w.rows * w.cols)?;
    let chunks = w.rows * w.cols / 32;
    if chunks == 0 {
        return Ok(());
    }
    let name = format!(
        "{DEQUANT_F16_PREFIX}_{}",
        kernels::type_suffix(w.ty).unwrap_or("?")
    );
    let k = dev.kernel(&MATMUL, &name)?;
    let p = DequantParams {
        w: wp,
        out: out.ptr(),
        row_bytes: row_bytes as u64,
        rows: dim("rows", w.rows)?,
        cols: dim("cols", w.cols)?,
    };
    // SAFETY: extents checked above.
    unsafe {
        dev.launch_params(
            &k,
            LaunchConfig::linear(dim("blocks", chunks.div_ceil(256))?, 256),
            &p,
        )
    }
}
