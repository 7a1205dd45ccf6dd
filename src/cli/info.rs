//! `rocmforge_cli info`.

use clap::Args;

/// Arguments of `rocmforge_cli info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Path of the GGUF file.
    #[arg(long)]
    pub gguf: std::path::PathBuf,
}

/// Runs the command.
pub fn run(_args: InfoArgs) -> crate::Result<()> {
    Err(crate::Error::InvalidInput(
        "the info command is not implemented yet".into(),
    ))
}
