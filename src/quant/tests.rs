//! Unit tests: SIMD kernels against the scalar references, dot products against f64 dots of
//! dequantized rows, round-trip error bounds and matmul against a naive f64 product.
//! Fresh random inputs each run; the seed is printed (QUANT_SEED repeats a run).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn seeded(what: &str) -> StdRng {
    let seed: u64 = std::env::var("QUANT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("{what}: seed {seed} (set QUANT_SEED to repeat)");
    StdRng::seed_from_u64(seed)
}

/// Roughly normal values (sum of 4 uniforms), with an occasional outlier.
fn gaussish(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v: f32 = (0..4).map(|_| rng.gen_range(-1.0f32..1.0)).sum::<f32>() * 0.87;
            if rng.gen_range(0..64) == 0 {
                v * 4.0
            } else {
                v
            }
        })
        .collect()
}

fn f16_bits(v: f32) -> [u8; 2] {
    f32_to_f16(v)
}

/// A weight row of `ty`: random bytes (every quant bit pattern) with small finite scales.
fn random_weights(ty: GgmlType, n: usize, rng: &mut StdRng) -> Vec<u8> {
    let rb = ty.row_bytes(n as u64).unwrap() as usize;
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            let x = gaussish(rng, n);
            let mut out = vec![0u8; rb];
            quantize_row(ty, &x, &mut out).unwrap();
            return out;
        }
        _ => {}
    }
    let mut raw: Vec<u8> = (0..rb).map(|_| rng.gen()).collect();
    let fields: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => &[0, 2],
        GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        _ => &[],
    };
    for b in raw.chunks_mut(ty.block_bytes()) {
        for &o in fields {
            let v = rng.gen_range(0.001f32..0.05) * if rng.gen() { 1.0 } else { -1.0 };
            b[o..o + 2].copy_from_slice(&f16_bits(v));
        }
        if ty == GgmlType::Q8K {
            b[..4].copy_from_slice(&rng.gen_range(0.001f32..0.05).to_le_bytes());
        }
    }
    raw
}

/// `x` quantized to `ty`'s activation type as the products do (`quantize_act_row`: ggml-cpu's
/// activation rounding, which differs from `quantize_row`'s in rare ties; the prefill test needs
/// the products' own rounding, the others work with either).
fn activation(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let at = vec_dot_type(ty);
    let mut a = vec![0u8; at.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_act_row(at, x, &mut a).unwrap();
    a
}

fn dequant(ty: GgmlType, b: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![f32::NAN; n];
    dequantize_row(ty, b, &mut y).unwrap();
    y
}

/// For Q4_1/Q5_1: the f16 rounding of Q8_1's `s` makes the kernels differ from the exact dot
/// of dequantized rows by up to |m| * |s| * 2^-11 per block.
fn s_rounding_bound(ty: GgmlType, w: &[u8], a: &[u8]) -> f64 {
    if !matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        return 0.0;
    }
    w.chunks(ty.block_bytes())
        .zip(a.chunks(36))
        .map(|(wb, ab)| {
            let m = f16_to_f32([wb[2], wb[3]]) as f64;
            let s = f16_to_f32([ab[2], ab[3]]) as f64;
            (m * s).abs() * 2f64.powi(-11)
        })
        .sum()
}

