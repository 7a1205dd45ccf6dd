//! `rocmforge_cli perplexity`.

use clap::Args;

/// Arguments of `rocmforge_cli perplexity`.
#[derive(Debug, Args)]
pub struct PerplexityArgs {
    /// Path of the GGUF file.
    #[arg(long)]
    pub gguf: std::path::PathBuf,
}

/// Runs the command.
pub fn run(_args: PerplexityArgs) -> crate::Result<()> {
    Err(crate::Error::InvalidInput(
        "the perplexity command is not implemented yet".into(),
    ))
}
