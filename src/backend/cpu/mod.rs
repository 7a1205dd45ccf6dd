//! The CPU backend: f32 activations in `Vec`s, weights used in place from the memory-mapped
//! file, an F16 paged KV cache; rayon for threads. One file per op family.

mod argmax;
mod attention;
mod elementwise;
mod embedding;
mod glu;
mod matmul;
mod rms_norm;
mod rope;
mod softmax;

use half::f16;

use super::{AttnParams, Backend, GluKind, HostBytes, RopeParams};
use crate::model::{Batch, BLOCK_SIZE};
use crate::quant::GgmlType;
use crate::{Error, Result};

/// An f32 matrix `[rows, cols]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTensor {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

impl CpuTensor {
    fn check(&self, rows: usize, cols: usize, what: &str) -> Result<()> {
        if self.rows != rows || self.cols != cols {
            return Err(Error::InvalidInput(format!(
                "{what}: shape [{}, {}], expected [{rows}, {cols}]",
                self.rows, self.cols
            )));
        }
        Ok(())
    }
}

/// A weight `[rows, cols]` in its GGUF type, borrowed from its owner.
pub struct CpuWeight {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    bytes: HostBytes,
}

impl CpuWeight {
    /// The weight's bytes (`rows * row_bytes`).
    pub fn bytes(&self) -> &[u8] {
        (*self.bytes).as_ref()
    }
}

/// One layer's K or V cache: `[n_blocks, BLOCK_SIZE, n_kv_heads, head_dim]` F16.
#[derive(Debug, Clone)]
pub struct CpuKv {
    pub data: Vec<f16>,
    pub n_blocks: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl CpuKv {
    /// Row length of one token slot.
    fn slot_len(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

/// The slot index (block * BLOCK_SIZE + offset) of position `pos` of sequence `seq`.
fn slot_of(batch: &Batch, seq: usize, pos: usize, n_blocks: usize) -> Result<usize> {
    let s = batch
        .seqs
        .get(seq)
        .ok_or_else(|| Error::InvalidInput(format!("batch: sequence index {seq} out of range")))?;
    let block = *s.block_table.get(pos / BLOCK_SIZE).ok_or_else(|| {
        Error::InvalidInput(format!(
            "batch: position {pos} beyond block table of {} blocks",
            s.block_table.len()
        ))
    })? as usize;
    if block >= n_blocks {
        return Err(Error::InvalidInput(format!(
            "batch: block id {block} >= KV cache blocks {n_blocks}"
        )));
    }
    Ok(block * BLOCK_SIZE + pos % BLOCK_SIZE)
}

/// The CPU backend. Threads are rayon's global pool (set it up before use to choose them).
#[derive(Debug, Clone)]
pub struct CpuBackend {
    threads: usize,
}

impl CpuBackend {
    /// A backend using rayon's current pool.
    pub fn new() -> Self {
        CpuBackend {
            threads: rayon::current_num_threads(),
        }
    }
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Weight = CpuWeight;
    type Kv = CpuKv;

    fn name(&self) -> String {
        "CPU".into()
    }

    fn threads(&self) -> usize {
        self.threads
    }

    fn weight(
        &self,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: HostBytes,
    ) -> Result<CpuWeight> {
        let row_bytes = ty.row_bytes(cols as u64).ok_or_else(|| {
            Error::Model(format!(
                "weight row of {cols} elements is not a whole number of {ty} blocks"
            ))
        })?;
        let need = (row_bytes as usize).checked_mul(rows);
        let have = (*bytes).as_ref().len();
        if need != Some(have) {
            return Err(Error::Model(format!(
                "weight [{rows}, {cols}] {ty} needs {need:?} bytes, got {have}"
            )));
        }
        Ok(CpuWeight {
            ty,
            rows,
            cols,
            bytes,
        })
    }

    fn weight_shape(&self, w: &CpuWeight) -> (GgmlType, usize, usize) {
        (w.ty, w.rows, w.cols)
    }

    fn tensor(&self, data: &[f32], rows: usize, cols: usize) -> Result<CpuTensor> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::InvalidInput(format!(
                "tensor [{rows}, {cols}] from {} values",
                data.len()
            )));
        }
        Ok(CpuTensor {
            data: data.to_vec(),
            rows,
            cols,
        })
    }

