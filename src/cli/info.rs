//! `rocmforge_cli info`: prints a GGUF file's architecture, parameter count, tensor-type
//! histogram, context length, metadata and tensors.

use clap::Args;

use crate::gguf::{info, GgufFile};

/// Arguments of `rocmforge_cli info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Path of the GGUF file.
    #[arg(long)]
    pub gguf: std::path::PathBuf,
}

/// Runs the command.
pub fn run(args: InfoArgs) -> crate::Result<()> {
    let f = GgufFile::open(&args.gguf)?;
    print!("{}", info::summary(&f));
    Ok(())
}
