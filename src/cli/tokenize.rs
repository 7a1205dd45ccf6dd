//! `rocmforge_cli tokenize`: prints the token ids of a text as a JSON array on one line.

use std::path::PathBuf;

use clap::Args;

use crate::gguf::GgufFile;
use crate::tokenizer::{EncodeOptions, Tokenizer};
use crate::{Error, Result};

/// Arguments of `rocmforge_cli tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// Path of the GGUF file (a vocabulary-only file works).
    #[arg(long)]
    pub gguf: PathBuf,
    /// The text to tokenize.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    pub prompt: Option<String>,
    /// A UTF-8 file whose whole content is tokenized.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Add no BOS/EOS (by default they are added as the model's metadata says).
    #[arg(long)]
    pub no_bos: bool,
    /// Turn special-token text such as `<|im_start|>` into those tokens.
    #[arg(long)]
    pub parse_special: bool,
}

/// Runs the command.
pub fn run(args: TokenizeArgs) -> Result<()> {
    let text = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(path)) => {
            let bytes =
                std::fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))?;
            String::from_utf8(bytes).map_err(|e| {
                Error::InvalidInput(format!(
                    "{}: not UTF-8 text (invalid byte at offset {})",
                    path.display(),
                    e.utf8_error().valid_up_to()
                ))
            })?
        }
        (None, None) => {
            return Err(Error::InvalidInput(
                "give --prompt TEXT or --file PATH".into(),
            ))
        }
    };
    let gguf = GgufFile::open(&args.gguf)?;
    let tok = Tokenizer::from_gguf(&gguf).map_err(|e| match e {
        Error::Tokenizer(m) => Error::Tokenizer(format!("{}: {m}", args.gguf.display())),
        other => other,
    })?;
    let ids = tok.encode(
        &text,
        EncodeOptions {
            add_special: !args.no_bos,
            parse_special: args.parse_special,
        },
    )?;
    let json = serde_json::to_string(&ids)
        .map_err(|e| Error::InvalidInput(format!("cannot format the ids as JSON: {e}")))?;
    println!("{json}");
    Ok(())
}
