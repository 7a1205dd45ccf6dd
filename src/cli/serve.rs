//! `rocmforge_cli serve`: the OpenAI-compatible HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;

use crate::backend::cpu::CpuBackend;
use crate::cli::device::{BatchF16, Device};
use crate::engine::sampling::CpuSampler;
use crate::engine::{self, EngineConfig, Metrics};
use crate::gguf::GgufFile;
use crate::model::{Config, Model, BLOCK_SIZE};
use crate::sampler::SamplerChoice;
use crate::server::adapters::{GgufTokenizer, LoadedModel};
use crate::server::{AppState, ChatTemplate, ServeTokenizer};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Arguments of `rocmforge_cli serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Path of the GGUF file.
    #[arg(long)]
    pub gguf: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Context size per request (prompt + generated tokens); 0 = the model's training context.
    #[arg(long, default_value_t = 0)]
    pub ctx_size: usize,
    /// Device: auto (the first GPU found, else the CPU), cpu, cuda[:N], rocm[:N].
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// Most requests waiting for a slot before new ones get 503.
    #[arg(long, default_value_t = 256)]
    pub queue_size: usize,
    /// Most tokens in one forward pass (longer prompts are prefilled in chunks).
    #[arg(long, default_value_t = 512)]
    pub batch_size: usize,
    /// KV-cache blocks of 16 tokens; default: enough for `--parallel` full contexts.
    #[arg(long)]
    pub kv_blocks: Option<usize>,
    /// Model name reported by /v1/models (default: the file name without .gguf).
    #[arg(long)]
    pub alias: Option<String>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where to sample: auto (the GPU sampler with a GPU device), gpu or cpu (logits copied to
    /// the host every step).
    #[arg(long, default_value = "auto")]
    pub sampler: SamplerChoice,
    /// F16 copies of the quantized weights for batched products on a GPU: auto (when they fit
    /// in 40% of free memory), on, off.
    #[arg(long, value_enum, default_value_t = BatchF16::Auto)]
    pub batch_f16: BatchF16,
    /// On a GPU, compute every request's tokens with the same float operations whatever else
    /// is batched with it, so greedy output is the same alone or among many requests. Costs
    /// throughput: on the H100, qwen2-0.5b Q8_0 at 64 sequences decodes about 29k instead of
    /// 33k tokens/s and processes prompts about 1.8x slower; other quant types lose more
    /// (docs/SERVER.md). The CPU backend is batch-invariant always.
    #[arg(long)]
    pub batch_invariant: bool,
}

/// Checks `--sampler` against the backend (`gpu_backend`): `gpu` needs a GPU device.
pub fn check_sampler(choice: SamplerChoice, gpu_backend: bool) -> Result<()> {
    choice.use_gpu(gpu_backend).map(|_| ())
}

fn positive(name: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::InvalidInput(format!("--{name} 0: must be positive")));
    }
    Ok(())
}

/// Runs the command: serves until SIGINT/SIGTERM, then drains and exits.
pub fn run(args: ServeArgs) -> Result<()> {
    positive("parallel", args.parallel)?;
    positive("queue-size", args.queue_size)?;
    positive("batch-size", args.batch_size)?;
    if let Some(b) = args.kv_blocks {
        positive("kv-blocks", b)?;
    }
    check_sampler(args.sampler, args.device != Device::Cpu)?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    crate::cli::device::init_threads(args.threads)?;

    let file = Arc::new(GgufFile::open(&args.gguf)?);
    let config = Config::from_gguf(&file)?;
    let tokenizer = Arc::new(GgufTokenizer(Arc::new(Tokenizer::from_gguf(&file)?)));
    let template_src = file
        .get_str_opt("tokenizer.chat_template")?
        .map(str::to_string);
    let template = ChatTemplate::new(
        template_src.as_deref(),
        &tokenizer.bos_text(),
        &tokenizer.eos_text(),
    )?;
    if template.is_fallback {
        tracing::info!("the model has no chat template: chat uses the ChatML fallback");
    }
    let n_ctx = if args.ctx_size == 0 {
        config.n_ctx_train
    } else {
        args.ctx_size
    };
    let n_blocks = args
        .kv_blocks
        .unwrap_or(args.parallel * n_ctx.div_ceil(BLOCK_SIZE));
    if n_blocks < n_ctx.div_ceil(BLOCK_SIZE) {
        return Err(Error::InvalidInput(format!(
            "--kv-blocks {n_blocks}: fewer than the {} blocks one full context of {n_ctx} tokens needs",
            n_ctx.div_ceil(BLOCK_SIZE)
        )));
    }
    let model_name = args.alias.clone().unwrap_or_else(|| {
        args.gguf
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .map_err(|e| {
            Error::InvalidInput(format!("--host {} --port {}: {e}", args.host, args.port))
        })?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(addr.to_string(), e))?;
        tracing::info!(
            "listening on http://{addr} (loading {})",
            args.gguf.display()
        );

        let metrics = Arc::new(Metrics::default());
        let cfg = EngineConfig {
            max_seqs: args.parallel,
            token_budget: args.batch_size.max(args.parallel),
            queue_size: args.queue_size,
            n_ctx,
        };
        let device = args.device;
        let sampler = args.sampler;
        let batch_f16 = args.batch_f16;
        let invariant = args.batch_invariant;
        let load_file = file.clone();
        // Built on the engine thread, so a GPU context never crosses threads.
        let load = move || -> Result<engine::core::ModelParts> {
            let gpu = match device {
                Device::Cpu => None,
                _ => device.open_gpu()?,
            };
            check_sampler(sampler, gpu.is_some())?;
            let model: Box<dyn engine::StepModel> = match gpu {
                Some(dev) => {
                    tracing::info!("device: GPU");
                    let be = crate::cli::device::gpu_backend(dev, &load_file, batch_f16, invariant);
                    tracing::info!("batch-invariant: {invariant}");
                    let model = Model::load(load_file, be)?;
                    let m = LoadedModel::new(model, n_blocks, n_ctx)?.with_sampler(sampler)?;
                    let on = if engine::StepModel::samples_on_device(&m) {
                        "GPU"
                    } else {
                        "CPU"
                    };
                    tracing::info!("sampler: {on} (--sampler {sampler})");
                    Box::new(m)
                }
                None => {
                    tracing::info!("device: CPU; sampler: CPU");
                    let model = Model::load(load_file, CpuBackend::new())?;
                    Box::new(LoadedModel::new(model, n_blocks, n_ctx)?)
                }
            };
            Ok((model, Box::new(CpuSampler)))
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<()>>();
        let vocab: Arc<dyn engine::Vocab> = tokenizer.clone();
        let handle = engine::spawn(cfg, vocab, metrics.clone(), load, move |r| {
            let _ = ready_tx.send(r);
        })?;
        let state = Arc::new(AppState {
            engine: handle,
            tok: tokenizer,
            template,
            metrics,
            model_name,
            n_ctx,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        });

        let failed = Arc::new(tokio::sync::Notify::new());
        let load_error = Arc::new(std::sync::Mutex::new(None::<Error>));
        {
            let st = state.clone();
            let failed = failed.clone();
            let load_error = load_error.clone();
            tokio::spawn(async move {
                match ready_rx.await {
                    Ok(Ok(())) => {
                        st.ready.store(true, Ordering::Release);
                        tracing::info!("model loaded: ready");
                    }
                    Ok(Err(e)) => {
                        if let Ok(mut g) = load_error.lock() {
                            *g = Some(e);
                        }
                        failed.notify_one();
                    }
                    Err(_) => failed.notify_one(),
                }
            });
        }
        let shutdown = async move {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = failed.notified() => {}
            }
        };
        crate::server::serve(listener, state.clone(), shutdown)
            .await
            .map_err(|e| Error::io(addr.to_string(), e))?;
        state.engine.shutdown();
        if let Some(e) = load_error.lock().ok().and_then(|mut g| g.take()) {
            return Err(e);
        }
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_gpu_needs_a_gpu_device() {
        let cpu_err = check_sampler(SamplerChoice::Gpu, false).unwrap_err();
        assert!(
            cpu_err.to_string().contains("needs a GPU device"),
            "{cpu_err}"
        );
        assert!(check_sampler(SamplerChoice::Gpu, true).is_ok());
        for gpu in [false, true] {
            assert!(check_sampler(SamplerChoice::Auto, gpu).is_ok());
            assert!(check_sampler(SamplerChoice::Cpu, gpu).is_ok());
        }
    }
}
