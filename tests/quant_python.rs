//! Our (de)quantizers against the gguf Python package's numpy implementations.
//!
//! Needs `python3` with `gguf` and `numpy`; prints `skipped: ...` without them (a failure when
//! the CI environment variable is set).

use std::path::PathBuf;
use std::process::Command;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rocmforge::quant::{dequantize_row, quantize_row, GgmlType, ALL_TYPES};

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("python3 with gguf and numpy is required under CI");
        }
        println!("skipped: python3 with the gguf and numpy packages not found");
    }
    ok
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/gguf_quants.py")
}

fn seeded() -> StdRng {
    let seed: u64 = std::env::var("QUANT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("seed {seed} (set QUANT_SEED to repeat)");
    StdRng::seed_from_u64(seed)
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rocmforge_quant_{}_{name}", std::process::id()))
}

fn run_py(args: &[&str]) {
    let o = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A finite random half (any sign, exponent 0..=30, any mantissa).
fn rand_f16(rng: &mut StdRng) -> [u8; 2] {
    let exp = rng.gen_range(0u16..31);
    let bits = (rng.gen::<u16>() & 0x83ff) | (exp << 10);
    bits.to_le_bytes()
}

/// Offsets of the f16 fields in one block of `ty` (None for the float types and Q8_K).
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => &[0, 2],
        GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        _ => &[],
    }
}

/// `n_blocks` random blocks of `ty` whose scale fields are finite.
fn random_blocks(ty: GgmlType, n_blocks: usize, rng: &mut StdRng) -> Vec<u8> {
    let bb = ty.block_bytes();
    let mut raw: Vec<u8> = (0..n_blocks * bb).map(|_| rng.gen()).collect();
    for b in raw.chunks_mut(bb) {
        match ty {
            GgmlType::F32 => {
                let v = f32::from_bits(rng.gen::<u32>() & 0xff7f_ffff);
                b.copy_from_slice(&v.to_le_bytes());
            }
            GgmlType::F16 => b.copy_from_slice(&rand_f16(rng)),
            GgmlType::BF16 => {
                let v = rng.gen::<u16>() & 0xff7f;
                b.copy_from_slice(&v.to_le_bytes());
            }
            GgmlType::Q8K => {
                let d: f32 = rng.gen_range(-1.0..1.0f32) * 10f32.powi(rng.gen_range(-6..3));
                b[..4].copy_from_slice(&d.to_le_bytes());
            }
            _ => {
                for &o in f16_fields(ty) {
                    b[o..o + 2].copy_from_slice(&rand_f16(rng));
                }
            }
        }
    }
    raw
}

/// Every type, several hundred random blocks: our dequantize_row must equal the package's
/// bit for bit (both do the same f32 operations in the same order; no tolerance).
#[test]
fn dequantize_matches_gguf_package() {
    if !python_ready() {
        return;
    }
    let mut rng = seeded();
    for ty in ALL_TYPES {
        let n_blocks = if ty.block_elems() == 1 { 4096 } else { 400 };
        let raw = random_blocks(ty, n_blocks, &mut rng);
        let n = n_blocks * ty.block_elems();
        let (inp, outp) = (tmp(&format!("{ty}.in")), tmp(&format!("{ty}.out")));
        std::fs::write(&inp, &raw).unwrap();
        run_py(&[
            "dequantize",
            ty.name(),
            inp.to_str().unwrap(),
            outp.to_str().unwrap(),
        ]);
        let py: Vec<f32> = std::fs::read(&outp)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let _ = std::fs::remove_file(&inp);
        let _ = std::fs::remove_file(&outp);
        assert_eq!(py.len(), n, "{ty}: python returned {} values", py.len());
        let mut ours = vec![f32::NAN; n];
        dequantize_row(ty, &raw, &mut ours).unwrap();
        let bad = ours
            .iter()
            .zip(&py)
            .position(|(a, b)| a.to_bits() != b.to_bits() && !(a == b));
        if let Some(i) = bad {
            panic!(
                "{ty}: element {i} (block {}) ours {:e} python {:e}",
                i / ty.block_elems(),
                ours[i],
                py[i]
            );
        }
        println!("{ty}: {n_blocks} blocks, {n} values identical");
    }
}

/// Where the package has a quantizer, quantize_row must produce the same bytes.
#[test]
fn quantize_matches_gguf_package() {
    if !python_ready() {
        return;
    }
    let mut rng = seeded();
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::F16,
        GgmlType::BF16,
    ];
    let (rows, cols) = (64usize, 256usize);
    for ty in types {
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let scale = 10f32.powi((i / cols % 5) as i32 - 2);
                rng.gen_range(-1.0f32..1.0) * scale
            })
            .collect();
        let (inp, outp) = (tmp(&format!("{ty}.x")), tmp(&format!("{ty}.q")));
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&inp, &bytes).unwrap();
        run_py(&[
            "quantize",
            ty.name(),
            &cols.to_string(),
            inp.to_str().unwrap(),
            outp.to_str().unwrap(),
        ]);
        let py = std::fs::read(&outp).unwrap();
        let _ = std::fs::remove_file(&inp);
        let _ = std::fs::remove_file(&outp);
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        assert_eq!(py.len(), rows * rb, "{ty}: python wrote {} bytes", py.len());
        let mut ours = vec![0xAAu8; rows * rb];
        for (xr, o) in x.chunks(cols).zip(ours.chunks_mut(rb)) {
            quantize_row(ty, xr, o).unwrap();
        }
        if let Some(i) = ours.iter().zip(&py).position(|(a, b)| a != b) {
            panic!(
                "{ty}: byte {i} (row {}, block {}) ours {:#04x} python {:#04x}",
                i / rb,
                (i % rb) / ty.block_bytes(),
                ours[i],
                py[i]
            );
        }
        println!("{ty}: {rows} rows of {cols} quantized to identical bytes");
    }
}
