//! [`Backend`] on a GPU: weights and the F16 paged KV cache in device memory, activations in
//! pooled device buffers, every op a kernel of `kernels/`.
//!
//! The KV cache layout is the GPU kernels' own, `[n_blocks, n_kv_heads, 16, head_dim]` f16 (the
//! CPU's is `[n_blocks, 16, n_kv_heads, head_dim]`); nothing outside the backend sees it.
//! Host-side batch data (token ids, positions, block tables) is validated on the host, then
//! uploaded once per forward pass: the uploads are cached by content, so the layers of one pass
//! share them.

use std::sync::{Arc, Mutex};

use half::f16;

use super::ops::attention::{self, AttentionConfig, KvIndex, PagedKv};
use super::ops::elementwise::{self, EltOp};
use super::ops::{argmax, embedding, glu, matmul, matvec, rms_norm, rope, softmax, QMatrix};
use super::{GpuBuffer, GpuDevice};
use crate::backend::{AttnParams, Backend, GluKind, HostBytes, RopeKind, RopeParams};
use crate::model::{Batch, BLOCK_SIZE};
use crate::quant::GgmlType;
use crate::{Error, Result};

/// An f32 matrix `[rows, cols]` in device memory.
pub struct GpuTensor {
    /// The data, row-major.
    pub buf: GpuBuffer<f32>,
    /// Rows (tokens).
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

/// A weight matrix in its GGUF type, in device memory.
pub struct GpuWeight {
    /// The GGUF bytes.
    pub buf: GpuBuffer<u8>,
    /// Storage type.
    pub ty: GgmlType,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

impl GpuWeight {
    fn q(&self) -> QMatrix<'_> {
        QMatrix {
            data: &self.buf,
            offset: 0,
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// One layer's K or V cache: `[n_blocks, n_kv_heads, 16, head_dim]` f16.
pub struct GpuKv {
    /// The cache.
    pub buf: GpuBuffer<f16>,
    /// Blocks.
    pub n_blocks: usize,
    /// KV heads.
    pub n_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
}

/// A host vector and its device copy, reused while the contents stay the same.
type Cached = Option<(Vec<u32>, Arc<GpuBuffer<u32>>)>;
/// The same for f32 data.
type CachedF32 = Option<(Vec<f32>, Arc<GpuBuffer<f32>>)>;

/// The batch index uploaded for one forward pass.
struct IndexBufs {
    tables: Arc<GpuBuffer<u32>>,
    max_blocks: usize,
    seq_of_token: Arc<GpuBuffer<u32>>,
    positions: Arc<GpuBuffer<u32>>,
    kv_lens: Arc<GpuBuffer<u32>>,
}

/// The GPU backend: one device, its own context and stream.
pub struct GpuBackend {
    dev: GpuDevice,
    uploads: Mutex<[Cached; 5]>,
    freq_factors: Mutex<CachedF32>,
}

const SLOT_POSITIONS: usize = 0;
const SLOT_SEQ: usize = 1;
const SLOT_TABLES: usize = 2;
const SLOT_LENS: usize = 3;
const SLOT_MISC: usize = 4;

impl GpuBackend {
    /// A backend on an opened device.
    pub fn new(dev: GpuDevice) -> Self {
        Self {
            dev,
            uploads: Mutex::new(Default::default()),
            freq_factors: Mutex::new(None),
        }
    }

    /// The device.
    pub fn device(&self) -> &GpuDevice {
        &self.dev
    }

    fn out(&self, rows: usize, cols: usize) -> Result<GpuTensor> {
        Ok(GpuTensor {
            buf: self.dev.alloc_pooled(rows * cols)?,
            rows,
            cols,
        })
    }

    fn upload_cached(&self, slot: usize, data: &[u32]) -> Result<Arc<GpuBuffer<u32>>> {
        let mut ups = self
            .uploads
            .lock()
            .map_err(|_| Error::Gpu("upload cache poisoned".into()))?;
        if let Some((host, buf)) = &ups[slot] {
            if host.as_slice() == data {
                return Ok(buf.clone());
            }
        }
        let buf = Arc::new(self.dev.upload(data)?);
        ups[slot] = Some((data.to_vec(), buf.clone()));
        Ok(buf)
    }

    /// Validates the batch against a cache of `n_blocks` blocks and uploads its index.
    fn index(&self, batch: &Batch, n_blocks: usize) -> Result<IndexBufs> {
        let n = batch.n_tokens();
        if batch.positions.len() != n || batch.seq_of_token.len() != n {
            return Err(Error::InvalidInput(format!(
                "batch: {n} tokens but {} positions and {} sequence indices",
                batch.positions.len(),
                batch.seq_of_token.len()
            )));
        }
        let max_blocks = batch
            .seqs
            .iter()
            .map(|s| s.block_table.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut tables = vec![0u32; batch.seqs.len() * max_blocks];
        let mut lens = Vec::with_capacity(batch.seqs.len());
        for (i, s) in batch.seqs.iter().enumerate() {
            if s.kv_len > s.block_table.len() * BLOCK_SIZE {
                return Err(Error::InvalidInput(format!(
                    "batch: sequence {i} kv_len {} beyond its {} blocks",
                    s.kv_len,
                    s.block_table.len()
                )));
            }
            for (j, &b) in s.block_table.iter().enumerate() {
                if b as usize >= n_blocks {
                    return Err(Error::InvalidInput(format!(
                        "batch: block id {b} >= KV cache blocks {n_blocks}"
                    )));
                }
                tables[i * max_blocks + j] = b;
            }
            lens.push(s.kv_len as u32);
        }
        for t in 0..n {
            let s = batch.seq_of_token[t] as usize;
            let seq = batch.seqs.get(s).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "batch: token {t} has sequence index {s} out of range"
                ))
            })?;
            if batch.positions[t] as usize >= seq.kv_len {
                return Err(Error::InvalidInput(format!(
                    "batch: token {t} at position {} not below its kv_len {}",
                    batch.positions[t], seq.kv_len
                )));
            }
        }
        Ok(IndexBufs {
            tables: self.upload_cached(SLOT_TABLES, &tables)?,
            max_blocks,
            seq_of_token: self.upload_cached(SLOT_SEQ, batch.seq_of_token)?,
            positions: self.upload_cached(SLOT_POSITIONS, batch.positions)?,
            kv_lens: self.upload_cached(SLOT_LENS, &lens)?,
        })
    }
}

fn same_shape(a: &GpuTensor, b: &GpuTensor, what: &str) -> Result<()> {
    if a.rows != b.rows || a.cols != b.cols {
        return Err(Error::InvalidInput(format!(
            "{what}: shapes [{}, {}] and [{}, {}] differ",
            a.rows, a.cols, b.rows, b.cols
        )));
    }
    Ok(())
}

impl Backend for GpuBackend {
    type Tensor = GpuTensor;
    type Weight = GpuWeight;
    type Kv = GpuKv;

