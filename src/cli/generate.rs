//! `rocmforge_cli generate`.

use clap::Args;

/// Arguments of `rocmforge_cli generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Path of the GGUF file.
    #[arg(long)]
    pub gguf: std::path::PathBuf,
}

/// Runs the command.
pub fn run(_args: GenerateArgs) -> crate::Result<()> {
    Err(crate::Error::InvalidInput(
        "the generate command is not implemented yet".into(),
    ))
}
