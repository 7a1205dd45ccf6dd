//! The `--device auto|cpu|cuda[:N]|rocm[:N]` argument.

use std::fmt;
use std::str::FromStr;

use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::backend::GpuBackend;
use crate::backend::gpu::{open_auto, GpuDevice, GpuKind};
use crate::backend::Backend;
use crate::gguf::GgufFile;
use crate::model::Model;

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The first GPU found, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// An NVIDIA GPU by index.
    Cuda(usize),
    /// An AMD GPU by index.
    Rocm(usize),
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, idx) = match s.split_once(':') {
            Some((k, i)) => {
                let n = i
                    .parse::<usize>()
                    .map_err(|_| format!("device index '{i}' is not a number"))?;
                (k, Some(n))
            }
            None => (s, None),
        };
        match (kind, idx) {
            ("auto", None) => Ok(Device::Auto),
            ("cpu", None) => Ok(Device::Cpu),
            ("cuda", i) => Ok(Device::Cuda(i.unwrap_or(0))),
            ("rocm" | "hip", i) => Ok(Device::Rocm(i.unwrap_or(0))),
            _ => Err(format!(
                "unknown device '{s}' (expected auto, cpu, cuda[:N] or rocm[:N])"
            )),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Auto => f.write_str("auto"),
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            Device::Rocm(i) => write!(f, "rocm:{i}"),
        }
    }
}

impl Device {
    /// Opens the GPU this names. `cpu`: `Ok(None)`. `cuda[:N]`/`rocm[:N]`: that device, or an
    /// error saying why not. `auto`: the first working GPU, saying on stderr which one and why
    /// any other was rejected; `Ok(None)` (after the reasons) when none works.
    pub fn open_gpu(self) -> crate::Result<Option<GpuDevice>> {
        match self {
            Device::Cpu => Ok(None),
            Device::Cuda(i) => GpuDevice::open(GpuKind::Cuda, i).map(Some),
            Device::Rocm(i) => GpuDevice::open(GpuKind::Rocm, i).map(Some),
            Device::Auto => {
                let (dev, rejected) = open_auto();
                for r in &rejected {
                    eprintln!("device auto: rejected {r}");
                }
                match &dev {
                    Some(d) => eprintln!("device auto: using {}", d.info()),
                    None => eprintln!("device auto: no usable GPU, using the CPU"),
                }
                Ok(dev)
            }
        }
    }
}

/// A command's work on a loaded model, generic over the backend the device picks.
pub trait ModelTask {
    type Output;
    /// Runs on `model`, which took `load_s` seconds to load.
    fn run<B: Backend>(self, model: Model<B>, load_s: f64) -> crate::Result<Self::Output>;
    /// Whether a GPU backend should keep F16 copies of the weights (batched work).
    fn batch_f16(&self) -> BatchF16 {
        BatchF16::Off
    }
    /// Whether a GPU backend should compute batch-invariantly
    /// ([`GpuBackend::with_batch_invariance`]).
    fn batch_invariant(&self) -> bool {
        false
    }
}

/// Sets rayon's global pool to `threads` (default: every core); later calls keep the first.
pub fn init_threads(threads: Option<usize>) -> crate::Result<usize> {
    if let Some(0) = threads {
        return Err(crate::Error::InvalidInput(
            "--threads 0: must be positive".into(),
        ));
    }
    let n = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // Fails only when the pool already exists (a second command in one process): keep it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    Ok(rayon::current_num_threads())
}

/// `--batch-f16 auto|on|off`: whether a GPU backend keeps F16 copies of quantized weight
/// matrices for batched products (see [`GpuBackend::with_f16_batch_weights`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BatchF16 {
    /// On when the copies take at most 40% of the device's free memory.
    Auto,
    /// Always.
    On,
    /// Never: batched products dequantize each matrix as they go.
    #[default]
    Off,
}

impl BatchF16 {
    /// Whether to keep the copies for the model in `file` on `dev`.
    pub fn wanted(self, dev: &crate::backend::gpu::GpuDevice, file: &GgufFile) -> bool {
        match self {
            BatchF16::On => true,
            BatchF16::Off => false,
            BatchF16::Auto => {
                let bytes = f16_copy_bytes(file);
                let free = dev.mem_info().map(|(free, _)| free).unwrap_or(0);
                let on = bytes as f64 <= 0.4 * free as f64;
                tracing::info!(
                    "F16 copies of the quantized weights for batched products: {} ({:.0} MiB, {:.0} MiB free)",
                    if on { "on" } else { "off" },
                    bytes as f64 / 1048576.0,
                    free as f64 / 1048576.0
                );
                on
            }
        }
    }
}

/// Bytes of F16 copies of the quantized 2-D tensors of `file`.
pub fn f16_copy_bytes(file: &GgufFile) -> u64 {
    use crate::quant::GgmlType;
    file.tensors()
        .iter()
        .filter(|t| t.dims.len() == 2 && !matches!(t.ty, GgmlType::F16 | GgmlType::F32))
        .map(|t| t.n_elements() * 2)
        .sum()
}

/// A GPU backend on `dev` for the model in `file`: batch-invariant or not, then with F16 batch
/// copies as `f16` says (never with batch invariance, which does not read them).
pub fn gpu_backend(
    dev: crate::backend::gpu::GpuDevice,
    file: &GgufFile,
    f16: BatchF16,
    invariant: bool,
) -> GpuBackend {
    let copies = !invariant && f16.wanted(&dev, file);
    GpuBackend::new(dev)
        .with_batch_invariance(invariant)
        .with_f16_batch_weights(copies)
}

/// Loads the model at `path` on `device` and runs `task` on it.
pub fn with_model<T: ModelTask>(
    path: &std::path::Path,
    device: Device,
    threads: Option<usize>,
    task: T,
) -> crate::Result<T::Output> {
    init_threads(threads)?;
    match device {
        Device::Cpu => {
            let t0 = std::time::Instant::now();
            let model = Model::open(path, CpuBackend::new())?;
            task.run(model, t0.elapsed().as_secs_f64())
        }
        Device::Auto | Device::Cuda(_) | Device::Rocm(_) => {
            let t0 = std::time::Instant::now();
            match device.open_gpu()? {
                Some(dev) => {
                    let file = std::sync::Arc::new(GgufFile::open(path)?);
                    let be = gpu_backend(dev, &file, task.batch_f16(), task.batch_invariant());
                    let model = Model::load(file, be)?;
                    task.run(model, t0.elapsed().as_secs_f64())
                }
                None => {
                    let model = Model::open(path, CpuBackend::new())?;
                    task.run(model, t0.elapsed().as_secs_f64())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("auto".parse::<Device>(), Ok(Device::Auto));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:1".parse::<Device>(), Ok(Device::Cuda(1)));
        assert_eq!("rocm:2".parse::<Device>(), Ok(Device::Rocm(2)));
        assert!("gpu".parse::<Device>().is_err());
        assert!("cuda:x".parse::<Device>().is_err());
        assert!("cpu:1".parse::<Device>().is_err());
    }

    #[test]
    fn opening_never_panics() {
        assert!(Device::Cpu.open_gpu().unwrap().is_none());
        // Without a GPU (CI) these fail with a reason; with one they may succeed.
        let _ = Device::Auto.open_gpu();
        if let Err(e) = Device::Cuda(999).open_gpu() {
            assert!(!e.to_string().is_empty());
        }
        assert!(Device::Rocm(999).open_gpu().is_err());
    }
}