    fn name(&self) -> String {
        let i = self.dev.info();
        format!("{} ({})", i.kind.name().to_uppercase(), i.name)
    }

    fn threads(&self) -> usize {
        1
    }

    fn weight(
        &self,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: HostBytes,
    ) -> Result<GpuWeight> {
        let data = (*bytes).as_ref();
        let rb = ty.row_bytes(cols as u64).ok_or_else(|| {
            Error::InvalidInput(format!(
                "weight: {cols} columns of {ty} do not fill whole blocks"
            ))
        })? as usize;
        if data.len() != rb * rows {
            return Err(Error::InvalidInput(format!(
                "weight: {rows}x{cols} {ty} needs {} bytes, got {}",
                rb * rows,
                data.len()
            )));
        }
        Ok(GpuWeight {
            buf: self.dev.upload(data)?,
            ty,
            rows,
            cols,
        })
    }

    fn weight_shape(&self, w: &GpuWeight) -> (GgmlType, usize, usize) {
        (w.ty, w.rows, w.cols)
    }

    fn tensor(&self, data: &[f32], rows: usize, cols: usize) -> Result<GpuTensor> {
        if data.len() != rows * cols {
            return Err(Error::InvalidInput(format!(
                "tensor: {} values for [{rows}, {cols}]",
                data.len()
            )));
        }
        let t = self.out(rows, cols)?;
        self.dev.write(&t.buf, 0, data)?;
        Ok(t)
    }

