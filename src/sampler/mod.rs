//! Token sampling: parameters, the CPU sampler (reference and fallback) and the GPU sampler.
//!
//! Both samplers implement one algorithm (described in `docs/GPU_SAMPLER.md` and in [`cpu`]):
//! penalties on the logits, a softmax with the temperature fused in, weights quantized to
//! integers so sums are exact in any order, and sort-free rejection sampling with a pivot that
//! rises each round, randomness from Philox 4x32-10 keyed by (seed; seq_id, step, round). The same
//! seed gives the same token on CPU and GPU except where the two `exp` implementations differ in
//! the last bit at a boundary.

pub mod cpu;
pub mod gpu;
pub mod philox;
pub mod select;

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Per-sequence sampling parameters. `Default` is llama.cpp's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy (argmax, ties to the lowest id).
    pub temperature: f32,
    /// Keep tokens with fewer than `top_k` tokens strictly more probable; 0 = off.
    pub top_k: u32,
    /// Keep tokens whose strictly more probable tokens hold less than `top_p` of the mass; 1.0 = off.
    pub top_p: f32,
    /// Keep tokens with probability >= `min_p` times the largest; 0.0 = off.
    pub min_p: f32,
    /// llama.cpp repetition penalty: positive logits of recent tokens divided, others multiplied; 1.0 = off.
    pub repeat_penalty: f32,
    /// OpenAI presence penalty: subtracted once from the logit of every recent token.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty: subtracted per occurrence among the recent tokens.
    pub frequency_penalty: f32,
    /// How many of the last tokens count as recent for the penalties; 0 = penalties off.
    pub penalty_last_n: usize,
    /// Philox key.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy parameters: temperature 0, no penalties.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Checks every field; the error names the field and the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, value: f32, want: &str| {
            Err(Error::InvalidInput(format!(
                "sampling parameter {field} = {value}: must be {want}"
            )))
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature", self.temperature, "finite and >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "in [0, 1]");
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad("repeat_penalty", self.repeat_penalty, "finite and > 0");
        }
        if !self.presence_penalty.is_finite() {
            return bad("presence_penalty", self.presence_penalty, "finite");
        }
        if !self.frequency_penalty.is_finite() {
            return bad("frequency_penalty", self.frequency_penalty, "finite");
        }
        Ok(())
    }

    /// Whether this samples greedily (temperature 0).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Whether any penalty changes the logits.
    pub fn has_penalties(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }
}

/// One row of a batch to sample: its parameters, recent tokens (oldest first; the last
/// `penalty_last_n` count), and the (sequence, step) pair that selects its random numbers.
#[derive(Debug, Clone, Copy)]
pub struct SampleRow<'a> {
    pub params: &'a SamplingParams,
    pub recent: &'a [u32],
    pub seq_id: u64,
    pub step: u64,
}

/// `--sampler auto|gpu|cpu`: where tokens are sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SamplerChoice {
    /// The GPU sampler when the model runs on a GPU backend, else the CPU sampler.
    #[default]
    Auto,
    /// Always the GPU sampler (an error without a GPU backend).
    Gpu,
    /// Always the CPU sampler (logits copied to the host).
    Cpu,
}

impl SamplerChoice {
    /// Whether to sample on the GPU, given whether the model runs on a GPU backend.
    pub fn use_gpu(self, gpu_backend: bool) -> Result<bool> {
        match self {
            SamplerChoice::Auto => Ok(gpu_backend),
            SamplerChoice::Cpu => Ok(false),
            SamplerChoice::Gpu if gpu_backend => Ok(true),
            SamplerChoice::Gpu => Err(Error::InvalidInput(
                "--sampler gpu needs a GPU device (--device cuda or rocm)".into(),
            )),
        }
    }
}

impl FromStr for SamplerChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(SamplerChoice::Auto),
            "gpu" => Ok(SamplerChoice::Gpu),
            "cpu" => Ok(SamplerChoice::Cpu),
            _ => Err(Error::InvalidInput(format!(
                "--sampler '{s}': expected auto, gpu or cpu"
            ))),
        }
    }
}

impl fmt::Display for SamplerChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SamplerChoice::Auto => "auto",
            SamplerChoice::Gpu => "gpu",
            SamplerChoice::Cpu => "cpu",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_llama_cpp() {
        let p = SamplingParams::default();
        assert_eq!(
            (p.temperature, p.top_k, p.top_p, p.min_p),
            (0.8, 40, 0.95, 0.05)
        );
        assert_eq!((p.repeat_penalty, p.penalty_last_n), (1.0, 64));
        assert!(p.validate().is_ok());
    }

    #[test]
    fn validate_names_field_and_value() {
        let cases: [(SamplingParams, &str); 7] = [
            (
                SamplingParams {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "temperature = NaN",
            ),
            (
                SamplingParams {
                    temperature: -0.5,
                    ..Default::default()
                },
                "temperature = -0.5",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p = 0",
            ),
            (
                SamplingParams {
                    top_p: 1.5,
                    ..Default::default()
                },
                "top_p = 1.5",
            ),
            (
                SamplingParams {
                    min_p: -0.1,
                    ..Default::default()
                },
                "min_p = -0.1",
            ),
            (
                SamplingParams {
                    repeat_penalty: 0.0,
                    ..Default::default()
                },
                "repeat_penalty = 0",
            ),
            (
                SamplingParams {
                    frequency_penalty: f32::INFINITY,
                    ..Default::default()
                },
                "frequency_penalty = inf",
            ),
        ];
        for (p, want) in cases {
            let msg = p.validate().unwrap_err().to_string();
            assert!(msg.contains(want), "{msg:?} lacks {want:?}");
            assert!(msg.starts_with("invalid input"), "{msg}");
        }
    }

    #[test]
    fn sampler_choice_parses() {
        assert_eq!(
            "auto".parse::<SamplerChoice>().unwrap(),
            SamplerChoice::Auto
        );
        assert_eq!("GPU".parse::<SamplerChoice>().unwrap(), SamplerChoice::Gpu);
        assert_eq!("cpu".parse::<SamplerChoice>().unwrap(), SamplerChoice::Cpu);
        assert!("tpu"
            .parse::<SamplerChoice>()
            .unwrap_err()
            .to_string()
            .contains("'tpu'"));
        assert!(SamplerChoice::Auto.use_gpu(true).unwrap());
        assert!(!SamplerChoice::Auto.use_gpu(false).unwrap());
        assert!(SamplerChoice::Gpu.use_gpu(false).is_err());
        assert!(!SamplerChoice::Cpu.use_gpu(true).unwrap());
    }
}
