//! Embedding lookup from a (quantized) table (`kernels/embedding.cu`).

use super::{check_len, dim, QMatrix};
use crate::backend::gpu::kernels::{self, EMBEDDING, EMBEDDING_PREFIX};
use crate::backend::gpu::{GpuBuffer, GpuDevice, LaunchConfig};
use crate::quant::GgmlType;
use crate::{Error, Result};

#[repr(C)]
#[derive(Clone, Copy)]
struct EmbeddingParams {
    table: u64,
    ids: u64,
    out: u64,
    row_bytes: u64,
    vocab: u32,
    cols: u32,
    scale: f32,
}

/// `out[t, :] = scale * table[ids[t], :]` for `t < tokens`. Ids live on the device (so the
/// lookup can be captured in a graph); an id outside the table yields a row of NaN.
pub fn embedding(
    dev: &GpuDevice,
    table: &QMatrix,
    ids: &GpuBuffer<u32>,
    out: &GpuBuffer<f32>,
    tokens: usize,
    scale: f32,
) -> Result<()> {
    let (tp, row_bytes) = table.checked("embedding")?;
    check_len("embedding ids", ids, tokens)?;
    check_len("embedding out", out, tokens * table.cols)?;
    if tokens == 0 {
        return Ok(());
    }
    let (name, threads) = if table.chunked() {
        (
            format!(
                "{EMBEDDING_PREFIX}_{}",
                kernels::type_suffix(table.ty).unwrap_or("?")
            ),
            128,
        )
    } else {
        match table.ty {
            GgmlType::F32 => (kernels::EMBEDDING_SCALAR_F32.to_string(), 256),
            GgmlType::F16 => (kernels::EMBEDDING_SCALAR_F16.to_string(), 256),
            t => {
                return Err(Error::Gpu(format!(
                    "embedding: {t} table with {} columns",
                    table.cols
                )))
            }
        }
    };
    let k = dev.kernel(&EMBEDDING, &name)?;
    let p = EmbeddingParams {
        table: tp,
        ids: ids.ptr(),
        out: out.ptr(),
        row_bytes: row_bytes as u64,
        vocab: dim("vocab", table.rows)?,
        cols: dim("cols", table.cols)?,
        scale,
    };
    // SAFETY: extents checked; ids are bounds-checked in the kernel.
    unsafe {
        dev.launch_params(
            &k,
            LaunchConfig::linear(dim("tokens", tokens)?, threads),
            &p,
        )
    }
}
