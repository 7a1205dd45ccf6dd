//! The GPU sampler: launches `kernels/sampling.cu`, one block per row of logits.
//!
//! Layers as everywhere in the GPU backend: kernel (`sample_rows`) -> launcher
//! ([`GpuSampler::launch`], grid = rows, block = [`BLOCK_THREADS`]) -> typed entries that check
//! shapes ([`GpuSampler::sample`], [`GpuSampler::topk`], [`GpuSampler::topp`],
//! [`GpuSampler::topk_topp`], [`GpuSampler::minp`]). All entries run the one fused kernel;
//! they differ in which filters are on. The algorithm and its random numbers are the CPU
//! sampler's ([`super::cpu`]), so tokens agree with it.
//!
//! The logits buffer is `[rows, row_stride]` f32 on the device. Penalties are applied to it in
//! place and the changed entries are restored before the kernel returns.

use std::ffi::c_void;

use super::{cpu, SampleRow, SamplingParams};
use crate::backend::gpu::kernels::KernelSource;
use crate::backend::gpu::{GpuBuffer, GpuDevice, GpuElem, Kernel, LaunchConfig};
use crate::{Error, Result};

/// Kernel `sample_rows` of `kernels/sampling.cu`.
pub const SAMPLE_ROWS: &str = "sample_rows";

/// `kernels/sampling.cu`.
pub const SAMPLING: KernelSource = KernelSource {
    name: "sampling",
    source: include_str!("../../kernels/sampling.cu"),
    kernels: &[SAMPLE_ROWS],
};

/// Threads per block (one block per row).
pub const BLOCK_THREADS: u32 = 1024;

/// Longest penalty window the kernel takes (`RF_SAMPLE_MAX_WINDOW`).
pub const MAX_PENALTY_WINDOW: usize = 1024;

/// Per-row parameters as the kernel reads them (`struct RowParams`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpuRowParams {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub recent_offset: u32,
    pub recent_len: u32,
    pub pad: u32,
    pub seed: u64,
    pub seq_id: u64,
    pub step: u64,
}
const _: () = assert!(std::mem::size_of::<GpuRowParams>() == 64);

// SAFETY: plain numeric fields, no padding bytes (64 = 10 * 4 + 3 * 8), any bit pattern valid.
unsafe impl GpuElem for GpuRowParams {}

impl GpuRowParams {
    fn new(p: &SamplingParams, seq_id: u64, step: u64) -> Self {
        GpuRowParams {
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            min_p: p.min_p,
            repeat_penalty: p.repeat_penalty,
            presence_penalty: p.presence_penalty,
            frequency_penalty: p.frequency_penalty,
            recent_offset: 0,
            recent_len: 0,
            pad: 0,
            seed: p.seed,
            seq_id,
            step,
        }
    }
}

/// The kernel's argument struct (`struct SampleArgs`).
#[repr(C)]
#[derive(Clone, Copy)]
struct SampleArgs {
    logits: u64,
    rows: u64,
    recent: u64,
    tokens: u64,
    status: u64,
    batch: u32,
    vocab: u32,
    row_stride: u64,
}

/// Temperature and random stream of one row for the single-filter entries.
#[derive(Debug, Clone, Copy)]
pub struct DrawRow {
    pub temperature: f32,
    pub seed: u64,
    pub seq_id: u64,
    pub step: u64,
}

/// A GPU sampler on one device: the compiled kernel and reusable device buffers. Not shared
/// between threads; each engine (or test) makes its own.
pub struct GpuSampler {
    dev: GpuDevice,
    kernel: Kernel,
    rows: Option<GpuBuffer<GpuRowParams>>,
    recent: Option<GpuBuffer<u32>>,
    /// `[tokens | statuses]`: one read-back per step.
    out: Option<GpuBuffer<u32>>,
    out_rows: usize,
}

