//! [`Backend`] on a GPU: weights and the F16 paged KV cache in device memory, activations in
//! pooled device buffers, every op a kernel of `kernels/`.
//!
//! The KV cache layout is the GPU kernels' own, `[n_blocks, n_kv_heads, 16, head_dim]` f16 (the
//! CPU's is `[n_blocks, 16, n_kv_heads, head_dim]`); nothing outside the backend sees it.
//! Host-side batch data (token ids, positions, block tables, logit rows) is validated on the
//! host and staged in one upload at the start of each forward pass ([`Backend::forward_pass`]);
//! the ops find their index data there by content. Ops called outside a pass upload what they
//! need themselves (cached by content).
//!
//! Decode steps (one token per sequence) are captured as a CUDA/HIP graph the second time a
//! pass of the same shape runs, and replayed from then on: one launch per step instead of
//! hundreds. A graph bakes in every pointer it uses, so the staged index has a fixed layout per
//! shape (block tables padded to a power-of-two stride), scratch comes from the graphs' own pool,
//! and the shape key includes the KV cache's identity. Set `ROCMFORGE_GRAPHS=0` to run eagerly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use half::f16;

use super::ops::attention::{self, AttentionConfig, KvIndex, PagedKv};
use super::ops::elementwise::{self, EltOp};
use super::ops::{argmax, embedding, glu, matmul, matvec, rms_norm, rope, softmax, QMatrix};
use super::{GpuBuffer, GpuDevice, GpuGraph};
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
    /// An F16 copy of a quantized matrix (`[rows, cols]` f16 bytes) for batched products, when
    /// the backend keeps them ([`GpuBackend::with_f16_batch_weights`]).
    pub f16: Option<GpuBuffer<u8>>,
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

    /// The matrix for a product over `n` tokens: the F16 copy, if any, above the matrix-vector
    /// sizes (where reading the quantized bytes is what costs).
    fn q_for(&self, n: usize) -> QMatrix<'_> {
        match &self.f16 {
            Some(f) if n > MATVEC_MAX_TOKENS => QMatrix {
                data: f,
                offset: 0,
                ty: GgmlType::F16,
                rows: self.rows,
                cols: self.cols,
            },
            _ => self.q(),
        }
    }
}

/// Products over at most this many tokens use the matrix-vector kernels.
const MATVEC_MAX_TOKENS: usize = 4;

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

impl IndexBufs {
    /// The index as the attention ops take it, for a pass of `tokens` tokens of `n_seqs`
    /// sequences.
    fn kv(&self, n_seqs: usize, tokens: usize) -> KvIndex<'_> {
        KvIndex {
            block_tables: &self.tables,
            max_blocks: self.max_blocks,
            seq_of_token: &self.seq_of_token,
            positions: &self.positions,
            kv_lens: &self.kv_lens,
            n_seqs,
            tokens,
        }
    }
}

/// The parts of a [`Stage`], in their order in the staging buffer.
#[derive(Clone, Copy)]
enum Part {
    Tokens,
    Positions,
    SeqOfToken,
    LogitsFor,
    Tables,
    KvLens,
}

/// The batch of the current forward pass: host copies (to recognize it) and its place in the
/// staging buffer.
struct Stage {
    tokens: Vec<u32>,
    positions: Vec<u32>,
    seq_of_token: Vec<u32>,
    logits_for: Vec<u32>,
    /// `[n_seqs * stride]` block tables, each padded with zeros to `stride`.
    tables: Vec<u32>,
    kv_lens: Vec<u32>,
    stride: usize,
    /// Largest block id in the tables (checked against each cache); None without blocks.
    max_block: Option<u32>,
}

