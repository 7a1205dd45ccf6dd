//! `rocmforge_cli bench`: llama-bench-style speed rows.
//!
//! `ppN`: one batch of N tokens from an empty cache; `tgN`: N tokens decoded one at a time
//! from an empty cache, each one chosen with `--sampler` and fed back: by default the most likely
//! token (`--sampling greedy`, the argmax; llama-bench feeds tokens without sampling at all), or
//! with `--sampling default` a full draw (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05).
//! Prompt tokens are random (speed does not depend on them). Each test runs once as a warm-up,
//! then `-r` times; rows report the mean and standard deviation of tokens/s, and for tg the
//! bytes of weights and KV cache read per token times t/s, against the device's peak.
//!
//! `--parallel 1,8,64`: llama-batched-bench through the serving engine: for each P, P requests
//! of `-p` random prompt tokens and `-n` generated tokens (greedy, end-of-generation ignored) are
//! submitted at once to an engine with P slots; rows report prompt, decode and overall tokens/s.

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
    /// How tg chooses each token: greedy (argmax) or default (a full draw).
    #[arg(long, value_enum, default_value_t = Sampling::Greedy)]
    pub sampling: Sampling,
    /// Batched serving instead: numbers of parallel sequences (comma-separated), each with `-p`
    /// prompt and `-n` generated tokens, through the engine.
    #[arg(long, value_delimiter = ',')]
    pub parallel: Vec<usize>,
    /// F16 copies of the quantized weights for batched products (GPU): auto (with --parallel,
    /// when they fit in 40% of free memory), on, off. Plain pp/tg runs keep them off unless on.
    #[arg(long, value_enum, default_value_t = device::BatchF16::Auto)]
    pub batch_f16: device::BatchF16,
    /// Batch-invariant GPU computation, as `serve --batch-invariant`.
    #[arg(long)]
    pub batch_invariant: bool,
    /// With `--parallel`: also run every request of each round alone afterwards and count the
    /// ones whose greedy tokens differ from the batched run.
    #[arg(long)]
    pub check_alone: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Md)]
    pub output: Format,
}

/// How `tg` picks each token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sampling {
    /// The most likely token.
    Greedy,
    /// Temperature 0.8, top-k 40, top-p 0.95, min-p 0.05.
    Default,
}

impl Sampling {
    fn params(self) -> SamplingParams {
        match self {
            Sampling::Greedy => SamplingParams::greedy(),
            Sampling::Default => SamplingParams::default(),
        }
    }
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
    /// tg: weights and KV bytes read per token times the mean t/s, in GB/s.
    pub read_gbs: Option<f64>,
    /// tg: `read_gbs` as a percentage of the device's peak memory bandwidth.
    pub peak_pct: Option<f64>,
}

/// Device memory held after the runs (GPU backends).
#[derive(Debug, Clone, Serialize)]
pub struct MemoryRow {
    pub weights_mib: f64,
    pub kv_mib: f64,
    pub scratch_mib: f64,
    /// Scratch as a percentage of weights + KV cache.
    pub scratch_pct: f64,
    /// The most scratch held at once during the runs (the pool grows through the first pass of
    /// a shape, then settles to about that pass's live peak).
    pub scratch_peak_mib: f64,
    /// The peak as a percentage of weights + KV cache.
    pub scratch_peak_pct: f64,
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
    params: &SamplingParams,
    n_prompt: usize,
    n_gen: usize,
) -> Result<f64> {
    let n_ctx = n_prompt + n_gen;
    let n_blocks = n_ctx.div_ceil(BLOCK_SIZE).max(1);
    let mut kv = model.new_kv_cache(n_blocks)?;
    let table: Vec<u32> = (0..n_blocks as u32).collect();
    let mut toks = tokens(n_ctx.max(1), model.config().n_vocab);
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
            params,
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

/// Bytes a decode step reads besides the KV cache: every weight, except the token embedding
/// table when a separate output matrix exists (then only one of its rows is read).
fn weight_bytes_per_token(g: &crate::gguf::GgufFile) -> u64 {
    let has_output = g.tensors().iter().any(|t| t.name == "output.weight");
    g.tensors()
        .iter()
        .filter(|t| !(has_output && t.name == "token_embd.weight"))
        .map(|t| t.n_bytes)
        .sum()
}

/// KV cache bytes (F16 K and V, every layer) read per token at KV length `len`.
fn kv_bytes_at(c: &crate::model::Config, len: f64) -> f64 {
    (c.n_layer * 2 * c.n_head_kv * c.head_dim * 2) as f64 * len
}

/// Runs the pp and tg tests on `model`; tg picks tokens with `params`.
pub fn bench<B: Backend>(
    model: &Model<B>,
    sampler: &mut TokenSampler,
    params: &SamplingParams,
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
    let n_params = crate::model::Config::n_params(g);
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
        time_run(model, sampler, params, np, ng)?; // warm-up
        let mut samples = Vec::with_capacity(reps);
        for _ in 0..reps {
            let s = time_run(model, sampler, params, np, ng)?;
            samples.push((np + ng) as f64 / s);
        }
        let (avg, sd) = mean_sd(&samples);
        // tg from an empty cache: the KV length runs 1..=ng, (ng + 1) / 2 on average.
        let read_gbs = (ng > 0).then(|| {
            let per_token =
                weight_bytes_per_token(g) as f64 + kv_bytes_at(c, (ng + 1) as f64 / 2.0);
            per_token * avg / 1e9
        });
        let peak = model
            .backend()
            .gpu_device()
            .map(|d| d.info().peak_bandwidth)
            .filter(|&p| p > 0.0);
        let peak_pct = read_gbs.zip(peak).map(|(r, p)| 100.0 * r * 1e9 / p);
        rows.push(Row {
            model: name.clone(),
            size,
            params: n_params,
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
            read_gbs,
            peak_pct,
        });
    }
    Ok(rows)
}