fn ensure<T: GpuElem>(dev: &GpuDevice, buf: &mut Option<GpuBuffer<T>>, len: usize) -> Result<()> {
    if buf.as_ref().is_none_or(|b| b.len() < len) {
        *buf = Some(dev.alloc::<T>(len.max(1).next_power_of_two())?);
    }
    Ok(())
}

fn buf<T: GpuElem>(b: &Option<GpuBuffer<T>>) -> Result<&GpuBuffer<T>> {
    b.as_ref()
        .ok_or_else(|| Error::Gpu("sampler buffer not allocated".into()))
}

impl GpuSampler {
    /// Compiles (or loads from the disk cache) the sampling kernel on `dev`.
    pub fn new(dev: &GpuDevice) -> Result<Self> {
        let kernel = dev.kernel(&SAMPLING, SAMPLE_ROWS)?;
        Ok(GpuSampler {
            dev: dev.clone(),
            kernel,
            rows: None,
            recent: None,
            out: None,
            out_rows: 0,
        })
    }

    /// The device.
    pub fn device(&self) -> &GpuDevice {
        &self.dev
    }

    /// One token per row of `logits` (`rows.len()` rows of `vocab` floats, `row_stride` apart),
    /// with each row's full parameters and penalties. Errors: shapes, parameters, a recent token
    /// outside the vocabulary, a penalty window over [`MAX_PENALTY_WINDOW`], any GPU failure, and
    /// (as [`Error::Sampler`] naming the row) NaN/+inf or all -inf logits in a row.
    pub fn sample(
        &mut self,
        logits: &GpuBuffer<f32>,
        rows: &[SampleRow<'_>],
        vocab: usize,
        row_stride: usize,
    ) -> Result<Vec<u32>> {
        self.sample_each(logits, rows, vocab, row_stride)?
            .into_iter()
            .collect()
    }

    /// Like [`GpuSampler::sample`], but a row with bad logits gives its own error and the other
    /// rows their tokens. The outer error is a GPU, shape or parameter failure.
    pub fn sample_each(
        &mut self,
        logits: &GpuBuffer<f32>,
        rows: &[SampleRow<'_>],
        vocab: usize,
        row_stride: usize,
    ) -> Result<Vec<Result<u32>>> {
        let mut params = Vec::with_capacity(rows.len());
        let mut recent = Vec::new();
        for row in rows {
            row.params.validate()?;
            let win = cpu::penalty_window(row.params, row.recent);
            if win.len() > MAX_PENALTY_WINDOW {
                return Err(Error::Gpu(format!(
                    "sampler: penalty window {} > {MAX_PENALTY_WINDOW} (the kernel's limit)",
                    win.len()
                )));
            }
            if let Some(&t) = win.iter().find(|&&t| t as usize >= vocab) {
                return Err(Error::InvalidInput(format!(
                    "sampler: recent token id {t} >= vocabulary size {vocab}"
                )));
            }
            let mut g = GpuRowParams::new(row.params, row.seq_id, row.step);
            g.recent_offset = recent.len() as u32;
            g.recent_len = win.len() as u32;
            recent.extend_from_slice(win);
            params.push(g);
        }
        self.launch(logits, &params, &recent, vocab, row_stride)?;
        self.read_back(rows.len())
    }

    /// Top-k sampling (temperature per row, no penalties).
    pub fn topk(
        &mut self,
        logits: &GpuBuffer<f32>,
        draws: &[DrawRow],
        top_k: &[u32],
        vocab: usize,
    ) -> Result<Vec<u32>> {
        check_rows("top_k", draws.len(), top_k.len())?;
        self.filtered(logits, draws, vocab, |i, p| p.top_k = top_k[i])
    }

    /// Top-p sampling (temperature per row, no penalties).
    pub fn topp(
        &mut self,
        logits: &GpuBuffer<f32>,
        draws: &[DrawRow],
        top_p: &[f32],
        vocab: usize,
    ) -> Result<Vec<u32>> {
        check_rows("top_p", draws.len(), top_p.len())?;
        self.filtered(logits, draws, vocab, |i, p| p.top_p = top_p[i])
    }

    /// Top-k and top-p together, in one launch.
    pub fn topk_topp(
        &mut self,
        logits: &GpuBuffer<f32>,
        draws: &[DrawRow],
        top_k: &[u32],
        top_p: &[f32],
        vocab: usize,
    ) -> Result<Vec<u32>> {
        check_rows("top_k", draws.len(), top_k.len())?;
        check_rows("top_p", draws.len(), top_p.len())?;
        self.filtered(logits, draws, vocab, |i, p| {
            p.top_k = top_k[i];
            p.top_p = top_p[i];
        })
    }

    /// Min-p sampling (temperature per row, no penalties).
    pub fn minp(
        &mut self,
        logits: &GpuBuffer<f32>,
        draws: &[DrawRow],
        min_p: &[f32],
        vocab: usize,
    ) -> Result<Vec<u32>> {
        check_rows("min_p", draws.len(), min_p.len())?;
        self.filtered(logits, draws, vocab, |i, p| p.min_p = min_p[i])
    }

    fn filtered(
        &mut self,
        logits: &GpuBuffer<f32>,
        draws: &[DrawRow],
        vocab: usize,
        set: impl Fn(usize, &mut SamplingParams),
    ) -> Result<Vec<u32>> {
        let params: Vec<SamplingParams> = draws
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut p = SamplingParams {
                    temperature: d.temperature,
                    top_k: 0,
                    top_p: 1.0,
                    min_p: 0.0,
                    repeat_penalty: 1.0,
                    presence_penalty: 0.0,
                    frequency_penalty: 0.0,
                    penalty_last_n: 0,
                    seed: d.seed,
                };
                set(i, &mut p);
                p
            })
            .collect();
        let rows: Vec<SampleRow> = params
            .iter()
            .zip(draws)
            .map(|(p, d)| SampleRow {
                params: p,
                recent: &[],
                seq_id: d.seq_id,
                step: d.step,
            })
            .collect();
        self.sample(logits, &rows, vocab, vocab)
    }