/// vec_dot (SIMD where available) == vec_dot_ref == f64 dot of the dequantized rows, to
/// 2e-5 of sum |w_i a_i| (float summation order) plus the Q8_1 `s` rounding bound.
#[test]
fn vec_dot_matches_ref_and_dequantized() {
    let mut rng = seeded("vec_dot");
    for ty in ALL_TYPES {
        for &nb in &[1usize, 3, 8] {
            let n = nb * ty.block_elems().max(256);
            for _ in 0..20 {
                let w = random_weights(ty, n, &mut rng);
                let x = gaussish(&mut rng, n);
                let a = activation(ty, &x);
                let fast = vec_dot(ty, &w, &a, n);
                let slow = vec_dot_ref(ty, &w, &a, n);
                let wd = dequant(ty, &w, n);
                let ad = dequant(vec_dot_type(ty), &a, n);
                let exact: f64 = wd.iter().zip(&ad).map(|(&p, &q)| p as f64 * q as f64).sum();
                let l1: f64 = wd
                    .iter()
                    .zip(&ad)
                    .map(|(&p, &q)| (p as f64 * q as f64).abs())
                    .sum();
                let tol = 2e-5 * l1 + s_rounding_bound(ty, &w, &a) + 1e-12;
                assert!(
                    (fast as f64 - slow as f64).abs() <= tol,
                    "{ty} n={n}: vec_dot {fast} vec_dot_ref {slow} (tol {tol:e})"
                );
                assert!(
                    (slow as f64 - exact).abs() <= tol,
                    "{ty} n={n}: vec_dot_ref {slow} f64 dequantized dot {exact} (tol {tol:e})"
                );
                // Against the unquantized activation: each activation element is off by at
                // most half a quantization step (amax/254 per block for the int8 formats).
                let step_err: f64 = if vec_dot_type(ty) == GgmlType::F32 {
                    0.0
                } else {
                    let bs = vec_dot_type(ty).block_elems();
                    x.chunks(bs)
                        .zip(wd.chunks(bs))
                        .map(|(xb, wb)| {
                            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                            wb.iter().map(|&v| v.abs() as f64).sum::<f64>() * amax / 254.0 * 1.002
                        })
                        .sum()
                };
                let truth: f64 = wd.iter().zip(&x).map(|(&p, &q)| p as f64 * q as f64).sum();
                assert!(
                    (fast as f64 - truth).abs() <= step_err + 2.0 * tol + 1e-6,
                    "{ty} n={n}: vec_dot {fast} vs f64 dot with f32 activations {truth} \
                     (bound {step_err:e})"
                );
            }
        }
        assert!(
            vec_dot(ty, &[0u8; 3], &[], 256).is_nan(),
            "{ty}: bad lengths must give NaN"
        );
    }
}

/// RMS(dequantize(quantize(x)) - x) / RMS(x) per type, against bounds set from measurement
/// (about 1.35x the value measured on these roughly normal inputs with 1/64 outliers;
/// measured: F16 0.0002, BF16 0.0017, Q8_0 0.0066, Q8_K 0.012, Q6_K 0.021, Q5_0 0.051, Q5_1 0.041,
/// Q5_K 0.040, Q4_0 0.106, Q4_1 0.085, Q4_K 0.079). Set QUANT_MEASURE=1 to print without asserting.
#[test]
fn quantize_round_trip_error() {
    let mut rng = seeded("round trip");
    let bounds = [
        (GgmlType::F16, 0.0004),
        (GgmlType::BF16, 0.003),
        (GgmlType::Q8_0, 0.009),
        (GgmlType::Q8_1, 0.009),
        (GgmlType::Q8K, 0.016),
        (GgmlType::Q6K, 0.028),
        (GgmlType::Q5_0, 0.07),
        (GgmlType::Q5_1, 0.056),
        (GgmlType::Q5K, 0.054),
        (GgmlType::Q4_0, 0.14),
        (GgmlType::Q4_1, 0.115),
        (GgmlType::Q4K, 0.108),
    ];
    let n = 256 * 64;
    for (ty, bound) in bounds {
        let x: Vec<f32> = gaussish(&mut rng, n)
            .iter()
            .enumerate()
            .map(|(i, v)| v * 10f32.powi((i / 256 % 7) as i32 - 3))
            .collect();
        let mut q = vec![0xAAu8; ty.row_bytes(n as u64).unwrap() as usize];
        quantize_row(ty, &x, &mut q).unwrap();
        let y = dequant(ty, &q, n);
        // Relative per 256-element chunk (the chunks have different magnitudes), then RMS.
        let mut worst = 0f64;
        let mut total = 0f64;
        for (xc, yc) in x.chunks(256).zip(y.chunks(256)) {
            let e: f64 = xc
                .iter()
                .zip(yc)
                .map(|(&a, &b)| ((a - b) as f64).powi(2))
                .sum();
            let s: f64 = xc.iter().map(|&a| (a as f64).powi(2)).sum();
            let r = (e / s).sqrt();
            worst = worst.max(r);
            total += r * r;
        }
        let rms = (total / (n / 256) as f64).sqrt();
        println!("{ty}: relative RMS error {rms:.5} (worst chunk {worst:.5}, bound {bound})");
        if std::env::var_os("QUANT_MEASURE").is_none() {
            assert!(rms < bound, "{ty}: relative RMS error {rms} >= {bound}");
        }
    }
    for ty in [GgmlType::Q2K, GgmlType::Q3K] {
        let err = quantize_row(ty, &[0.0; 256], &mut [0u8; 110]).unwrap_err();
        assert!(err.to_string().contains(ty.name()), "{err}");
    }
}

