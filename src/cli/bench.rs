//! `rocmforge_cli bench`.

use clap::Args;

/// Arguments of `rocmforge_cli bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Path of the GGUF file.
    #[arg(long)]
    pub gguf: std::path::PathBuf,
}

/// Runs the command.
pub fn run(_args: BenchArgs) -> crate::Result<()> {
    Err(crate::Error::InvalidInput(
        "the bench command is not implemented yet".into(),
    ))
}