    /// Launcher: uploads the row parameters and penalty windows and queues the kernel; the
    /// tokens and statuses land in the sampler's device buffers ([`GpuSampler::read_back`]).
    pub fn launch(
        &mut self,
        logits: &GpuBuffer<f32>,
        params: &[GpuRowParams],
        recent: &[u32],
        vocab: usize,
        row_stride: usize,
    ) -> Result<()> {
        let batch = params.len();
        if batch == 0 {
            return Ok(());
        }
        if vocab == 0 || vocab > cpu::MAX_VOCAB || row_stride < vocab {
            return Err(Error::InvalidInput(format!(
                "GPU sampler: vocabulary {vocab} (1..={}) with row stride {row_stride}",
                cpu::MAX_VOCAB
            )));
        }
        let need = (batch - 1)
            .checked_mul(row_stride)
            .and_then(|x| x.checked_add(vocab))
            .ok_or_else(|| Error::InvalidInput("GPU sampler: logits shape overflows".into()))?;
        if logits.len() < need {
            return Err(Error::InvalidInput(format!(
                "GPU sampler: logits buffer of {} floats < {batch} rows x stride {row_stride}",
                logits.len()
            )));
        }
        for (i, p) in params.iter().enumerate() {
            let end = p.recent_offset as usize + p.recent_len as usize;
            if p.recent_len as usize > MAX_PENALTY_WINDOW || end > recent.len() {
                return Err(Error::InvalidInput(format!(
                    "GPU sampler: row {i} penalty window [{}, {end}) outside {} recent tokens",
                    p.recent_offset,
                    recent.len()
                )));
            }
        }
        let batch32 = u32::try_from(batch)
            .map_err(|_| Error::InvalidInput(format!("GPU sampler: batch {batch}")))?;
        ensure(&self.dev, &mut self.rows, batch)?;
        ensure(&self.dev, &mut self.recent, recent.len())?;
        if self.out.as_ref().is_none_or(|b| b.len() < 2 * batch) {
            let rows = batch.next_power_of_two();
            self.out = Some(self.dev.alloc::<u32>(2 * rows)?);
            self.out_rows = rows;
        }
        let (rows_b, recent_b, out_b) = (buf(&self.rows)?, buf(&self.recent)?, buf(&self.out)?);
        self.dev.write(rows_b, 0, params)?;
        self.dev.write(recent_b, 0, recent)?;
        let args = SampleArgs {
            logits: logits.ptr(),
            rows: rows_b.ptr(),
            recent: recent_b.ptr(),
            tokens: out_b.ptr(),
            status: out_b.ptr_at(self.out_rows)?,
            batch: batch32,
            vocab: vocab as u32,
            row_stride: row_stride as u64,
        };
        let cfg = LaunchConfig::linear(batch32, BLOCK_THREADS);
        let mut a = args;
        let mut argv = [&mut a as *mut SampleArgs as *mut c_void];
        // SAFETY: SampleArgs mirrors the kernel's struct; every buffer was checked above to hold
        // what the kernel reads (rows, windows inside `recent`, batch x stride logits) and writes.
        unsafe { self.dev.launch(&self.kernel, cfg, &mut argv) }
    }

