//! `rocmforge_cli serve`.

use clap::Args;

/// Arguments of `rocmforge_cli serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Path of the GGUF file.
    #[arg(long)]
    pub gguf: std::path::PathBuf,
}

/// Runs the command.
pub fn run(_args: ServeArgs) -> crate::Result<()> {
    Err(crate::Error::InvalidInput(
        "the serve command is not implemented yet".into(),
    ))
}
