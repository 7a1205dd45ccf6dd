//! The engine's sampler: [`crate::sampler::cpu::sample`] behind [`TokenSampler`].

use super::{SampleArgs, SamplingSpec, TokenSampler};
use crate::sampler::{cpu, SamplingParams};
use crate::Result;

/// The sampler's parameters for a request's settings and random key.
pub fn sampling_params(spec: &SamplingSpec, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: spec.temperature,
        top_k: spec.top_k,
        top_p: spec.top_p,
        min_p: spec.min_p,
        repeat_penalty: spec.repeat_penalty,
        presence_penalty: spec.presence_penalty,
        frequency_penalty: spec.frequency_penalty,
        penalty_last_n: spec.penalty_last_n,
        seed,
    }
}

/// Checks a request's settings the way the sampler will.
pub fn validate(spec: &SamplingSpec) -> Result<()> {
    sampling_params(spec, 0).validate()
}

/// Samples on the CPU (Philox keyed by (seed; seq_id, step)).
#[derive(Debug, Default)]
pub struct CpuSampler;

impl TokenSampler for CpuSampler {
    fn sample(&mut self, a: &SampleArgs) -> Result<u32> {
        cpu::sample(
            &sampling_params(a.spec, a.seed),
            a.logits,
            a.recent,
            a.seq_id,
            a.step,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_step_give_the_same_token_whatever_the_request() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let spec = SamplingSpec {
            temperature: 1.0,
            ..Default::default()
        };
        let mut s = CpuSampler;
        let draw = |s: &mut CpuSampler, seed, step| {
            s.sample(&SampleArgs {
                spec: &spec,
                seed,
                logits: &logits,
                recent: &[],
                seq_id: 0,
                step,
            })
            .unwrap()
        };
        let a: Vec<u32> = (0..20).map(|st| draw(&mut s, 7, st)).collect();
        let b: Vec<u32> = (0..20).map(|st| draw(&mut s, 7, st)).collect();
        let c: Vec<u32> = (0..20).map(|st| draw(&mut s, 8, st)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