/// The device memory a GPU backend holds for `model`, read after the runs (each run's KV cache
/// of `kv_blocks` blocks is freed by then: what is held is the weights and the staging buffer,
/// plus the scratch pools), with the KV cache one run allocates.
pub fn memory_row<B: Backend>(model: &Model<B>, kv_blocks: usize) -> Option<MemoryRow> {
    let dev = model.backend().gpu_device()?;
    let (plain, scratch) = dev.memory_use();
    let peak = dev.scratch_peak();
    let c = model.config();
    let kv = (kv_blocks * BLOCK_SIZE) as f64 * kv_bytes_at(c, 1.0);
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let pct = |b: u64| 100.0 * b as f64 / (plain as f64 + kv).max(1.0);
    Some(MemoryRow {
        weights_mib: mib(plain as f64),
        kv_mib: mib(kv),
        scratch_mib: mib(scratch as f64),
        scratch_pct: pct(scratch),
        scratch_peak_mib: mib(peak as f64),
        scratch_peak_pct: pct(peak),
    })
}

/// Rows as llama-bench's markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| model | size | params | backend | threads | sampler | test | t/s | read GB/s | of peak |\n\
         | --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let opt =
            |v: Option<f64>, suffix: &str| v.map_or(String::new(), |v| format!("{v:.0}{suffix}"));
        s += &format!(
            "| {} | {:.2} MiB | {:.2} M | {} | {} | {} | {} | {:.2} ± {:.2} | {} | {} |\n",
            r.model,
            r.size as f64 / (1024.0 * 1024.0),
            r.params as f64 / 1e6,
            r.backend,
            r.threads,
            r.sampler,
            r.test,
            r.avg_ts,
            r.stddev_ts,
            opt(r.read_gbs, ""),
            opt(r.peak_pct, "%"),
        );
    }
    s
}

struct Task {
    n_prompt: usize,
    n_gen: usize,
    reps: usize,
    sampler: SamplerChoice,
    sampling: Sampling,
    parallel: Vec<usize>,
    batch_f16: device::BatchF16,
    batch_invariant: bool,
    check_alone: bool,
    output: Format,
}

impl device::ModelTask for Task {
    type Output = ();
    fn batch_f16(&self) -> device::BatchF16 {
        // auto: only batched serving (`--parallel`) uses the copies
        match self.batch_f16 {
            device::BatchF16::Auto if self.parallel.is_empty() => device::BatchF16::Off,
            b => b,
        }
    }
    fn batch_invariant(&self) -> bool {
        self.batch_invariant
    }
    fn run<B: Backend>(self, model: Model<B>, _load_s: f64) -> Result<()> {
        if !self.parallel.is_empty() {
            return parallel::run(model, &self);
        }
        let mut sampler = TokenSampler::new(model.backend(), self.sampler)?;
        eprintln!(
            "bench: tg picks every token on the {} ({})",
            sampler.name().to_uppercase(),
            match self.sampling {
                Sampling::Greedy => "greedy",
                Sampling::Default => "temperature 0.8, top-k 40, top-p 0.95, min-p 0.05",
            }
        );
        let params = self.sampling.params();
        let rows = bench(
            &model,
            &mut sampler,
            &params,
            self.n_prompt,
            self.n_gen,
            self.reps,
        )?;
        let n_blocks = (self.n_prompt.max(self.n_gen)).div_ceil(BLOCK_SIZE).max(1);
        let mem = memory_row(&model, n_blocks);
        match self.output {
            Format::Md => {
                print!("{}", markdown(&rows));
                if let Some(m) = &mem {
                    println!(
                        "\nGPU memory: weights {:.1} MiB, KV cache {:.1} MiB, scratch {:.1} MiB ({:.1}% of weights + KV; at most {:.1} MiB, {:.1}%, during the runs)",
                        m.weights_mib, m.kv_mib, m.scratch_mib, m.scratch_pct, m.scratch_peak_mib, m.scratch_peak_pct
                    );
                }
            }
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"rows": rows, "memory": mem}))
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
        sampling: args.sampling,
        parallel: args.parallel,
        batch_f16: args.batch_f16,
        batch_invariant: args.batch_invariant,
        check_alone: args.check_alone,
        output: args.output,
    };
    device::with_model(&args.gguf, args.device, args.threads, task)
}

