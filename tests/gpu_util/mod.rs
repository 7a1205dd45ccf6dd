//! Shared helpers of the GPU tests: open a device or say why not, random inputs, comparisons.
#![allow(dead_code)]

use half::f16;
use rand::{Rng, SeedableRng};
use rocmforge::backend::gpu::GpuDevice;
use rocmforge::quant::{dequantize_row, GgmlType};

/// Opens a device of its own for this test, or prints `skipped: no GPU (reason)`.
pub fn device(test: &str) -> Option<GpuDevice> {
    match GpuDevice::open_any() {
        Ok(d) => Some(d),
        Err(reason) => {
            println!("{test}: skipped: no GPU ({reason})");
            None
        }
    }
}

/// `../shared/models/stories260K.gguf`, or `None` after printing `skipped: ... not found`.
pub fn stories260k() -> Option<std::path::PathBuf> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models/stories260K.gguf");
    if path.exists() {
        Some(path)
    } else {
        println!("skipped: {} not found", path.display());
        None
    }
}

/// `src` quantized by our quantizer with type mix `mix` (`"Q8_0"`) into a temporary file named
/// after `tag` and the process; the caller removes it.
pub fn quantized_copy(src: &std::path::Path, mix: &str, tag: &str) -> std::path::PathBuf {
    let out = std::env::temp_dir().join(format!("rf-{tag}-{mix}-{}.gguf", std::process::id()));
    let file = rocmforge::gguf::GgufFile::open(src).unwrap();
    rocmforge::gguf::quantize::quantize_file(
        &file,
        rocmforge::gguf::quantize::QuantMix::parse(mix).unwrap(),
        &out,
        rocmforge::cli::quantize::codec(),
        false,
    )
    .unwrap();
    out
}

/// Index of the largest value (the first of equal ones).
pub fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
        .0 as u32
}

/// A generator seeded from the clock: fresh inputs every run (the seed is printed).
pub fn rng(test: &str) -> rand::rngs::StdRng {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    println!("{test}: seed {seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// `n` values uniform in [-scale, scale).
pub fn randn(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

/// ‖got − want‖ / ‖want‖, failing on any NaN (unwritten poisoned outputs).
pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "element {i} is {g} (want {w})");
        num += (g as f64 - w) * (g as f64 - w);
        den += w * w;
    }
    (num / den.max(1e-30)).sqrt()
}

/// Largest |got − want|, failing on any NaN.
pub fn max_abs_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    got.iter()
        .zip(want)
        .enumerate()
        .map(|(i, (&g, &w))| {
            assert!(g.is_finite(), "element {i} is {g} (want {w})");
            (g as f64 - w).abs()
        })
        .fold(0.0, f64::max)
}

/// Offsets of the f16 scale fields inside one block (random bytes elsewhere are all valid).
pub fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        _ => &[],
    }
}

/// A random matrix in type `ty`: random bytes with finite scales (quantized types) or random
/// values (float types). Returns the bytes and the dequantized f32 rows (the reference).
pub fn random_matrix(
    rng: &mut impl Rng,
    ty: GgmlType,
    rows: usize,
    cols: usize,
) -> (Vec<u8>, Vec<f32>) {
    let rb = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut bytes = vec![0u8; rb * rows];
    match ty {
        GgmlType::F32 => {
            for (i, v) in randn(rng, rows * cols, 1.0).iter().enumerate() {
                bytes[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (i, v) in randn(rng, rows * cols, 1.0).iter().enumerate() {
                bytes[2 * i..2 * i + 2].copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (i, v) in randn(rng, rows * cols, 1.0).iter().enumerate() {
                bytes[2 * i..2 * i + 2].copy_from_slice(&half::bf16::from_f32(*v).to_le_bytes());
            }
        }
        _ => {
            rng.fill(&mut bytes[..]);
            let bb = ty.block_bytes();
            for b in 0..bytes.len() / bb {
                for &o in scale_offsets(ty) {
                    let d = f16::from_f32(rng.gen_range(-0.05f32..0.05));
                    bytes[b * bb + o..b * bb + o + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
        }
    }
    let mut deq = vec![0f32; rows * cols];
    for r in 0..rows {
        dequantize_row(
            ty,
            &bytes[r * rb..(r + 1) * rb],
            &mut deq[r * cols..(r + 1) * cols],
        )
        .unwrap();
    }
    (bytes, deq)
}