    fn shape(&self, t: &CpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn to_host(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.data.clone())
    }

    fn kv_alloc(&self, n_blocks: usize, n_kv_heads: usize, head_dim: usize) -> Result<CpuKv> {
        let n = n_blocks
            .checked_mul(BLOCK_SIZE * n_kv_heads)
            .and_then(|n| n.checked_mul(head_dim))
            .ok_or_else(|| {
                Error::InvalidInput(format!("KV cache of {n_blocks} blocks overflows"))
            })?;
        Ok(CpuKv {
            data: vec![f16::ZERO; n],
            n_blocks,
            n_kv_heads,
            head_dim,
        })
    }

    fn embedding(&self, table: &CpuWeight, tokens: &[u32]) -> Result<CpuTensor> {
        embedding::embedding(table, tokens)
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        let mut out = x.clone();
        rms_norm::rms_norm_in_place(&mut out, w, eps)?;
        Ok(out)
    }

    fn add_rms_norm(
        &self,
        x: &mut CpuTensor,
        delta: &CpuTensor,
        w: &CpuTensor,
        eps: f32,
    ) -> Result<CpuTensor> {
        elementwise::add(x, delta)?;
        self.rms_norm(x, w, eps)
    }

    fn matmul(&self, w: &CpuWeight, x: &CpuTensor) -> Result<CpuTensor> {
        matmul::matmul(w, x)
    }

    fn add(&self, x: &mut CpuTensor, y: &CpuTensor) -> Result<()> {
        elementwise::add(x, y)
    }

    fn add_bias(&self, x: &mut CpuTensor, b: &CpuTensor) -> Result<()> {
        elementwise::add_bias(x, b)
    }

    fn scale(&self, x: &mut CpuTensor, s: f32) -> Result<()> {
        x.data.iter_mut().for_each(|v| *v *= s);
        Ok(())
    }

    fn softcap(&self, x: &mut CpuTensor, cap: f32) -> Result<()> {
        elementwise::softcap(&mut x.data, cap);
        Ok(())
    }

    fn rope(&self, x: &mut CpuTensor, positions: &[u32], p: &RopeParams) -> Result<()> {
        rope::rope(x, positions, p)
    }

    fn kv_store(&self, cache: &mut CpuKv, x: &CpuTensor, batch: &Batch) -> Result<()> {
        let n = batch.n_tokens();
        x.check(n, cache.slot_len(), "kv_store input")?;
        let len = cache.slot_len();
        for i in 0..n {
            let seq = batch.seq_of_token[i] as usize;
            let slot = slot_of(batch, seq, batch.positions[i] as usize, cache.n_blocks)?;
            let dst = &mut cache.data[slot * len..(slot + 1) * len];
            for (d, s) in dst.iter_mut().zip(&x.data[i * len..(i + 1) * len]) {
                *d = f16::from_f32(*s);
            }
        }
        Ok(())
    }

    fn attention(
        &self,
        q: &CpuTensor,
        k: &CpuKv,
        v: &CpuKv,
        batch: &Batch,
        p: &AttnParams,
    ) -> Result<CpuTensor> {
        attention::attention(q, k, v, batch, p)
    }

    fn glu(&self, gate: &CpuTensor, up: &CpuTensor, kind: GluKind) -> Result<CpuTensor> {
        glu::glu(gate, up, kind)
    }

    fn softmax(&self, x: &mut CpuTensor) -> Result<()> {
        softmax::softmax_rows(x);
        Ok(())
    }

    fn argmax(&self, x: &CpuTensor) -> Result<Vec<u32>> {
        Ok(argmax::argmax_rows(x))
    }

    fn get_rows(&self, x: &CpuTensor, rows: &[u32]) -> Result<CpuTensor> {
        let mut data = Vec::with_capacity(rows.len() * x.cols);
        for &r in rows {
            let r = r as usize;
            if r >= x.rows {
                return Err(Error::InvalidInput(format!(
                    "get_rows: row {r} of a tensor with {} rows",
                    x.rows
                )));
            }
            data.extend_from_slice(&x.data[r * x.cols..(r + 1) * x.cols]);
        }
        Ok(CpuTensor {
            data,
            rows: rows.len(),
            cols: x.cols,
        })
    }
}