/// `--parallel`: llama-batched-bench through the serving engine.
mod parallel {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use serde::Serialize;

    use super::{tokens, Format, Task};
    use crate::backend::Backend;
    use crate::engine::{self, EngineConfig, Event, GenRequest, Metrics, SamplingSpec};
    use crate::model::{Model, BLOCK_SIZE};
    use crate::server::adapters::{GgufTokenizer, LoadedModel};
    use crate::tokenizer::Tokenizer;
    use crate::{Error, Result};

    /// One `--parallel` result.
    #[derive(Debug, Clone, Serialize)]
    pub struct ParallelRow {
        pub parallel: usize,
        pub n_prompt: usize,
        pub n_gen: usize,
        /// Seconds from submitting to the last request's end.
        pub seconds: f64,
        /// Prompt tokens / seconds until every request had its first token.
        pub pp_ts: f64,
        /// Tokens generated after every request had its first token / the seconds from then to
        /// the end (all sequences decoding together: llama-batched-bench's S_TG).
        pub tg_ts: f64,
        /// (prompt + generated tokens) / seconds (llama-batched-bench's S).
        pub total_ts: f64,
        /// With `--check-alone`: requests whose greedy text run alone equals their text in
        /// the batched round.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub alone_equal: Option<usize>,
    }

