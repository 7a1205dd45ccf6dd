//! Typed entries of the GPU ops: each checks shapes and buffer lengths, picks grid and block
//! (the launcher) and launches the kernel of `kernels/<family>.cu`. Only these are public.

pub mod argmax;
pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod glu;
pub mod matmul;
pub mod matvec;
pub mod rms_norm;
pub mod rope;
pub mod softmax;

use super::{GpuBuffer, GpuElem};
use crate::quant::GgmlType;
use crate::{Error, Result};

/// Checks that `buf` holds at least `need` elements.
pub(crate) fn check_len<T: GpuElem>(what: &str, buf: &GpuBuffer<T>, need: usize) -> Result<()> {
    if buf.len() < need {
        return Err(Error::Gpu(format!(
            "{what}: buffer of {} elements, need {need}",
            buf.len()
        )));
    }
    Ok(())
}

/// Converts a dimension to the kernels' 32-bit index type.
pub(crate) fn dim(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v)
        .map_err(|_| Error::Gpu(format!("{what} = {v} exceeds the 32-bit kernel limit")))
}

/// A weight matrix of `rows` rows of `cols` elements stored in ggml type `ty` (GGUF's layout,
/// row-major), `offset` bytes into `data`.
#[derive(Clone, Copy)]
pub struct QMatrix<'a> {
    /// The bytes holding the matrix (possibly with other tensors).
    pub data: &'a GpuBuffer<u8>,
    /// Byte offset of row 0; a multiple of 16.
    pub offset: usize,
    /// Storage type.
    pub ty: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features (a multiple of the type's block size).
    pub cols: usize,
}

impl QMatrix<'_> {
    /// Bytes per row, checking that `cols` fits the type's blocks.
    pub fn row_bytes(&self) -> Result<usize> {
        self.ty
            .row_bytes(self.cols as u64)
            .map(|b| b as usize)
            .ok_or_else(|| {
                Error::Gpu(format!(
                    "{} matrix with {} columns: not a multiple of the block size {}",
                    self.ty,
                    self.cols,
                    self.ty.block_elems()
                ))
            })
    }

    /// Checks size, alignment and type; returns (device address of row 0, row bytes).
    pub(crate) fn checked(&self, what: &str) -> Result<(u64, usize)> {
        if super::kernels::type_suffix(self.ty).is_none() {
            return Err(Error::Gpu(format!(
                "{what}: no GPU kernel for type {}",
                self.ty
            )));
        }
        let rb = self.row_bytes()?;
        let need = self.offset.saturating_add(rb.saturating_mul(self.rows));
        if need > self.data.len() {
            return Err(Error::Gpu(format!(
                "{what}: {}x{} {} matrix at offset {} needs {need} bytes, buffer has {}",
                self.rows,
                self.cols,
                self.ty,
                self.offset,
                self.data.len()
            )));
        }
        if !self.offset.is_multiple_of(16) {
            return Err(Error::Gpu(format!(
                "{what}: matrix offset {} is not a multiple of 16",
                self.offset
            )));
        }
        Ok((self.data.ptr() + self.offset as u64, rb))
    }

    /// Whether the 32-element chunk kernels apply (float types need `cols % 32 == 0`).
    pub(crate) fn chunked(&self) -> bool {
        self.cols.is_multiple_of(32)
    }
}
