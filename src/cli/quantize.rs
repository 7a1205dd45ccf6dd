//! `rocmforge_cli quantize IN.gguf OUT.gguf TYPE`: writes a quantized copy of a model
//! (Q8_0, Q4_0 or Q4_K_M with llama.cpp's per-tensor rules), keeping all metadata.

use std::collections::BTreeMap;

use clap::Args;

use crate::gguf::quantize::{quantize_file, Codec, QuantMix};
use crate::gguf::GgufFile;

/// Arguments of `rocmforge_cli quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The model to quantize (GGUF; F32, F16, BF16 or quantized tensors).
    pub input: std::path::PathBuf,
    /// Where to write the quantized model.
    pub output: std::path::PathBuf,
    /// Q8_0, Q4_0 or Q4_K_M.
    #[arg(value_name = "TYPE")]
    pub ty: String,
}

/// The quant module's row codecs.
pub fn codec() -> Codec {
    Codec {
        dequantize_row: crate::quant::dequantize_row,
        quantize_row: crate::quant::quantize_row,
    }
}

/// Runs the command.
pub fn run(args: QuantizeArgs) -> crate::Result<()> {
    let mix = QuantMix::parse(&args.ty)?;
    if args.input == args.output {
        return Err(crate::Error::InvalidInput(format!(
            "input and output are the same file {}",
            args.input.display()
        )));
    }
    let src = GgufFile::open(&args.input)?;
    let report = quantize_file(&src, mix, &args.output, codec(), true)?;
    let mut hist: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, ty) in &report.tensors {
        *hist.entry(ty.name()).or_default() += 1;
    }
    let hist: Vec<String> = hist.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    println!(
        "{} -> {} ({}): {} tensors, {:.2} MiB -> {:.2} MiB; types: {}",
        args.input.display(),
        args.output.display(),
        mix.name(),
        report.tensors.len(),
        report.bytes_in as f64 / (1 << 20) as f64,
        report.bytes_out as f64 / (1 << 20) as f64,
        hist.join(", ")
    );
    Ok(())
}
