//! `rocmforge_cli generate`: streams a model's continuation of a prompt to stdout.
//!
//! Only the generated text goes to stdout, flushed per token (UTF-8 safe through the
//! incremental decoder); load time and prompt / generation speeds go to stderr. The prompt is
//! tokenized with BOS as the metadata says and processed as one batch; generation stops at an
//! end-of-generation token or after `--max-tokens`.

use std::io::Write;
use std::time::Instant;

use clap::Args;

use crate::backend::Backend;
use crate::cli::device::{self, Device};
use crate::model::{Batch, Model, SeqSlot, BLOCK_SIZE};
use crate::sampler::select::TokenSampler;
use crate::sampler::{SampleRow, SamplerChoice, SamplingParams};
use crate::tokenizer::{EncodeOptions, IncrementalDecoder, Tokenizer};
use crate::{Error, Result};

/// Arguments of `rocmforge_cli generate`. Sampling defaults are llama.cpp's.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Path of the GGUF file.
    #[arg(long)]
    pub gguf: std::path::PathBuf,
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Top-p (nucleus) mass kept (1: off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Top-k tokens kept (0: off).
    #[arg(long, default_value_t = 40)]
    pub top_k: u32,
    /// Min-p relative to the most probable token (0: off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Presence penalty (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Frequency penalty (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Recent tokens the penalties look at.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed (same seed, same tokens).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Parse special tokens written in the prompt.
    #[arg(long)]
    pub parse_special: bool,
    /// Where to run.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// Where to sample: auto (the GPU with a GPU device), gpu or cpu.
    #[arg(long, default_value = "auto")]
    pub sampler: SamplerChoice,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

struct Task {
    args: GenerateArgs,
}

impl device::ModelTask for Task {
    type Output = ();
    fn run<B: Backend>(self, model: Model<B>, load_s: f64) -> Result<()> {
        generate(&model, &self.args, load_s)
    }
}

/// Runs the command.
pub fn run(args: GenerateArgs) -> Result<()> {
    let params = sampling(&args);
    params.validate()?;
    let (path, dev, threads) = (args.gguf.clone(), args.device, args.threads);
    device::with_model(&path, dev, threads, Task { args })
}

fn sampling(a: &GenerateArgs) -> SamplingParams {
    SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
        presence_penalty: a.presence_penalty,
        frequency_penalty: a.frequency_penalty,
        penalty_last_n: a.repeat_last_n,
        seed: a.seed,
    }
}

fn generate<B: Backend>(model: &Model<B>, a: &GenerateArgs, load_s: f64) -> Result<()> {
    let params = sampling(a);
    let tok = Tokenizer::from_gguf(model.gguf())?;
    let prompt = tok.encode(
        &a.prompt,
        EncodeOptions {
            add_special: true,
            parse_special: a.parse_special,
        },
    )?;
    if prompt.is_empty() {
        return Err(Error::InvalidInput(
            "--prompt: the prompt has no tokens (and the model adds no BOS)".into(),
        ));
    }
    let n_ctx = prompt.len() + a.max_tokens;
    let n_ctx_train = model.config().n_ctx_train;
    if n_ctx > n_ctx_train {
        return Err(Error::InvalidInput(format!(
            "prompt ({} tokens) + --max-tokens {} exceeds the model's context length {n_ctx_train}",
            prompt.len(),
            a.max_tokens
        )));
    }
    let mut sampler = TokenSampler::new(model.backend(), a.sampler)?;
    eprintln!(
        "load: {:.2} s ({} on {} threads); prompt: {} tokens; sampler: {}",
        load_s,
        model.backend().name(),
        model.backend().threads(),
        prompt.len(),
        sampler.name()
    );
    let n_blocks = n_ctx.div_ceil(BLOCK_SIZE).max(1);
    let mut kv = model.new_kv_cache(n_blocks)?;
    let table: Vec<u32> = (0..n_blocks as u32).collect();
    let mut history = prompt.clone();
    let mut dec = IncrementalDecoder::new();
    let mut out = std::io::stdout().lock();

    // Prompt: one batch, logits of its last token.
    let t0 = Instant::now();
    let mut logits = step(model, &mut kv, &table, &prompt, 0)?;
    let prompt_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let mut n_gen = 0usize;
    while n_gen < a.max_tokens {
        let start = history.len().saturating_sub(params.penalty_last_n);
        let row = SampleRow {
            params: &params,
            recent: &history[start..],
            seq_id: 0,
            step: n_gen as u64,
        };
        let id = sampler.sample(model.backend(), &logits, &[row])?[0];
        n_gen += 1;
        if tok.is_eog(id) {
            break;
        }
        let piece = dec.push(&tok, id);
        if !piece.is_empty() {
            out.write_all(piece.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| Error::io("stdout", e))?;
        }
        history.push(id);
        if n_gen == a.max_tokens {
            break;
        }
        logits = step(model, &mut kv, &table, &[id], history.len() - 1)?;
    }
    let rest = dec.finish();
    out.write_all(rest.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("stdout", e))?;
    let gen_s = t1.elapsed().as_secs_f64();
    eprintln!(
        "prompt: {} tokens in {:.3} s ({:.2} t/s); generation: {} tokens in {:.3} s ({:.2} t/s)",
        prompt.len(),
        prompt_s,
        prompt.len() as f64 / prompt_s,
        n_gen,
        gen_s,
        n_gen as f64 / gen_s.max(1e-9)
    );
    Ok(())
}

/// Runs `tokens` at positions `start..` of the one sequence; returns the last token's logits,
/// left on the backend (`[1, n_vocab]`).
fn step<B: Backend>(
    model: &Model<B>,
    kv: &mut crate::model::KvCache<B>,
    table: &[u32],
    tokens: &[u32],
    start: usize,
) -> Result<B::Tensor> {
    let n = tokens.len();
    let positions: Vec<u32> = (start as u32..(start + n) as u32).collect();
    let seq_of = vec![0u32; n];
    let seqs = [SeqSlot {
        block_table: table,
        kv_len: start + n,
    }];
    let batch = Batch {
        tokens,
        positions: &positions,
        seq_of_token: &seq_of,
        seqs: &seqs,
        logits_for: &[n as u32 - 1],
    };
    model.forward_device(&batch, kv)
}
