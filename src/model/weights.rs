//! Loading tensors from a GGUF file onto a backend, with shape checks and a progress bar.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::backend::{Backend, HostBytes};
use crate::gguf::{GgufFile, TensorInfo};
use crate::quant::GgmlType;
use crate::{Error, Result};

/// One tensor's bytes, kept alive by the file they live in (zero-copy on the CPU).
struct TensorBytes {
    file: Arc<GgufFile>,
    info: TensorInfo,
}

impl AsRef<[u8]> for TensorBytes {
    fn as_ref(&self) -> &[u8] {
        self.file.tensor_data(&self.info)
    }
}

/// Fetches named tensors from a file onto a backend, checking their shapes.
pub struct Loader<'a, B: Backend> {
    pub file: Arc<GgufFile>,
    pub be: &'a B,
    bar: ProgressBar,
    start: Instant,
    shown: bool,
}

impl<'a, B: Backend> Loader<'a, B> {
    /// A loader; its progress bar appears on a terminal once loading takes more than a moment.
    pub fn new(file: Arc<GgufFile>, be: &'a B) -> Self {
        let total: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) =
            ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} ({elapsed})")
        {
            bar.set_style(style);
        }
        Loader {
            file,
            be,
            bar,
            start: Instant::now(),
            shown: false,
        }
    }

    fn info(&self, name: &str) -> Result<TensorInfo> {
        self.file
            .tensor(name)
            .cloned()
            .ok_or_else(|| Error::Model(format!("tensor '{name}' is missing")))
    }

    fn tick(&mut self, n: u64) {
        if !self.shown
            && self.start.elapsed() > Duration::from_millis(300)
            && std::io::stderr().is_terminal()
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
        self.bar.inc(n);
    }

    /// Whether the file has tensor `name`.
    pub fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    /// The matrix `name`, which must be `[rows, cols]` (ggml dims `[cols, rows]`).
    pub fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<B::Weight> {
        let info = self.info(name)?;
        if info.dims != [cols as u64, rows as u64] {
            return Err(Error::Model(format!(
                "tensor '{name}' has dims {:?}, expected [{cols}, {rows}]",
                info.dims
            )));
        }
        self.tick(info.n_bytes);
        let ty = info.ty;
        let bytes: HostBytes = Arc::new(TensorBytes {
            file: self.file.clone(),
            info,
        });
        self.be
            .weight(ty, rows, cols, bytes)
            .map_err(|e| Error::Model(format!("tensor '{name}': {e}")))
    }

    /// The matrix `name` if present.
    /// The matrices `names` (`rows[i]` x `cols` each) stacked into one `[sum rows, cols]`
    /// weight, when they all have the same type (None otherwise, nothing loaded).
    pub fn matrix_cat(
        &mut self,
        names: &[&str],
        rows: &[usize],
        cols: usize,
    ) -> Result<Option<B::Weight>> {
        let mut infos = Vec::with_capacity(names.len());
        for (name, &r) in names.iter().zip(rows) {
            let info = self.info(name)?;
            if info.dims != [cols as u64, r as u64] {
                return Err(Error::Model(format!(
                    "tensor '{name}' has dims {:?}, expected [{cols}, {r}]",
                    info.dims
                )));
            }
            infos.push(info);
        }
        let ty = infos[0].ty;
        if infos.iter().any(|i| i.ty != ty) {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(infos.iter().map(|i| i.n_bytes as usize).sum());
        for info in &infos {
            bytes.extend_from_slice(self.file.tensor_data(info));
            self.tick(info.n_bytes);
        }
        let total: usize = rows.iter().sum();
        let bytes: HostBytes = Arc::new(bytes);
        self.be
            .weight(ty, total, cols, bytes)
            .map(Some)
            .map_err(|e| Error::Model(format!("tensors {names:?} stacked: {e}")))
    }

    /// The vectors `names` (`lens[i]` values each) concatenated into one `[1, sum]` tensor.
    pub fn vector_cat(&mut self, names: &[&str], lens: &[usize]) -> Result<B::Tensor> {
        let mut v = Vec::with_capacity(lens.iter().sum());
        for (name, &n) in names.iter().zip(lens) {
            v.extend(self.host_vector(name, n)?);
        }
        let n = v.len();
        self.be.tensor(&v, 1, n)
    }

    pub fn opt_matrix(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Option<B::Weight>> {
        if self.has(name) {
            self.matrix(name, rows, cols).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The vector `name` of `n` values as f32 on the host.
    pub fn host_vector(&mut self, name: &str, n: usize) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        if info.dims != [n as u64] {
            return Err(Error::Model(format!(
                "tensor '{name}' has dims {:?}, expected [{n}]",
                info.dims
            )));
        }
        if !matches!(info.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return Err(Error::Model(format!(
                "tensor '{name}' has type {}, expected a float type",
                info.ty
            )));
        }
        self.tick(info.n_bytes);
        let data = self.file.tensor_data(&info);
        let out: Vec<f32> = match info.ty {
            GgmlType::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            GgmlType::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        };
        if out.len() != n {
            return Err(Error::Model(format!(
                "tensor '{name}' holds {} bytes for {n} values",
                data.len()
            )));
        }
        Ok(out)
    }

    /// The vector `name` of `n` values as a `[1, n]` tensor.
    pub fn vector(&mut self, name: &str, n: usize) -> Result<B::Tensor> {
        let v = self.host_vector(name, n)?;
        self.be.tensor(&v, 1, n)
    }

    /// The vector `name` if present.
    pub fn opt_vector(&mut self, name: &str, n: usize) -> Result<Option<B::Tensor>> {
        if self.has(name) {
            self.vector(name, n).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Ends the progress bar.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