    fn shape(&self, t: &GpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn to_host(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        let mut v = self.dev.download(&t.buf)?;
        v.truncate(t.rows * t.cols);
        Ok(v)
    }

    fn kv_alloc(&self, n_blocks: usize, n_kv_heads: usize, head_dim: usize) -> Result<GpuKv> {
        let buf = self
            .dev
            .alloc::<f16>(n_blocks * n_kv_heads * BLOCK_SIZE * head_dim)?;
        self.dev.memset(&buf, 0)?;
        Ok(GpuKv {
            buf,
            n_blocks,
            n_kv_heads,
            head_dim,
        })
    }

    fn embedding(&self, table: &GpuWeight, tokens: &[u32]) -> Result<GpuTensor> {
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= table.rows) {
            return Err(Error::InvalidInput(format!(
                "embedding: token id {t} >= vocabulary {}",
                table.rows
            )));
        }
        let ids = self.upload_cached(SLOT_MISC, tokens)?;
        let out = self.out(tokens.len(), table.cols)?;
        embedding::embedding(&self.dev, &table.q(), &ids, &out.buf, tokens.len(), 1.0)?;
        Ok(out)
    }

    fn rms_norm(&self, x: &GpuTensor, w: &GpuTensor, eps: f32) -> Result<GpuTensor> {
        let d = w.rows * w.cols;
        if d == 0 || !x.cols.is_multiple_of(d) {
            return Err(Error::InvalidInput(format!(
                "rms_norm: {} columns not a multiple of the weight's {d}",
                x.cols
            )));
        }
        let out = self.out(x.rows, x.cols)?;
        let groups = x.rows * (x.cols / d);
        rms_norm::rms_norm(
            &self.dev, &x.buf, None, None, &w.buf, &out.buf, groups, d, eps,
        )?;
        Ok(out)
    }

    fn add_rms_norm(
        &self,
        x: &mut GpuTensor,
        delta: &GpuTensor,
        w: &GpuTensor,
        eps: f32,
    ) -> Result<GpuTensor> {
        same_shape(x, delta, "add_rms_norm")?;
        let d = w.rows * w.cols;
        if d != x.cols {
            return Err(Error::InvalidInput(format!(
                "add_rms_norm: weight of {d} for {} columns",
                x.cols
            )));
        }
        let out = self.out(x.rows, x.cols)?;
        rms_norm::rms_norm(
            &self.dev,
            &delta.buf,
            Some(&x.buf),
            Some(&x.buf),
            &w.buf,
            &out.buf,
            x.rows,
            d,
            eps,
        )?;
        Ok(out)
    }

    fn matmul(&self, w: &GpuWeight, x: &GpuTensor) -> Result<GpuTensor> {
        if x.cols != w.cols {
            return Err(Error::InvalidInput(format!(
                "matmul: x has {} columns, weight {}x{}",
                x.cols, w.rows, w.cols
            )));
        }
        let out = self.out(x.rows, w.rows)?;
        if x.rows <= 4 {
            matvec::matvec(&self.dev, &w.q(), &x.buf, None, &out.buf, x.rows)?;
        } else {
            matmul::matmul(&self.dev, &w.q(), &x.buf, None, &out.buf, x.rows)?;
        }
        Ok(out)
    }

