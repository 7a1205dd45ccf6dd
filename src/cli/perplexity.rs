//! `rocmforge_cli perplexity`: perplexity over a text file, computed as llama-perplexity does.
//!
//! The text is tokenized once (BOS added per metadata) and cut into chunks of `n_ctx` tokens
//! (the tail that does not fill a chunk is dropped); each chunk starts from an empty cache with
//! its first token replaced by BOS, and only its second half is scored: the logits at
//! positions `n_ctx/2 .. n_ctx-2` predict the next token. Prints the running `[i]ppl` per
//! chunk and `Final estimate: PPL = x +/- e` (e = ppl · sd(nll) / sqrt(count - 1)).

use std::io::Write;
use std::time::Instant;

use clap::Args;

use crate::backend::Backend;
use crate::cli::device::{self, Device};
use crate::model::{Batch, Model, SeqSlot, BLOCK_SIZE};
use crate::{Error, Result};

/// Arguments of `rocmforge_cli perplexity`.
#[derive(Debug, Args)]
pub struct PerplexityArgs {
    /// Path of the GGUF file.
    #[arg(long)]
    pub gguf: std::path::PathBuf,
    /// The text file to score.
    #[arg(long)]
    pub file: std::path::PathBuf,
    /// Tokens per chunk (llama-perplexity's -c).
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Where to run.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The result of [`perplexity`].
#[derive(Debug, Clone, PartialEq)]
pub struct Perplexity {
    /// Chunks scored.
    pub n_chunk: usize,
    /// Tokens scored.
    pub count: usize,
    /// Running perplexity after each chunk.
    pub running: Vec<f64>,
    /// Final estimate.
    pub ppl: f64,
    /// Its error estimate (as llama-perplexity prints after "+/-").
    pub err: f64,
}

/// Log-probability of `tok` under `logits`, as llama-perplexity's `log_softmax` computes it.
pub fn log_prob(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max).exp()) as f64).sum();
    (logits[tok] - max) as f64 - sum.ln()
}

/// Perplexity of `tokens` in chunks of `n_ctx` (`bos` replaces each chunk's first token);
/// `on_chunk(i, running_ppl)` is called after each chunk.
pub fn perplexity<B: Backend>(
    model: &Model<B>,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<Perplexity> {
    if n_ctx < 4 {
        return Err(Error::InvalidInput(format!(
            "--ctx {n_ctx}: must be at least 4"
        )));
    }
    let n_chunk = tokens.len() / n_ctx;
    if n_chunk < 1 || tokens.len() < 2 * n_ctx {
        return Err(Error::InvalidInput(format!(
            "the text has {} tokens; --ctx {n_ctx} needs at least {} (2 x ctx)",
            tokens.len(),
            2 * n_ctx
        )));
    }
    let n_vocab = model.config().n_vocab;
    let first = n_ctx / 2;
    let n_blocks = n_ctx.div_ceil(BLOCK_SIZE);
    let mut kv = model.new_kv_cache(n_blocks)?;
    let table: Vec<u32> = (0..n_blocks as u32).collect();
    let positions: Vec<u32> = (0..n_ctx as u32).collect();
    let seq_of = vec![0u32; n_ctx];
    let logits_for: Vec<u32> = (first as u32..n_ctx as u32 - 1).collect();
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunk);
    for i in 0..n_chunk {
        let mut chunk = tokens[i * n_ctx..(i + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        let seqs = [SeqSlot {
            block_table: &table,
            kv_len: n_ctx,
        }];
        let batch = Batch {
            tokens: &chunk,
            positions: &positions,
            seq_of_token: &seq_of,
            seqs: &seqs,
            logits_for: &logits_for,
        };
        let logits = model.forward(&batch, &mut kv)?;
        for (r, &j) in logits_for.iter().enumerate() {
            let row = &logits[r * n_vocab..(r + 1) * n_vocab];
            let lp = log_prob(row, chunk[j as usize + 1] as usize);
            nll -= lp;
            nll2 += lp * lp;
        }
        count += logits_for.len();
        let r = (nll / count as f64).exp();
        running.push(r);
        on_chunk(i, r);
    }
    let c = count as f64;
    let mean = nll / c;
    let ppl = mean.exp();
    let var = nll2 / c - mean * mean;
    let err = if var > 0.0 && count > 1 {
        (var / (c - 1.0)).sqrt() * ppl
    } else {
        0.0
    };
    Ok(Perplexity {
        n_chunk,
        count,
        running,
        ppl,
        err,
    })
}

/// Runs the command.
pub fn run(args: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| Error::io(args.file.display().to_string(), e))?;
    let task = Task {
        text,
        n_ctx: args.ctx,
    };
    device::with_model(&args.gguf, args.device, args.threads, task)
}

struct Task {
    text: String,
    n_ctx: usize,
}

impl device::ModelTask for Task {
    type Output = ();
    fn run<B: Backend>(self, model: Model<B>, _load_s: f64) -> Result<()> {
        run_on(model, &self.text, self.n_ctx)
    }
}

fn run_on<B: Backend>(model: Model<B>, text: &str, n_ctx: usize) -> Result<()> {
    let tok = crate::tokenizer::Tokenizer::from_gguf(model.gguf())?;
    let tokens = tok.encode(
        text,
        crate::tokenizer::EncodeOptions {
            add_special: true,
            parse_special: false,
        },
    )?;
    let bos = if tokens.first().copied() == tok.bos() && tok.bos().is_some() {
        tok.bos()
    } else {
        None
    };
    eprintln!(
        "perplexity: {} tokens, {} chunks of n_ctx={n_ctx}",
        tokens.len(),
        tokens.len() / n_ctx
    );
    let t0 = Instant::now();
    let r = perplexity(&model, &tokens, n_ctx, bos, |i, ppl| {
        print!("[{}]{ppl:.4},", i + 1);
        let _ = std::io::stdout().flush();
    })?;
    println!();
    println!("Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.err);
    eprintln!(
        "perplexity: {} tokens scored in {:.2} s",
        r.count,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
