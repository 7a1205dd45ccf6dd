//! Typed entries of the GPU ops: each checks shapes and buffer lengths, picks grid and block
//! (the launcher) and launches the kernel of `kernels/<family>.cu`. Only these are public.

pub mod glu;

use super::{GpuBuffer, GpuElem};
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
#[allow(dead_code)]
pub(crate) fn dim(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v)
        .map_err(|_| Error::Gpu(format!("{what} = {v} exceeds the 32-bit kernel limit")))
}