    pub fn run<B: Backend>(model: Model<B>, t: &Task) -> Result<()> {
        if t.n_gen == 0 || t.n_prompt == 0 {
            return Err(Error::InvalidInput(
                "--parallel needs -p > 0 and -n > 0".into(),
            ));
        }
        if let Some(&p) = t.parallel.iter().find(|&&p| p == 0) {
            return Err(Error::InvalidInput(format!(
                "--parallel {p}: must be positive"
            )));
        }
        let max_p = t.parallel.iter().copied().max().unwrap_or(1);
        let n_ctx = t.n_prompt + t.n_gen;
        let n_blocks = max_p * n_ctx.div_ceil(BLOCK_SIZE) + 1;
        let n_vocab = model.config().n_vocab;
        let tok = Arc::new(GgufTokenizer(Arc::new(Tokenizer::from_gguf(model.gguf())?)));
        let cfg = EngineConfig {
            max_seqs: max_p,
            token_budget: 2048.max(max_p),
            queue_size: max_p,
            n_ctx,
        };
        let choice = t.sampler;
        let load = move || -> Result<engine::core::ModelParts> {
            let m = LoadedModel::new(model, n_blocks, n_ctx)?.with_sampler(choice)?;
            eprintln!(
                "bench --parallel: sampling on the {}",
                if engine::StepModel::samples_on_device(&m) {
                    "GPU"
                } else {
                    "CPU"
                }
            );
            Ok((Box::new(m), Box::new(engine::sampling::CpuSampler)))
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = engine::spawn(cfg, tok, Arc::new(Metrics::default()), load, move |r| {
            let _ = ready_tx.send(r);
        })?;
        ready_rx
            .recv()
            .map_err(|_| Error::Model("engine thread ended while loading".into()))??;
        let mut rows = Vec::new();
        // a warm-up round at the largest P (kernels compiled, graphs captured, pools filled)
        round(&handle, max_p, t.n_prompt, t.n_gen, n_vocab, 0)?;
        for (i, &p) in t.parallel.iter().enumerate() {
            let (mut row, done) = round(&handle, p, t.n_prompt, t.n_gen, n_vocab, i + 1)?;
            if t.check_alone {
                let mut equal = 0;
                for (prompt, text) in done {
                    let (_, alone) = generate(&handle, prompt, t.n_gen)?;
                    equal += usize::from(alone == text);
                }
                eprintln!("bench --parallel {p}: {equal}/{p} greedy texts equal alone");
                row.alone_equal = Some(equal);
            }
            rows.push(row);
        }
        handle.shutdown();
        match t.output {
            Format::Md => {
                println!("| P | prompt | gen | s | pp t/s | tg t/s | total t/s | equal alone |");
                println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
                for r in &rows {
                    let eq = r
                        .alone_equal
                        .map_or("-".to_string(), |e| format!("{e}/{}", r.parallel));
                    println!(
                        "| {} | {} | {} | {:.3} | {:.0} | {:.0} | {:.0} | {eq} |",
                        r.parallel, r.n_prompt, r.n_gen, r.seconds, r.pp_ts, r.tg_ts, r.total_ts
                    );
                }
            }
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&rows)
                    .map_err(|e| Error::InvalidInput(format!("json: {e}")))?
            ),
        }
        Ok(())
    }

    /// A request of a round: its prompt and the text it generated.
    type Finished = (Vec<u32>, String);

    /// Submits a greedy request (`ignore_eos`) and returns a receiver of its events.
    fn submit(
        h: &engine::EngineHandle,
        prompt: Vec<u32>,
        n_gen: usize,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<Event>> {
        let req = GenRequest {
            prompt,
            max_tokens: n_gen,
            sampling: SamplingSpec {
                temperature: 0.0,
                ..Default::default()
            },
            stop: Vec::new(),
            logprobs: None,
            ignore_eos: true,
        };
        let (_, rx) = h
            .submit(req)
            .map_err(|e| Error::Model(format!("submit: {e:?}")))?;
        Ok(rx)
    }

    /// Reads a request's events to the end: (tokens generated, text); `on_delta` sees each
    /// delta as it arrives.
    fn collect(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
        mut on_delta: impl FnMut(),
    ) -> Result<(usize, String)> {
        let (mut n, mut text) = (0, String::new());
        while let Some(ev) = rx.blocking_recv() {
            match ev {
                Event::Delta { text: t, .. } => {
                    on_delta();
                    text.push_str(&t);
                }
                Event::Done { usage, .. } => n = usage.completion_tokens,
                Event::Error(e) => return Err(Error::Model(e)),
            }
        }
        Ok((n, text))
    }

    /// One greedy request alone: (tokens generated, text).
    fn generate(
        h: &engine::EngineHandle,
        prompt: Vec<u32>,
        n_gen: usize,
    ) -> Result<(usize, String)> {
        collect(submit(h, prompt, n_gen)?, || {})
    }

    /// Submits `p` requests at once and waits for them all; also returns each request's
    /// prompt and text.
    fn round(
        h: &engine::EngineHandle,
        p: usize,
        n_prompt: usize,
        n_gen: usize,
        n_vocab: usize,
        salt: usize,
    ) -> Result<(ParallelRow, Vec<Finished>)> {
        // distinct random prompts (no prefix sharing), different per round
        let all = tokens((p * n_prompt + salt * 7919) * 2, n_vocab);
        let t0 = Instant::now();
        let stamps = Arc::new(Mutex::new(Vec::<(usize, f64)>::new()));
        let mut threads = Vec::with_capacity(p);
        let mut prompts = Vec::with_capacity(p);
        for i in 0..p {
            let off = salt * 7919 + i * n_prompt;
            let prompt = all[off..off + n_prompt].to_vec();
            prompts.push(prompt.clone());
            let rx = submit(h, prompt, n_gen)?;
            let stamps = stamps.clone();
            threads.push(std::thread::spawn(move || {
                collect(rx, || {
                    if let Ok(mut s) = stamps.lock() {
                        s.push((i, t0.elapsed().as_secs_f64()));
                    }
                })
            }));
        }
        let mut generated = 0;
        let mut done = Vec::with_capacity(p);
        for (t, prompt) in threads.into_iter().zip(prompts) {
            let (n, text) = t
                .join()
                .map_err(|_| Error::Model("collector thread panicked".into()))??;
            generated += n;
            done.push((prompt, text));
        }
        let end = t0.elapsed().as_secs_f64();
        if generated != p * n_gen {
            return Err(Error::Model(format!(
                "{generated} tokens generated, expected {}",
                p * n_gen
            )));
        }
        let stamps = stamps
            .lock()
            .map_err(|_| Error::Model("stamps poisoned".into()))?;
        // when every request had its first token
        let mut first = vec![f64::INFINITY; p];
        for &(i, t) in stamps.iter() {
            first[i] = first[i].min(t);
        }
        let prefilled = first.iter().copied().fold(0.0, f64::max);
        let after = stamps.iter().filter(|&&(_, t)| t > prefilled).count();
        let row = ParallelRow {
            parallel: p,
            n_prompt,
            n_gen,
            seconds: end,
            pp_ts: (p * n_prompt) as f64 / prefilled,
            tg_ts: after as f64 / (end - prefilled).max(1e-9),
            total_ts: (p * (n_prompt + n_gen)) as f64 / end,
            alone_equal: None,
        };
        Ok((row, done))
    }
}