#[test]
fn quantize_zero_and_length_errors() {
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Q8K,
    ] {
        let rb = ty.row_bytes(256).unwrap() as usize;
        let mut q = vec![0xAAu8; rb];
        quantize_row(ty, &[0.0; 256], &mut q).unwrap();
        assert!(
            dequant(ty, &q, 256).iter().all(|&v| v == 0.0),
            "{ty}: zeros"
        );
        let err = quantize_row(ty, &[0.0; 256], &mut q[..rb - 1])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&(rb - 1).to_string()) && err.contains(&rb.to_string()),
            "{err}"
        );
        let err = dequantize_row(ty, &q, &mut [0.0; 255])
            .unwrap_err()
            .to_string();
        assert!(err.contains("255"), "{err}");
    }
}

/// matmul against a naive f64 product of the dequantized weights with the f32 input, within
/// the activation quantization bound, on odd shapes (1 and several threads).
#[test]
fn matmul_matches_naive() {
    let mut rng = seeded("matmul");
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];
    for ty in types {
        let n_cols = 2 * ty.block_elems().max(256);
        for &n_rows in &[1usize, 3, 17, 64] {
            for &n_tok in &[1usize, 2, 7, 9] {
                let w: Vec<u8> = (0..n_rows)
                    .flat_map(|_| random_weights(ty, n_cols, &mut rng))
                    .collect();
                let x = gaussish(&mut rng, n_tok * n_cols);
                let mut out = vec![f32::NAN; n_tok * n_rows];
                matmul(ty, &w, n_rows, n_cols, &x, &mut out).unwrap();
                let rb = ty.row_bytes(n_cols as u64).unwrap() as usize;
                for r in 0..n_rows {
                    let wd = dequant(ty, &w[r * rb..(r + 1) * rb], n_cols);
                    for t in 0..n_tok {
                        let xr = &x[t * n_cols..(t + 1) * n_cols];
                        let truth: f64 =
                            wd.iter().zip(xr).map(|(&p, &q)| p as f64 * q as f64).sum();
                        let l1: f64 = wd
                            .iter()
                            .zip(xr)
                            .map(|(&p, &q)| (p as f64 * q as f64).abs())
                            .sum();
                        let bs = vec_dot_type(ty).block_elems();
                        let q_err: f64 = if vec_dot_type(ty) == GgmlType::F32 {
                            0.0
                        } else {
                            xr.chunks(bs)
                                .zip(wd.chunks(bs))
                                .map(|(xb, wb)| {
                                    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                                    wb.iter().map(|&v| v.abs() as f64).sum::<f64>() * amax / 254.0 * 1.002
                                })
                                .sum::<f64>()
                                // Q8_1's f16 `s` (see s_rounding_bound), generously.
                                + if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) { 2e-3 * l1 } else { 0.0 }
                        };
                        let got = out[t * n_rows + r] as f64;
                        let tol = q_err + 4e-5 * l1 + 1e-6;
                        assert!(
                            (got - truth).abs() <= tol,
                            "{ty} [{n_rows} x {n_cols}] n_tok {n_tok}: out[{t},{r}] {got} naive {truth} (tol {tol:e})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_shape_errors() {
    let ty = GgmlType::Q8_0;
    let w = vec![0u8; 3 * 34];
    let x = vec![0f32; 64];
    let mut out = vec![0f32; 6];
    assert!(matmul(ty, &w, 3, 32, &x, &mut out).is_ok());
    let e = matmul(ty, &w, 4, 32, &x, &mut out).unwrap_err().to_string();
    assert!(e.contains("102") && e.contains("[4 x 32]"), "{e}");
    let e = matmul(ty, &w, 3, 32, &x[..63], &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("63"), "{e}");
    let e = matmul(ty, &w, 3, 32, &x, &mut out[..5])
        .unwrap_err()
        .to_string();
    assert!(e.contains('5') && e.contains("n_tok 2"), "{e}");
    let e = matmul(ty, &w, 3, 33, &x, &mut out).unwrap_err().to_string();
    assert!(e.contains("33"), "{e}");
}

/// The 4-token prefill kernels against the scalar reference, token by token.
#[test]
fn dot4_kernels_match_ref() {
    let mut rng = seeded("dot4");
    for ty in ALL_TYPES {
        let Some(dot4) = best_kernel_x4(ty) else {
            continue;
        };
        for &nb in &[1usize, 5, 20] {
            let n = nb * ty.block_elems().max(32);
            let w = random_weights(ty, n, &mut rng);
            let acts: Vec<Vec<u8>> = (0..4)
                .map(|_| activation(ty, &gaussish(&mut rng, n)))
                .collect();
            let got = dot4(&w, [&acts[0], &acts[1], &acts[2], &acts[3]], n);
            for (k, a) in acts.iter().enumerate() {
                let want = vec_dot_ref(ty, &w, a, n);
                let wd = dequant(ty, &w, n);
                let ad = dequant(vec_dot_type(ty), a, n);
                let l1: f64 = wd
                    .iter()
                    .zip(&ad)
                    .map(|(&p, &q)| (p as f64 * q as f64).abs())
                    .sum();
                let tol = 2e-5 * l1 + 1e-12;
                assert!(
                    (got[k] as f64 - want as f64).abs() <= tol,
                    "{ty} n={n} token {k}: dot4 {} vec_dot_ref {want} (tol {tol:e})",
                    got[k]
                );
            }
        }
    }
}

/// The prefill matmul (register tiles where the CPU has them, with row and token tails) against
/// `vec_dot_ref` element by element, on activations quantized exactly as matmul does.
#[test]
fn prefill_matmul_matches_vec_dot_ref() {
    let mut rng = seeded("prefill");
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
    ] {
        for &(n_rows, n_cols, n_tok) in &[(37usize, 768usize, 13usize), (16, 256, 4), (5, 512, 6)] {
            let rb = ty.row_bytes(n_cols as u64).unwrap() as usize;
            let w: Vec<u8> = (0..n_rows)
                .flat_map(|_| random_weights(ty, n_cols, &mut rng))
                .collect();
            let x = gaussish(&mut rng, n_tok * n_cols);
            let mut out = vec![f32::NAN; n_tok * n_rows];
            matmul(ty, &w, n_rows, n_cols, &x, &mut out).unwrap();
            for t in 0..n_tok {
                let a = activation(ty, &x[t * n_cols..(t + 1) * n_cols]);
                let ad = dequant(vec_dot_type(ty), &a, n_cols);
                for r in 0..n_rows {
                    let wr = &w[r * rb..(r + 1) * rb];
                    let want = vec_dot_ref(ty, wr, &a, n_cols);
                    let l1: f64 = dequant(ty, wr, n_cols)
                        .iter()
                        .zip(&ad)
                        .map(|(&p, &q)| (p as f64 * q as f64).abs())
                        .sum();
                    let got = out[t * n_rows + r];
                    let tol = 2e-5 * l1 + 1e-12;
                    assert!(
                        (got as f64 - want as f64).abs() <= tol,
                        "{ty} [{n_rows} x {n_cols}] n_tok {n_tok}: out[{t},{r}] {got} vec_dot_ref {want} (tol {tol:e})"
                    );
                }
            }
        }
    }
}

/// Activations are quantized as ggml-cpu's own `from_float` for Q8_0 does on x86 (values
/// obtained by calling llama-cpp-python's libggml-cpu through ctypes): `127 / amax` and
/// ties-to-even, where the reference (`quantize_row`, what weights use) gives 74, 3, 1.
#[test]
#[cfg(target_arch = "x86_64")]
fn q8_0_activations_round_like_ggml_cpu() {
    let mut x = [0f32; 32];
    for (v, bits) in x.iter_mut().zip([
        0x43869653u32,
        0x431bc833,
        0xc31bc833,
        0x40a98f06,
        0x3f87a59e,
    ]) {
        *v = f32::from_bits(bits);
    }
    let mut act = [0u8; 34];
    quantize_act_row(GgmlType::Q8_0, &x, &mut act).unwrap();
    assert_eq!(act[..2], [0x3d, 0x40]); // d as ggml stores it
    let q: Vec<i8> = act[2..7].iter().map(|&b| b as i8).collect();
    assert_eq!(q, [127, 73, -73, 2, 0]);
    let mut reference = [0u8; 34];
    quantize_row(GgmlType::Q8_0, &x, &mut reference).unwrap();
    let r: Vec<i8> = reference[2..7].iter().map(|&b| b as i8).collect();
    assert_eq!(r, [127, 74, -74, 3, 1]);
}