    fn add(&self, x: &mut GpuTensor, y: &GpuTensor) -> Result<()> {
        same_shape(x, y, "add")?;
        elementwise::elementwise(&self.dev, &x.buf, x.rows * x.cols, EltOp::Add(&y.buf))
    }

    fn add_bias(&self, x: &mut GpuTensor, b: &GpuTensor) -> Result<()> {
        if b.rows * b.cols != x.cols {
            return Err(Error::InvalidInput(format!(
                "add_bias: bias of {} for {} columns",
                b.rows * b.cols,
                x.cols
            )));
        }
        elementwise::elementwise(
            &self.dev,
            &x.buf,
            x.rows * x.cols,
            EltOp::AddBias(&b.buf, x.cols),
        )
    }

    fn scale(&self, x: &mut GpuTensor, s: f32) -> Result<()> {
        elementwise::elementwise(&self.dev, &x.buf, x.rows * x.cols, EltOp::Scale(s))
    }

    fn softcap(&self, x: &mut GpuTensor, cap: f32) -> Result<()> {
        elementwise::elementwise(&self.dev, &x.buf, x.rows * x.cols, EltOp::Softcap(cap))
    }

    fn rope(&self, x: &mut GpuTensor, positions: &[u32], p: &RopeParams) -> Result<()> {
        if positions.len() != x.rows || p.n_heads * p.head_dim != x.cols {
            return Err(Error::InvalidInput(format!(
                "rope: [{}, {}] with {} positions and {} heads of {}",
                x.rows,
                x.cols,
                positions.len(),
                p.n_heads,
                p.head_dim
            )));
        }
        let pos = self.upload_cached(SLOT_POSITIONS, positions)?;
        let ff = match &p.freq_factors {
            None => None,
            Some(f) => {
                let mut c = self
                    .freq_factors
                    .lock()
                    .map_err(|_| Error::Gpu("freq factor cache poisoned".into()))?;
                match &*c {
                    Some((h, b)) if h == f => Some(b.clone()),
                    _ => {
                        let b = Arc::new(self.dev.upload(f)?);
                        *c = Some((f.clone(), b.clone()));
                        Some(b)
                    }
                }
            }
        };
        let cfg = rope::RopeConfig {
            heads: p.n_heads,
            head_dim: p.head_dim,
            rot_dim: p.n_rot,
            mode: match p.kind {
                RopeKind::Normal => rope::RopeMode::Normal,
                RopeKind::Neox => rope::RopeMode::Neox,
            },
            base: p.freq_base,
            freq_scale: p.freq_scale,
        };
        rope::rope(&self.dev, &cfg, &x.buf, &pos, ff.as_deref(), x.rows)
    }

    fn kv_store(&self, cache: &mut GpuKv, x: &GpuTensor, batch: &Batch) -> Result<()> {
        if x.rows != batch.n_tokens() || x.cols != cache.n_kv_heads * cache.head_dim {
            return Err(Error::InvalidInput(format!(
                "kv_store: [{}, {}] for {} tokens of {} kv heads x {}",
                x.rows,
                x.cols,
                batch.n_tokens(),
                cache.n_kv_heads,
                cache.head_dim
            )));
        }
        let ix = self.index(batch, cache.n_blocks)?;
        let idx = KvIndex {
            block_tables: &ix.tables,
            max_blocks: ix.max_blocks,
            seq_of_token: &ix.seq_of_token,
            positions: &ix.positions,
            kv_lens: &ix.kv_lens,
            n_seqs: batch.seqs.len(),
            tokens: x.rows,
        };
        attention::kv_store(
            &self.dev,
            &cache.buf,
            (cache.n_blocks, cache.n_kv_heads, cache.head_dim),
            &idx,
            &x.buf,
        )
    }

