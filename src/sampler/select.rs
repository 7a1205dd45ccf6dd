//! The sampler a command uses, picked by `--sampler auto|gpu|cpu` and the backend: samples the
//! logits a forward pass left on the backend ([`crate::model::Model::forward_device`]). With the
//! GPU sampler only the token ids come back to the host; with the CPU sampler the logits do.

use super::gpu::{sample_with_fallback, GpuSampler};
use super::{cpu, SampleRow, SamplerChoice};
use crate::backend::Backend;
use crate::Result;

/// Where tokens are sampled, for one backend.
pub struct TokenSampler {
    gpu: Option<GpuSampler>,
}

impl TokenSampler {
    /// The sampler `choice` asks for on `be`: `auto` is the GPU sampler on a GPU backend (the CPU
    /// sampler, with a warning, if its kernel fails to load), `gpu` on a host backend is an error.
    pub fn new<B: Backend>(be: &B, choice: SamplerChoice) -> Result<Self> {
        let dev = be.gpu_device();
        if !choice.use_gpu(dev.is_some())? {
            return Ok(TokenSampler { gpu: None });
        }
        let Some(dev) = dev else {
            return Ok(TokenSampler { gpu: None });
        };
        match GpuSampler::new(dev) {
            Ok(s) => Ok(TokenSampler { gpu: Some(s) }),
            Err(e) if choice == SamplerChoice::Auto => {
                tracing::warn!("GPU sampler unavailable, sampling on the CPU: {e}");
                Ok(TokenSampler { gpu: None })
            }
            Err(e) => Err(e),
        }
    }

    /// Whether tokens are sampled on the GPU.
    pub fn is_gpu(&self) -> bool {
        self.gpu.is_some()
    }

    /// "gpu" or "cpu", for reports.
    pub fn name(&self) -> &'static str {
        if self.is_gpu() {
            "gpu"
        } else {
            "cpu"
        }
    }

    /// One token per row of `logits` (`[rows.len(), n_vocab]` on `be`). The GPU sampler falls
    /// back to the CPU for this step (one warning) if it fails.
    pub fn sample<B: Backend>(
        &mut self,
        be: &B,
        logits: &B::Tensor,
        rows: &[SampleRow<'_>],
    ) -> Result<Vec<u32>> {
        let (n, vocab) = be.shape(logits);
        if n != rows.len() {
            return Err(crate::Error::InvalidInput(format!(
                "sampler: {n} logit rows for {} sample rows",
                rows.len()
            )));
        }
        if let (Some(s), Some(dev), Some(buf)) =
            (self.gpu.as_mut(), be.gpu_device(), be.gpu_buffer(logits))
        {
            let dev = dev.clone();
            return sample_with_fallback(Some(s), &dev, buf, rows, vocab, vocab);
        }
        let host = be.to_host(logits)?;
        cpu::sample_batch(rows, &host, vocab)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::sampler::SamplingParams;

    #[test]
    fn cpu_backend_samples_on_the_cpu_and_refuses_gpu() {
        let be = CpuBackend::new();
        let err = TokenSampler::new(&be, SamplerChoice::Gpu).err().unwrap();
        assert!(err.to_string().contains("--sampler gpu"), "{err}");
        for c in [SamplerChoice::Auto, SamplerChoice::Cpu] {
            let mut s = TokenSampler::new(&be, c).unwrap();
            assert!(!s.is_gpu());
            let vocab = 1000;
            let data: Vec<f32> = (0..2 * vocab)
                .map(|_| rand::random::<f32>() * 8.0)
                .collect();
            let t = be.tensor(&data, 2, vocab).unwrap();
            let p = SamplingParams::default();
            let rows: Vec<SampleRow> = (0..2)
                .map(|i| SampleRow {
                    params: &p,
                    recent: &[],
                    seq_id: i,
                    step: 3,
                })
                .collect();
            let got = s.sample(&be, &t, &rows).unwrap();
            let want = cpu::sample_batch(&rows, &data, vocab).unwrap();
            assert_eq!(got, want);
            assert!(s.sample(&be, &t, &rows[..1]).is_err());
        }
    }
}
