//! `rocmforge_cli bench`: llama-bench-style speed rows.
//!
//! `ppN`: one batch of N tokens from an empty cache; `tgN`: N tokens decoded one at a time
//! from an empty cache, each one sampled (default sampling parameters: temperature 0.8, top-k 40,
//! top-p 0.95, min-p 0.05) with `--sampler` and fed back, so tg includes sampling. Prompt tokens
//! are random (speed does not depend on them). Each test runs once as a warm-up, then `-r` times;
//! rows report the mean and standard deviation of tokens/s.

use std::time::Instant;

use clap::Args;
use serde::Serialize;

use crate::backend::Backend;
use crate::cli::device::{self, Device};
use crate::model::{Batch, Model, SeqSlot, BLOCK_SIZE};
use crate::sampler::select::TokenSampler;
use crate::sampler::{SampleRow, SamplerChoice, SamplingParams};
use crate::{Error, Result};

/// Output format of `bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Md,
    Json,
}

/// Arguments of `rocmforge_cli bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Path of the GGUF file.
    #[arg(long)]
    pub gguf: std::path::PathBuf,
    /// Prompt tokens of the prompt-processing test (0: skip it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens of the decode test (0: skip it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Where to run.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// CPU threads (default: all cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Where tg samples each token (default sampling parameters): auto, gpu or cpu.
    #[arg(long, default_value = "auto")]
    pub sampler: SamplerChoice,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Md)]
    pub output: Format,
}

/// One result row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub model: String,
    pub size: u64,
    pub params: u64,
    pub backend: String,
    pub threads: usize,
    /// Where tokens were sampled ("gpu" or "cpu").
    pub sampler: String,
    pub test: String,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub avg_ts: f64,
    pub stddev_ts: f64,
    pub samples_ts: Vec<f64>,
}

/// llama.cpp's name of `general.file_type`.
fn ftype_name(ft: Option<u32>) -> &'static str {
    match ft {
        Some(0) => "all F32",
        Some(1) => "F16",
        Some(2) => "Q4_0",
        Some(3) => "Q4_1",
        Some(7) => "Q8_0",
        Some(8) => "Q5_0",
        Some(9) => "Q5_1",
        Some(10) => "Q2_K - Medium",
        Some(12) => "Q3_K - Medium",
        Some(14) => "Q4_K - Small",
        Some(15) => "Q4_K - Medium",
        Some(16) => "Q5_K - Small",
        Some(17) => "Q5_K - Medium",
        Some(18) => "Q6_K",
        Some(32) => "BF16",
        _ => "unknown type",
    }
}

/// Random token ids below `n_vocab` (xorshift, fixed seed).
fn tokens(n: usize, n_vocab: usize) -> Vec<u32> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % n_vocab as u64) as u32
        })
        .collect()
}

