//! `rocmforge_cli quantize`.

use clap::Args;

/// Arguments of `rocmforge_cli quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Path of the GGUF file.
    #[arg(long)]
    pub gguf: std::path::PathBuf,
}

/// Runs the command.
pub fn run(_args: QuantizeArgs) -> crate::Result<()> {
    Err(crate::Error::InvalidInput(
        "the quantize command is not implemented yet".into(),
    ))
}
