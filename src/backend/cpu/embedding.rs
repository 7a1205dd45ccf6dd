//! Embedding lookup from a (possibly quantized) table.

use super::{CpuTensor, CpuWeight};
use crate::{Error, Result};

/// Rows `tokens` of `table [n_vocab, n_embd]`, dequantized.
pub fn embedding(table: &CpuWeight, tokens: &[u32]) -> Result<CpuTensor> {
    let cols = table.cols;
    let row_bytes = table.bytes().len() / table.rows.max(1);
    let mut data = vec![0f32; tokens.len() * cols];
    for (dst, &t) in data.chunks_mut(cols.max(1)).zip(tokens) {
        let t = t as usize;
        if t >= table.rows {
            return Err(Error::InvalidInput(format!(
                "token id {t} outside the vocabulary of {}",
                table.rows
            )));
        }
        let src = &table.bytes()[t * row_bytes..(t + 1) * row_bytes];
        super::matmul::dequantize_row(table.ty, src, dst)?;
    }
    Ok(CpuTensor {
        data,
        rows: tokens.len(),
        cols,
    })
}
