//! `rocmforge_cli tokenize`.

use clap::Args;

/// Arguments of `rocmforge_cli tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// Path of the GGUF file.
    #[arg(long)]
    pub gguf: std::path::PathBuf,
}

/// Runs the command.
pub fn run(_args: TokenizeArgs) -> crate::Result<()> {
    Err(crate::Error::InvalidInput(
        "the tokenize command is not implemented yet".into(),
    ))
}