impl Stage {
    fn of(batch: &Batch) -> Result<Stage> {
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
        // A power of two, so that decode steps share a graph while their sequences grow.
        let stride = max_blocks.next_power_of_two();
        let mut tables = vec![0u32; batch.seqs.len() * stride];
        let mut kv_lens = Vec::with_capacity(batch.seqs.len());
        let mut max_block = None;
        for (i, s) in batch.seqs.iter().enumerate() {
            if s.kv_len > s.block_table.len() * BLOCK_SIZE {
                return Err(Error::InvalidInput(format!(
                    "batch: sequence {i} kv_len {} beyond its {} blocks",
                    s.kv_len,
                    s.block_table.len()
                )));
            }
            tables[i * stride..i * stride + s.block_table.len()].copy_from_slice(s.block_table);
            max_block = s.block_table.iter().copied().max().max(max_block);
            kv_lens.push(u32::try_from(s.kv_len).map_err(|_| {
                Error::InvalidInput(format!("batch: sequence {i} kv_len {}", s.kv_len))
            })?);
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
        Ok(Stage {
            tokens: batch.tokens.to_vec(),
            positions: batch.positions.to_vec(),
            seq_of_token: batch.seq_of_token.to_vec(),
            logits_for: batch.logits_for.to_vec(),
            tables,
            kv_lens,
            stride,
            max_block,
        })
    }

    /// The parts in staging-buffer order.
    fn parts(&self) -> [&[u32]; 6] {
        [
            &self.tokens,
            &self.positions,
            &self.seq_of_token,
            &self.logits_for,
            &self.tables,
            &self.kv_lens,
        ]
    }

    /// `(offset, length)` of a part in the staging buffer.
    fn place(&self, part: Part) -> (usize, usize) {
        let parts = self.parts();
        let i = part as usize;
        (parts[..i].iter().map(|p| p.len()).sum(), parts[i].len())
    }

    /// Checks the block ids against a cache of `n_blocks` blocks.
    fn check_blocks(&self, n_blocks: usize) -> Result<()> {
        match self.max_block {
            Some(b) if b as usize >= n_blocks => Err(Error::InvalidInput(format!(
                "batch: block id {b} >= KV cache blocks {n_blocks}"
            ))),
            _ => Ok(()),
        }
    }

    /// The staged data, packed in part order.
    fn packed(&self) -> Vec<u32> {
        self.parts().concat()
    }

    /// Whether `batch` is the staged one (same positions, sequences and block tables).
    fn matches(&self, batch: &Batch) -> bool {
        self.positions == batch.positions
            && self.seq_of_token == batch.seq_of_token
            && self.kv_lens.len() == batch.seqs.len()
            && batch.seqs.iter().enumerate().all(|(i, s)| {
                self.kv_lens[i] as usize == s.kv_len
                    && s.block_table.len() <= self.stride
                    && self.tables[i * self.stride..i * self.stride + s.block_table.len()]
                        == *s.block_table
            })
    }
}

/// The shape of a graph-captured pass: everything its launches bake in.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct GraphKey {
    tokens: usize,
    logits: usize,
    stride: usize,
    kv: u64,
}

enum GraphState {
    /// Seen once (ran eagerly: kernels compiled, constant uploads done); captured next time.
    Seen,
    /// Captured: replay it; the output is `[rows, cols]` at `out` (in the graphs' scratch).
    Ready {
        graph: GpuGraph,
        out: u64,
        rows: usize,
        cols: usize,
    },
    /// Capture failed once: this shape runs eagerly.
    Failed,
}

/// At most this many graphs are kept (one per decode batch size and table stride); beyond it
/// the cache is emptied and filled again.
const MAX_GRAPHS: usize = 64;
/// Passes with more tokens than this are not captured.
const MAX_GRAPH_TOKENS: usize = 512;

/// The GPU backend: one device, its own context and stream.
pub struct GpuBackend {
    dev: GpuDevice,
    uploads: Mutex<[Cached; 5]>,
    freq_factors: Mutex<CachedF32>,
    stage: Mutex<Option<Stage>>,
    /// The staging buffer (grows; graphs point into it, so growing drops them).
    stage_buf: Mutex<Option<GpuBuffer<u32>>>,
    graphs: Mutex<HashMap<GraphKey, GraphState>>,
    use_graphs: bool,
    f16_batch: bool,
    batch_invariant: bool,
}

