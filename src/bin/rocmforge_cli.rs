//! The command-line front end: parses arguments and dispatches to `rocmforge::cli`.

use clap::{Parser, Subcommand};
use rocmforge::cli;

#[derive(Parser)]
#[command(
    name = "rocmforge_cli",
    version,
    about = "LLM inference on GGUF models (CPU, CUDA, ROCm)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a GGUF file's architecture, tensors and metadata.
    Info(cli::info::InfoArgs),
    /// Print the token ids of a text as a JSON array.
    Tokenize(cli::tokenize::TokenizeArgs),
    /// Write a quantized copy of a model.
    Quantize(cli::quantize::QuantizeArgs),
    /// Generate text from a prompt, streamed to stdout.
    Generate(cli::generate::GenerateArgs),
    /// Compute perplexity over a text file the way llama-perplexity does.
    Perplexity(cli::perplexity::PerplexityArgs),
    /// Measure prompt processing and decode speed.
    Bench(cli::bench::BenchArgs),
    /// Serve an OpenAI-compatible HTTP API.
    Serve(cli::serve::ServeArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => cli::info::run(a),
        Command::Tokenize(a) => cli::tokenize::run(a),
        Command::Quantize(a) => cli::quantize::run(a),
        Command::Generate(a) => cli::generate::run(a),
        Command::Perplexity(a) => cli::perplexity::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Serve(a) => cli::serve::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