/// Seconds to process `n_prompt` tokens as one batch and then `n_gen` tokens one at a time, each
/// sampled from the last logits with `sampler` (default parameters) and fed back.
pub fn time_run<B: Backend>(
    model: &Model<B>,
    sampler: &mut TokenSampler,
    n_prompt: usize,
    n_gen: usize,
) -> Result<f64> {
    let n_ctx = n_prompt + n_gen;
    let n_blocks = n_ctx.div_ceil(BLOCK_SIZE).max(1);
    let mut kv = model.new_kv_cache(n_blocks)?;
    let table: Vec<u32> = (0..n_blocks as u32).collect();
    let mut toks = tokens(n_ctx.max(1), model.config().n_vocab);
    let params = SamplingParams::default();
    let t0 = Instant::now();
    let mut step = |toks: &[u32], start: usize, n: usize| -> Result<u32> {
        let positions: Vec<u32> = (start as u32..(start + n) as u32).collect();
        let seq_of = vec![0u32; n];
        let seqs = [SeqSlot {
            block_table: &table,
            kv_len: start + n,
        }];
        let batch = Batch {
            tokens: &toks[start..start + n],
            positions: &positions,
            seq_of_token: &seq_of,
            seqs: &seqs,
            logits_for: &[n as u32 - 1],
        };
        let logits = model.forward_device(&batch, &mut kv)?;
        let row = SampleRow {
            params: &params,
            recent: &toks[start.saturating_sub(params.penalty_last_n)..start + n],
            seq_id: 0,
            step: start as u64,
        };
        Ok(sampler.sample(model.backend(), &logits, &[row])?[0])
    };
    if n_prompt > 0 {
        step(&toks, 0, n_prompt)?;
    }
    for i in 0..n_gen {
        let next = step(&toks, n_prompt + i, 1)?;
        if let Some(t) = toks.get_mut(n_prompt + i + 1) {
            *t = next;
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let sd = if x.len() > 1 {
        (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

/// Runs the pp and tg tests on `model`.
pub fn bench<B: Backend>(
    model: &Model<B>,
    sampler: &mut TokenSampler,
    n_prompt: usize,
    n_gen: usize,
    reps: usize,
) -> Result<Vec<Row>> {
    if reps == 0 {
        return Err(Error::InvalidInput(
            "-r 0: need at least one repetition".into(),
        ));
    }
    let g = model.gguf();
    let c = model.config();
    let size: u64 = g.tensors().iter().map(|t| t.n_bytes).sum();
    let params = crate::model::Config::n_params(g);
    let name = format!(
        "{} {}",
        c.arch.name(),
        ftype_name(g.get_u32_opt("general.file_type").ok().flatten())
    );
    let mut rows = Vec::new();
    for (np, ng) in [(n_prompt, 0), (0, n_gen)] {
        if np + ng == 0 {
            continue;
        }
        time_run(model, sampler, np, ng)?; // warm-up
        let mut samples = Vec::with_capacity(reps);
        for _ in 0..reps {
            let s = time_run(model, sampler, np, ng)?;
            samples.push((np + ng) as f64 / s);
        }
        let (avg, sd) = mean_sd(&samples);
        rows.push(Row {
            model: name.clone(),
            size,
            params,
            backend: model.backend().name(),
            threads: model.backend().threads(),
            sampler: sampler.name().to_string(),
            test: if np > 0 {
                format!("pp{np}")
            } else {
                format!("tg{ng}")
            },
            n_prompt: np,
            n_gen: ng,
            avg_ts: avg,
            stddev_ts: sd,
            samples_ts: samples,
        });
    }
    Ok(rows)
}

/// Rows as llama-bench's markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| model | size | params | backend | threads | sampler | test | t/s |\n\
         | --- | ---: | ---: | --- | ---: | --- | ---: | ---: |\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {:.2} MiB | {:.2} M | {} | {} | {} | {} | {:.2} ± {:.2} |\n",
            r.model,
            r.size as f64 / (1024.0 * 1024.0),
            r.params as f64 / 1e6,
            r.backend,
            r.threads,
            r.sampler,
            r.test,
            r.avg_ts,
            r.stddev_ts
        );
    }
    s
}

struct Task {
    n_prompt: usize,
    n_gen: usize,
    reps: usize,
    sampler: SamplerChoice,
    output: Format,
}

impl device::ModelTask for Task {
    type Output = ();
    fn run<B: Backend>(self, model: Model<B>, _load_s: f64) -> Result<()> {
        let mut sampler = TokenSampler::new(model.backend(), self.sampler)?;
        eprintln!(
            "bench: sampling every token on the {} (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05)",
            sampler.name().to_uppercase()
        );
        let rows = bench(&model, &mut sampler, self.n_prompt, self.n_gen, self.reps)?;
        match self.output {
            Format::Md => print!("{}", markdown(&rows)),
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&rows)
                    .map_err(|e| Error::InvalidInput(format!("json: {e}")))?
            ),
        }
        Ok(())
    }
}

/// Runs the command.
pub fn run(args: BenchArgs) -> Result<()> {
    let task = Task {
        n_prompt: args.n_prompt,
        n_gen: args.n_gen,
        reps: args.reps,
        sampler: args.sampler,
        output: args.output,
    };
    device::with_model(&args.gguf, args.device, args.threads, task)
}