const SLOT_POSITIONS: usize = 0;
const SLOT_SEQ: usize = 1;
const SLOT_TABLES: usize = 2;
const SLOT_LENS: usize = 3;
const SLOT_MISC: usize = 4;

impl GpuBackend {
    /// A backend on an opened device; decode steps are replayed as graphs unless the environment
    /// sets `ROCMFORGE_GRAPHS=0`.
    pub fn new(dev: GpuDevice) -> Self {
        let use_graphs = std::env::var("ROCMFORGE_GRAPHS").map_or(true, |v| v != "0");
        Self::with_graphs(dev, use_graphs)
    }

    /// A backend on an opened device, capturing decode steps as graphs or not.
    pub fn with_graphs(dev: GpuDevice, use_graphs: bool) -> Self {
        Self {
            dev,
            uploads: Mutex::new(Default::default()),
            freq_factors: Mutex::new(None),
            stage: Mutex::new(None),
            stage_buf: Mutex::new(None),
            graphs: Mutex::new(HashMap::new()),
            use_graphs,
            f16_batch: false,
            batch_invariant: false,
        }
    }

    /// Keeps an F16 copy of every quantized weight matrix (made on the device at load), which
    /// products over more tokens than a matrix-vector product (prefill, batched decoding) read
    /// instead of dequantizing the matrix at every call: twice the bytes of an F16 model more
    /// device memory, for serving throughput. Set before loading the weights.
    pub fn with_f16_batch_weights(mut self, on: bool) -> Self {
        self.f16_batch = on;
        self
    }

    /// Batch-invariant products and attention: every token's results are computed by the same
    /// float operations whatever else is in the batch (matrix products always take the
    /// matrix-vector kernels, several vectors per weight load; attention always the per-token
    /// kernel), so greedy output does not depend on the other requests being served. Costs
    /// prompt-processing speed on large models (no cuBLAS); F16 batch copies are then unused and
    /// not made.
    pub fn with_batch_invariance(mut self, on: bool) -> Self {
        self.batch_invariant = on;
        self
    }

    /// Whether [`GpuBackend::with_batch_invariance`] is on.
    pub fn batch_invariant(&self) -> bool {
        self.batch_invariant
    }

    /// The rotation's frequency factors on the device (uploaded once, cached by content).
    fn freq_factors_buf(&self, p: &RopeParams) -> Result<Option<Arc<GpuBuffer<f32>>>> {
        let Some(f) = &p.freq_factors else {
            return Ok(None);
        };
        let mut c = self.lock(&self.freq_factors, "freq factor cache")?;
        match &*c {
            Some((h, b)) if h == f => Ok(Some(b.clone())),
            _ => {
                let b = Arc::new(self.dev.upload(f)?);
                *c = Some((f.clone(), b.clone()));
                Ok(Some(b))
            }
        }
    }

    /// Whether decode steps are captured and replayed as graphs.
    pub fn graphs_enabled(&self) -> bool {
        self.use_graphs
    }

    /// Graphs captured so far (for tests and reports).
    pub fn graphs_captured(&self) -> usize {
        self.graphs.lock().map_or(0, |g| {
            g.values()
                .filter(|s| matches!(s, GraphState::Ready { .. }))
                .count()
        })
    }