    fn attention(
        &self,
        q: &GpuTensor,
        k: &GpuKv,
        v: &GpuKv,
        batch: &Batch,
        p: &AttnParams,
    ) -> Result<GpuTensor> {
        if q.rows != batch.n_tokens() || q.cols != p.n_heads * p.head_dim {
            return Err(Error::InvalidInput(format!(
                "attention: q [{}, {}] for {} tokens of {} heads x {}",
                q.rows,
                q.cols,
                batch.n_tokens(),
                p.n_heads,
                p.head_dim
            )));
        }
        if k.n_kv_heads != p.n_kv_heads || k.head_dim != p.head_dim || v.n_blocks != k.n_blocks {
            return Err(Error::InvalidInput(format!(
                "attention: cache of {} kv heads x {} for {} x {}",
                k.n_kv_heads, k.head_dim, p.n_kv_heads, p.head_dim
            )));
        }
        let ix = self.index(batch, k.n_blocks)?;
        let idx = KvIndex {
            block_tables: &ix.tables,
            max_blocks: ix.max_blocks,
            seq_of_token: &ix.seq_of_token,
            positions: &ix.positions,
            kv_lens: &ix.kv_lens,
            n_seqs: batch.seqs.len(),
            tokens: q.rows,
        };
        let kv = PagedKv {
            k: &k.buf,
            v: &v.buf,
            num_blocks: k.n_blocks,
            n_kv_heads: k.n_kv_heads,
            head_dim: k.head_dim,
        };
        let cfg = AttentionConfig {
            n_heads: p.n_heads,
            scale: p.scale,
            causal: true,
            window: p.window.map(|w| w.min(u32::MAX as usize) as u32),
            softcap: p.softcap,
        };
        let out = self.out(q.rows, q.cols)?;
        attention::attention(&self.dev, &cfg, &kv, &idx, &q.buf, &out.buf)?;
        Ok(out)
    }

    fn glu(&self, gate: &GpuTensor, up: &GpuTensor, kind: GluKind) -> Result<GpuTensor> {
        same_shape(gate, up, "glu")?;
        let out = self.out(gate.rows, gate.cols)?;
        let k = match kind {
            GluKind::SwiGlu => glu::GluKind::SwiGlu,
            GluKind::GeGlu => glu::GluKind::GeGlu,
        };
        glu::glu(
            &self.dev,
            k,
            &gate.buf,
            &up.buf,
            &out.buf,
            gate.rows * gate.cols,
        )?;
        Ok(out)
    }

    fn softmax(&self, x: &mut GpuTensor) -> Result<()> {
        softmax::softmax(&self.dev, &x.buf, &x.buf, x.rows, x.cols, 1.0)
    }

    fn gpu_device(&self) -> Option<&GpuDevice> {
        Some(&self.dev)
    }

    fn gpu_buffer<'a>(&'a self, t: &'a GpuTensor) -> Option<&'a GpuBuffer<f32>> {
        Some(&t.buf)
    }

    fn argmax(&self, x: &GpuTensor) -> Result<Vec<u32>> {
        let out = self.dev.alloc_pooled::<u32>(x.rows)?;
        argmax::argmax(&self.dev, &x.buf, &out, x.rows, x.cols)?;
        let mut v = self.dev.download(&out)?;
        v.truncate(x.rows);
        Ok(v)
    }

    fn get_rows(&self, x: &GpuTensor, rows: &[u32]) -> Result<GpuTensor> {
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= x.rows) {
            return Err(Error::InvalidInput(format!(
                "get_rows: row {r} of a tensor with {} rows",
                x.rows
            )));
        }
        let idx = self.upload_cached(SLOT_MISC, rows)?;
        let out = self.out(rows.len(), x.cols)?;
        elementwise::get_rows(
            &self.dev,
            &x.buf,
            x.rows,
            x.cols,
            &idx,
            rows.len(),
            &out.buf,
        )?;
        Ok(out)
    }
}