    /// Waits for the last launch and returns each row's token or its error.
    pub fn read_back(&mut self, batch: usize) -> Result<Vec<Result<u32>>> {
        let out = self.dev.download(buf(&self.out)?)?;
        if batch > self.out_rows {
            return Err(Error::Gpu(format!(
                "sampler read back {batch} rows of {}",
                self.out_rows
            )));
        }
        let (tokens, status) = out.split_at(self.out_rows);
        Ok((0..batch)
            .map(|i| match status[i] {
                0 => Ok(tokens[i]),
                1 => Err(Error::Sampler(format!("row {i}: NaN or +inf logit"))),
                2 => Err(Error::Sampler(format!("row {i}: every logit is -inf"))),
                s => Err(Error::Gpu(format!("row {i}: sampler status {s}"))),
            })
            .collect())
    }
}

fn check_rows(what: &str, rows: usize, n: usize) -> Result<()> {
    if rows == n {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "GPU sampler: {n} {what} values for {rows} rows"
        )))
    }
}

/// Samples a batch where the logits are on the GPU: with the GPU sampler when given, else (or when
/// the GPU sampler fails: one warning) by copying the logits to the host and sampling on the CPU.
/// Bad logits in a row (NaN) are an error either way, not a fallback.
pub fn sample_with_fallback(
    gpu: Option<&mut GpuSampler>,
    dev: &GpuDevice,
    logits: &GpuBuffer<f32>,
    rows: &[SampleRow<'_>],
    vocab: usize,
    row_stride: usize,
) -> Result<Vec<u32>> {
    if let Some(s) = gpu {
        match s.sample(logits, rows, vocab, row_stride) {
            Ok(t) => return Ok(t),
            Err(e @ (Error::Sampler(_) | Error::InvalidInput(_))) => return Err(e),
            Err(e) => tracing::warn!("GPU sampler failed, sampling this step on the CPU: {e}"),
        }
    }
    let host = dev.download(logits)?;
    let mut packed = Vec::with_capacity(rows.len() * vocab);
    for i in 0..rows.len() {
        let start = i * row_stride;
        let row = host.get(start..start + vocab).ok_or_else(|| {
            Error::InvalidInput(format!("sampler: logits buffer too short for row {i}"))
        })?;
        packed.extend_from_slice(row);
    }
    cpu::sample_batch(rows, &packed, vocab)
}