    fn lock<'a, T>(&self, m: &'a Mutex<T>, what: &str) -> Result<MutexGuard<'a, T>> {
        m.lock()
            .map_err(|_| Error::Gpu(format!("{what} lock poisoned")))
    }

    /// Validates `batch`, uploads its index data into the staging buffer (one copy) and makes it
    /// the batch the ops look for. Returns the table stride.
    fn stage(&self, batch: &Batch) -> Result<usize> {
        let st = Stage::of(batch)?;
        let packed = st.packed();
        let mut buf = self.lock(&self.stage_buf, "staging buffer")?;
        if buf.as_ref().is_none_or(|b| b.len() < packed.len()) {
            // Graphs point into the old buffer: they go with it.
            self.lock(&self.graphs, "graph cache")?.clear();
            let cap = packed.len().next_power_of_two().max(1024);
            *buf = Some(self.dev.alloc::<u32>(cap)?);
        }
        let b = buf
            .as_ref()
            .ok_or_else(|| Error::Gpu("no staging buffer".into()))?;
        self.dev.write(b, 0, &packed)?;
        let stride = st.stride;
        *self.lock(&self.stage, "stage")? = Some(st);
        Ok(stride)
    }

    /// `data` on the device: the staged `part` when it holds `data`, else uploaded into `slot`.
    fn index_part(&self, part: Part, slot: usize, data: &[u32]) -> Result<Arc<GpuBuffer<u32>>> {
        let place = {
            let st = self.lock(&self.stage, "stage")?;
            st.as_ref()
                .filter(|st| st.parts()[part as usize] == data)
                .map(|st| st.place(part))
        };
        match place {
            Some((off, len)) => self.stage_view(off, len),
            None => self.upload_cached(slot, data),
        }
    }

    fn stage_view(&self, off: usize, len: usize) -> Result<Arc<GpuBuffer<u32>>> {
        let buf = self.lock(&self.stage_buf, "staging buffer")?;
        let b = buf
            .as_ref()
            .ok_or_else(|| Error::Gpu("no staging buffer".into()))?;
        // SAFETY: the view lives only for one op; the staging buffer is replaced only at the start
        // of a pass, never while an op runs.
        Ok(Arc::new(unsafe { b.view(off, len) }?))
    }

    /// A pass through the graph cache: replays, captures or runs `f` eagerly.
    fn graph_pass(
        &self,
        key: GraphKey,
        f: &mut dyn FnMut() -> Result<GpuTensor>,
    ) -> Result<GpuTensor> {
        let mut graphs = self.lock(&self.graphs, "graph cache")?;
        match graphs.get(&key) {
            Some(GraphState::Ready {
                graph,
                out,
                rows,
                cols,
            }) => {
                graph.launch()?;
                // SAFETY: `out` is the graph's output in the graphs' scratch pool, which only
                // a later capture hands out again; the tensor is valid until the next pass.
                let buf = unsafe { self.dev.borrow_raw::<f32>(*out, rows * cols) };
                return Ok(GpuTensor {
                    buf,
                    rows: *rows,
                    cols: *cols,
                });
            }
            Some(GraphState::Failed) => {
                drop(graphs);
                return f();
            }
            Some(GraphState::Seen) => {}
            None => {
                if graphs.len() >= MAX_GRAPHS {
                    graphs.clear();
                }
                graphs.insert(key, GraphState::Seen);
                drop(graphs);
                return f();
            }
        }
        drop(graphs);
        self.dev.begin_capture()?;
        let r = f();
        let g = self.dev.end_capture();
        let mut graphs = self.lock(&self.graphs, "graph cache")?;
        match (r, g) {
            (Ok(t), Ok(graph)) => {
                let (out, rows, cols) = (t.buf.ptr(), t.rows, t.cols);
                // The output goes back to the graphs' pool; replays write it again.
                drop(t);
                graph.launch()?;
                graphs.insert(
                    key,
                    GraphState::Ready {
                        graph,
                        out,
                        rows,
                        cols,
                    },
                );
                // SAFETY: as for a replay above.
                let buf = unsafe { self.dev.borrow_raw::<f32>(out, rows * cols) };
                Ok(GpuTensor { buf, rows, cols })
            }
            (r, g) => {
                let why = match (&r, &g) {
                    (Err(e), _) | (_, Err(e)) => e.to_string(),
                    _ => String::new(),
                };
                tracing::warn!("graph capture failed ({why}); this pass shape runs eagerly");
                graphs.insert(key, GraphState::Failed);
                drop(graphs);
                f()
            }
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

    /// The batch's index on the device, checked against a cache of `n_blocks` blocks: the
    /// staged one when `batch` is the pass's batch, else validated and uploaded here.
    fn index(&self, batch: &Batch, n_blocks: usize) -> Result<IndexBufs> {
        {
            let guard = self.lock(&self.stage, "stage")?;
            if let Some(st) = guard.as_ref().filter(|st| st.matches(batch)) {
                st.check_blocks(n_blocks)?;
                let places = [
                    Part::Tables,
                    Part::SeqOfToken,
                    Part::Positions,
                    Part::KvLens,
                ]
                .map(|p| st.place(p));
                let stride = st.stride;
                drop(guard);
                let [tables, seq_of_token, positions, kv_lens] =
                    places.map(|(off, len)| self.stage_view(off, len));
                return Ok(IndexBufs {
                    tables: tables?,
                    max_blocks: stride,
                    seq_of_token: seq_of_token?,
                    positions: positions?,
                    kv_lens: kv_lens?,
                });
            }
        }
        let st = Stage::of(batch)?;
        st.check_blocks(n_blocks)?;
        Ok(IndexBufs {
            tables: self.upload_cached(SLOT_TABLES, &st.tables)?,
            max_blocks: st.stride,
            seq_of_token: self.upload_cached(SLOT_SEQ, batch.seq_of_token)?,
            positions: self.upload_cached(SLOT_POSITIONS, batch.positions)?,
            kv_lens: self.upload_cached(SLOT_LENS, &st.kv_lens)?,
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
        let buf = self.dev.upload(data)?;
        let mut w = GpuWeight {
            buf,
            f16: None,
            ty,
            rows,
            cols,
        };
        // Batch invariance never reads F16 copies (its products are all matrix-vector).
        let copies = self.f16_batch && !self.batch_invariant;
        if copies && rows > 1 && !matches!(ty, GgmlType::F16 | GgmlType::F32) {
            let q = w.q();
            if q.chunked() {
                let f = self.dev.alloc::<u8>(rows * cols * 2)?;
                // SAFETY: `f` holds rows * cols f16 values and outlives the view.
                let view = unsafe { self.dev.borrow_raw::<f16>(f.ptr(), rows * cols) };
                matmul::dequantize_f16(&self.dev, &q, &view)?;
                w.f16 = Some(f);
            }
        }
        Ok(w)
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
        // Plain memory, not scratch: this uploads weights (norm vectors, biases).
        let t = GpuTensor {
            buf: self.dev.alloc(rows * cols)?,
            rows,
            cols,
        };
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
        let ids = self.index_part(Part::Tokens, SLOT_MISC, tokens)?;
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
        self.matmul_bias(w, x, None)
    }

    fn matmul_bias(
        &self,
        w: &GpuWeight,
        x: &GpuTensor,
        b: Option<&GpuTensor>,
    ) -> Result<GpuTensor> {
        check_product(w, x, b)?;
        let bias = b.map(|b| &b.buf);
        let out = self.out(x.rows, w.rows)?;
        if x.rows <= MATVEC_MAX_TOKENS || self.batch_invariant {
            matvec::matvec(&self.dev, &w.q(), &x.buf, bias, &out.buf, x.rows)?;
        } else {
            matmul::matmul(&self.dev, &w.q_for(x.rows), &x.buf, bias, &out.buf, x.rows)?;
        }
        Ok(out)
    }

    fn matmul_bias_many(
        &self,
        ws: &[(&GpuWeight, Option<&GpuTensor>)],
        x: &GpuTensor,
    ) -> Result<Vec<GpuTensor>> {
        if !(x.rows <= MATVEC_MAX_TOKENS || self.batch_invariant) {
            return ws.iter().map(|&(w, b)| self.matmul_bias(w, x, b)).collect();
        }
        for &(w, b) in ws {
            check_product(w, x, b)?;
        }
        let outs = ws
            .iter()
            .map(|(w, _)| self.out(x.rows, w.rows))
            .collect::<Result<Vec<_>>>()?;
        let qs: Vec<_> = ws.iter().map(|(w, _)| w.q()).collect();
        let products: Vec<_> = ws
            .iter()
            .zip(&qs)
            .zip(&outs)
            .map(|((&(_, b), q), o)| (q, b.map(|b| &b.buf), &o.buf))
            .collect();
        matvec::matvec_shared_x(&self.dev, &products, &x.buf, x.rows)?;
        Ok(outs)
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
        let pos = self.index_part(Part::Positions, SLOT_POSITIONS, positions)?;
        let ff = self.freq_factors_buf(p)?;
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
        let idx = ix.kv(batch.seqs.len(), x.rows);
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
        let idx = ix.kv(batch.seqs.len(), q.rows);
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
            tiled: !self.batch_invariant,
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

    fn glu_fused(&self, gu: &GpuTensor, kind: GluKind) -> Result<GpuTensor> {
        if !gu.cols.is_multiple_of(2) {
            return Err(Error::InvalidInput(format!(
                "glu_fused: {} columns is not gate|up",
                gu.cols
            )));
        }
        let h = gu.cols / 2;
        let out = self.out(gu.rows, h)?;
        let k = match kind {
            GluKind::SwiGlu => glu::GluKind::SwiGlu,
            GluKind::GeGlu => glu::GluKind::GeGlu,
        };
        glu::glu_fused(&self.dev, k, &gu.buf, &out.buf, gu.rows, h)?;
        Ok(out)
    }

    fn qkv_rope_store(
        &self,
        qkv: &GpuTensor,
        rope_q: &RopeParams,
        rope_k: &RopeParams,
        k_cache: &mut GpuKv,
        v_cache: &mut GpuKv,
        batch: &Batch,
    ) -> Result<GpuTensor> {
        let Some(cfg) = fused_rope(rope_q, rope_k, k_cache, v_cache) else {
            return crate::backend::qkv_rope_store_split(
                self, qkv, rope_q, rope_k, k_cache, v_cache, batch,
            );
        };
        let (nq, nkv, d) = (rope_q.n_heads, rope_k.n_heads, rope_q.head_dim);
        if qkv.rows != batch.n_tokens() || qkv.cols != (nq + 2 * nkv) * d {
            return Err(Error::InvalidInput(format!(
                "qkv_rope_store: [{}, {}] for {} tokens of {nq} + 2 x {nkv} heads of {d}",
                qkv.rows,
                qkv.cols,
                batch.n_tokens()
            )));
        }
        let ix = self.index(batch, k_cache.n_blocks)?;
        let idx = ix.kv(batch.seqs.len(), qkv.rows);
        let ff = self.freq_factors_buf(rope_q)?;
        let q = self.out(qkv.rows, nq * d)?;
        rope::qkv_rope_store(
            &self.dev,
            &cfg,
            nkv,
            &qkv.buf,
            &q.buf,
            (&k_cache.buf, &v_cache.buf, k_cache.n_blocks),
            &idx,
            ff.as_deref(),
        )?;
        Ok(q)
    }

    fn rope_store(
        &self,
        q: GpuTensor,
        k: GpuTensor,
        v: &GpuTensor,
        rope_q: &RopeParams,
        rope_k: &RopeParams,
        k_cache: &mut GpuKv,
        v_cache: &mut GpuKv,
        batch: &Batch,
    ) -> Result<GpuTensor> {
        let Some(cfg) = fused_rope(rope_q, rope_k, k_cache, v_cache) else {
            return crate::backend::rope_store_parts(
                self,
                q,
                k,
                v,
                (rope_q, rope_k),
                (k_cache, v_cache),
                batch,
            );
        };
        let (nq, nkv, d) = (rope_q.n_heads, rope_k.n_heads, rope_q.head_dim);
        let n = batch.n_tokens();
        for (what, t, cols) in [("q", &q, nq * d), ("k", &k, nkv * d), ("v", v, nkv * d)] {
            if t.rows != n || t.cols != cols {
                return Err(Error::InvalidInput(format!(
                    "rope_store: {what} [{}, {}] for {n} tokens of {cols} columns",
                    t.rows, t.cols
                )));
            }
        }
        let ix = self.index(batch, k_cache.n_blocks)?;
        let idx = ix.kv(batch.seqs.len(), n);
        let ff = self.freq_factors_buf(rope_q)?;
        let out = self.out(n, nq * d)?;
        rope::rope_store(
            &self.dev,
            &cfg,
            nkv,
            [&q.buf, &k.buf, &v.buf],
            &out.buf,
            (&k_cache.buf, &v_cache.buf, k_cache.n_blocks),
            &idx,
            ff.as_deref(),
        )?;
        Ok(out)
    }

    fn softmax(&self, x: &mut GpuTensor) -> Result<()> {
        softmax::softmax(&self.dev, &x.buf, &x.buf, x.rows, x.cols, 1.0)
    }

    fn gpu_device(&self) -> Option<&GpuDevice> {
        Some(&self.dev)
    }

    fn fuse_projections(&self) -> bool {
        true
    }

    fn kv_id(&self, kv: &GpuKv) -> u64 {
        kv.buf.ptr() ^ (kv.n_blocks as u64).rotate_left(48)
    }

    fn forward_pass(
        &self,
        batch: &Batch,
        kv_key: u64,
        f: &mut dyn FnMut() -> Result<GpuTensor>,
    ) -> Result<GpuTensor> {
        let stride = self.stage(batch)?;
        let n = batch.n_tokens();
        // Decode steps only: one token per sequence.
        if !self.use_graphs || n != batch.seqs.len() || n > MAX_GRAPH_TOKENS {
            return f();
        }
        let key = GraphKey {
            tokens: n,
            logits: batch.logits_for.len(),
            stride,
            kv: kv_key,
        };
        self.graph_pass(key, f)
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
        let idx = self.index_part(Part::LogitsFor, SLOT_MISC, rows)?;
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

/// The one rotation the fused attention-input kernel applies to Q and K, when Q and K rotate
/// alike (apart from the head count) and the caches match K's heads and each other; `None`
/// sends the caller to the ops by parts.
fn fused_rope(
    rope_q: &RopeParams,
    rope_k: &RopeParams,
    k_cache: &GpuKv,
    v_cache: &GpuKv,
) -> Option<rope::RopeConfig> {
    let same_rotation = rope_q.kind == rope_k.kind
        && rope_q.head_dim == rope_k.head_dim
        && rope_q.n_rot == rope_k.n_rot
        && rope_q.freq_base == rope_k.freq_base
        && rope_q.freq_scale == rope_k.freq_scale
        && rope_q.freq_factors == rope_k.freq_factors;
    let d = rope_q.head_dim;
    let fits = k_cache.n_kv_heads == rope_k.n_heads
        && k_cache.head_dim == d
        && v_cache.n_kv_heads == k_cache.n_kv_heads
        && v_cache.head_dim == d
        && v_cache.n_blocks == k_cache.n_blocks;
    (same_rotation && fits).then_some(rope::RopeConfig {
        heads: rope_q.n_heads,
        head_dim: d,
        rot_dim: rope_q.n_rot,
        mode: match rope_q.kind {
            RopeKind::Normal => rope::RopeMode::Normal,
            RopeKind::Neox => rope::RopeMode::Neox,
        },
        base: rope_q.freq_base,
        freq_scale: rope_q.freq_scale,
    })
}

/// A product's shapes: x's columns match the weight's, the bias (if any) has one value per row.
fn check_product(w: &GpuWeight, x: &GpuTensor, b: Option<&GpuTensor>) -> Result<()> {
    if x.cols != w.cols {
        return Err(Error::InvalidInput(format!(
            "matmul: x has {} columns, weight {}x{}",
            x.cols, w.rows, w.cols
        )));
    }
    match b {
        Some(b) if b.rows * b.cols != w.rows => Err(Error::InvalidInput(format!(
            "matmul: bias of {} for {} rows",
            b.rows * b.cols,
            w.rows
        ))),
        _ => Ok(()),
    }
}
