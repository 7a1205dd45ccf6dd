//! The CLI's subcommands: one module each, holding its clap arguments and its `run`.
//! The binary `rocmforge_cli` only dispatches to these.

pub mod bench;
pub mod device;
pub mod generate;
pub mod info;
pub mod perplexity;
pub mod quantize;
pub mod serve;
pub mod tokenize;
