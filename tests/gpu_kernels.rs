//! Every GPU kernel against a CPU reference on fresh random inputs, outputs poisoned (NaN) first.
//! References: the quant module's `dequantize_row` (itself checked against the gguf Python
//! package) followed by f64 arithmetic, or plain f64 loops. Tolerances are stated per op.
//! Prints `skipped: no GPU (reason)` where there is none.

#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

mod gpu_util;

use gpu_util::{max_abs_err, randn, random_matrix, rel_err};
use half::f16;
use rand::Rng;
use rocmforge::backend::gpu::kernels::GPU_TYPES;
use rocmforge::backend::gpu::ops::argmax::argmax;
use rocmforge::backend::gpu::ops::attention::{
    attention, kv_write, weighted_v, AttentionConfig, KvIndex, PagedKv,
};
use rocmforge::backend::gpu::ops::embedding::embedding;
use rocmforge::backend::gpu::ops::matmul::{
    dequantize_f16, matmul, matmul_blas, matmul_tiled, BLAS_SCRATCH_BYTES,
};
use rocmforge::backend::gpu::ops::matvec::{self as mv, matvec};
use rocmforge::backend::gpu::ops::rms_norm::rms_norm;
use rocmforge::backend::gpu::ops::rope::{rope, RopeConfig, RopeMode};
use rocmforge::backend::gpu::ops::softmax::softmax;
use rocmforge::backend::gpu::ops::QMatrix;
use rocmforge::backend::gpu::GpuDevice;
use rocmforge::quant::{self, GgmlType};

fn matmul_ref(
    w: &[f32],
    x: &[f32],
    rows: usize,
    cols: usize,
    batch: usize,
    bias: Option<&[f32]>,
) -> Vec<f64> {
    let mut y = vec![0f64; batch * rows];
    for b in 0..batch {
        for r in 0..rows {
            let mut s = 0f64;
            for k in 0..cols {
                s += w[r * cols + k] as f64 * x[b * cols + k] as f64;
            }
            y[b * rows + r] = s + bias.map_or(0.0, |bb| bb[r] as f64);
        }
    }
    y
}

/// Largest |got - want| of a product, each output scaled by sum_k |w_rk x_bk| (+ |bias|): the
/// bound that f32 accumulation error is proportional to (a plain relative norm is meaningless for
/// a lone output that cancels to near zero).
fn dot_err(
    got: &[f32],
    want: &[f64],
    w: &[f32],
    x: &[f32],
    rows: usize,
    cols: usize,
    bias: Option<&[f32]>,
) -> f64 {
    let batch = want.len() / rows;
    let mut worst = 0f64;
    for b in 0..batch {
        for r in 0..rows {
            let g = got[b * rows + r];
            assert!(g.is_finite(), "output {b},{r} is {g}");
            let mut mag: f64 = (0..cols)
                .map(|k| (w[r * cols + k] as f64 * x[b * cols + k] as f64).abs())
                .sum();
            mag += bias.map_or(0.0, |bb| (bb[r] as f64).abs());
            worst = worst.max((g as f64 - want[b * rows + r]).abs() / mag.max(1e-30));
        }
    }
    worst
}

fn shapes(ty: GgmlType) -> Vec<(usize, usize)> {
    let be = ty.block_elems().max(32);
    // 4099 rows: ragged last block of rows; 11008 columns: many blocks per row, a ragged last
    // unrolled step; few rows with long rows take several warps per row.
    let mut v = vec![
        (1, be),
        (33, 2 * be),
        (7, 4096),
        (300, 896 / be * be + be),
        (4099, be),
        (13, 11008),
    ];
    if be == 32 {
        v.push((65, 896));
    }
    v
}

/// Largest |x| of each `blk`-value block of x (rows of x are whole blocks).
fn block_amax(x: &[f32], blk: usize) -> Vec<f64> {
    x.chunks(blk)
        .map(|c| c.iter().fold(0f64, |m, v| m.max(v.abs() as f64)))
        .collect()
}

/// Quantized matrix-vector for every type, batch 1..5 and 8, every warps-per-row setting, x
/// quantized in a separate launch and inside the product kernel, rows and columns ragged against
/// the kernels' blocking. Outputs poisoned with NaN first.
///
/// Tolerance. Float weights: 1e-6 of sum |w x| per output (f32 accumulation). Quantized weights:
/// the GPU rounds x to Q8_1 (int8, a scale per 32 values: |x - x^| <= d/2 with d = amax/127) and
/// is then exact up to f32 rounding, so |gpu - exact| <= sum_k |w_k| d_k / 2 (x 1.001) + 1e-5 of
/// sum |w x|; a wrong index or scale lands far outside that. Against the CPU backend's own
/// quantized dot product (`vec_dot_ref`: x rounded to Q8_0 / Q8_1 with f16 scale and sum, or to
/// Q8_K's 256-value blocks) the bound is the sum of both sides' rounding bounds, sum_k |w_k|
/// (d_k / 2 + 0.6 amax_cpu_k / 127), plus 1e-3 of sum |w x| for the CPU's f16 block sums.
#[test]
fn matvec_all_types_match_cpu() {
    let Some(dev) = gpu_util::device("matvec_all_types_match_cpu") else {
        return;
    };
    let mut rng = gpu_util::rng("matvec_all_types_match_cpu");
    let default = mv::tuning();
    for ty in GPU_TYPES {
        let float = matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
        let mut cases = shapes(ty);
        if float {
            cases.extend([(5, 1), (17, 100), (9, 4099)]); // rows not a multiple of 32: element path
        }
        for (rows, cols) in cases {
            // (vectors, warps per row (0: by shape), fuse mode (0 separate quantize launch, 2
            // quantize inside the product kernel where it fits, 1 the default rule))
            for (batch, wpr, fuse) in [
                (1usize, 0u32, 1u32),
                (1, 1, 0),
                (1, 4, 2),
                (2, 1, 0),
                (3, 2, 2),
                (4, 4, 1),
                (5, 0, 2),
                (8, 2, 0),
            ] {
                mv::set_tuning(mv::Tuning {
                    warps_per_row: wpr,
                    fuse,
                    ..default
                });
                let (bytes, deq) = random_matrix(&mut rng, ty, rows, cols);
                let mut x = randn(&mut rng, batch * cols, 1.0);
                if cols >= 64 {
                    x[32..64].fill(0.0); // an all-zero Q8_1 block
                }
                let bias = randn(&mut rng, rows, 1.0);
                let wb = dev.upload(&bytes).unwrap();
                let xb = dev.upload(&x).unwrap();
                let bb = dev.upload(&bias).unwrap();
                let yb = dev.alloc::<f32>(batch * rows).unwrap();
                dev.memset(&yb, 0xff).unwrap();
                let w = QMatrix {
                    data: &wb,
                    offset: 0,
                    ty,
                    rows,
                    cols,
                };
                let with_bias = batch % 2 == 1;
                matvec(&dev, &w, &xb, with_bias.then_some(&bb), &yb, batch).unwrap();
                let bias_ref = with_bias.then_some(&bias[..]);
                let want = matmul_ref(&deq, &x, rows, cols, batch, bias_ref);
                let got = dev.download(&yb).unwrap();
                let what = format!("matvec {ty} {rows}x{cols} batch {batch} wpr {wpr} fuse {fuse}");
                if float {
                    let e = dot_err(&got, &want, &deq, &x, rows, cols, bias_ref);
                    assert!(e < 1e-6, "{what}: err {e}");
                    continue;
                }
                // The CPU backend's quantized dot product.
                let rb = bytes.len() / rows;
                let at = quant::vec_dot_type(ty);
                let cpu_blk = at.block_elems();
                let mut act = vec![0u8; at.row_bytes(cols as u64).unwrap() as usize];
                let amax32 = block_amax(&x, 32);
                let amax_cpu = block_amax(&x, cpu_blk);
                for b in 0..batch {
                    quant::quantize_row(at, &x[b * cols..(b + 1) * cols], &mut act).unwrap();
                    for r in 0..rows {
                        let g = got[b * rows + r] as f64;
                        assert!(g.is_finite(), "{what}: output {b},{r} is {g}");
                        let wr = &deq[r * cols..(r + 1) * cols];
                        let xr = &x[b * cols..(b + 1) * cols];
                        let (mut bound, mut bound_cpu, mut mag) = (0f64, 0f64, 0f64);
                        for k in 0..cols {
                            let aw = (wr[k] as f64).abs();
                            bound += aw * amax32[(b * cols + k) / 32] / 127.0 / 2.0;
                            bound_cpu += aw * 0.6 * amax_cpu[(b * cols + k) / cpu_blk] / 127.0;
                            mag += aw * (xr[k] as f64).abs();
                        }
                        let bv = bias_ref.map_or(0.0, |bb| bb[r] as f64);
                        mag += bv.abs();
                        let e = (g - want[b * rows + r]).abs();
                        let tol = bound * 1.001 + 1e-5 * mag;
                        assert!(
                            e <= tol,
                            "{what}: output {b},{r}: {g} vs exact {}, err {e} > {tol}",
                            want[b * rows + r]
                        );
                        let cpu = quant::vec_dot_ref(ty, &bytes[r * rb..(r + 1) * rb], &act, cols)
                            as f64
                            + bv;
                        let e = (g - cpu).abs();
                        let tol = bound * 1.001 + bound_cpu + 1e-3 * mag;
                        assert!(
                            e <= tol,
                            "{what}: output {b},{r}: {g} vs CPU {cpu}, diff {e} > {tol}"
                        );
                    }
                }
            }
        }
    }
    mv::set_tuning(default);
}

/// Tiled matrix-matrix for every type; tolerance 1e-6 of sum |w x| per output.
#[test]
fn matmul_tiled_all_types_match_cpu() {
    let Some(dev) = gpu_util::device("matmul_tiled_all_types_match_cpu") else {
        return;
    };
    let mut rng = gpu_util::rng("matmul_tiled_all_types_match_cpu");
    for ty in GPU_TYPES {
        let be = ty.block_elems().max(32);
        for (rows, cols, tokens) in [
            (1, be, 1),
            (70, 2 * be, 17),
            (129, 4 * be, 130),
            (64, 1024, 64),
        ] {
            let (bytes, deq) = random_matrix(&mut rng, ty, rows, cols);
            let x = randn(&mut rng, tokens * cols, 1.0);
            let bias = randn(&mut rng, rows, 1.0);
            let (wb, xb, bb) = (
                dev.upload(&bytes).unwrap(),
                dev.upload(&x).unwrap(),
                dev.upload(&bias).unwrap(),
            );
            let yb = dev.alloc::<f32>(tokens * rows).unwrap();
            dev.memset(&yb, 0xff).unwrap();
            let w = QMatrix {
                data: &wb,
                offset: 0,
                ty,
                rows,
                cols,
            };
            matmul_tiled(&dev, &w, &xb, Some(&bb), &yb, tokens).unwrap();
            let want = matmul_ref(&deq, &x, rows, cols, tokens, Some(&bias));
            let got = dev.download(&yb).unwrap();
            let e = dot_err(&got, &want, &deq, &x, rows, cols, Some(&bias));
            assert!(
                e < 1e-6,
                "matmul {ty} {rows}x{cols} tokens {tokens}: err {e}"
            );
            // Dequantization to f16 (cuBLAS feed): within f16 rounding, 1e-3 relative.
            let hb = dev.alloc::<f16>(rows * cols).unwrap();
            dev.memset(&hb, 0xff).unwrap();
            dequantize_f16(&dev, &w, &hb).unwrap();
            let got: Vec<f32> = dev
                .download(&hb)
                .unwrap()
                .iter()
                .map(|h| h.to_f32())
                .collect();
            let want: Vec<f64> = deq.iter().map(|&v| v as f64).collect();
            let e = rel_err(&got, &want);
            assert!(e < 1e-3, "dequantize_f16 {ty}: rel err {e}");
        }
    }
}

/// Tolerance of the cuBLAS path, per output, as a fraction of sum_k |w_rk x_tk| (+ |bias_r|):
/// X and the dequantized weights are rounded to f16 (unit roundoff u = 2^-11 each, so each
/// product is off by at most (2u + u^2) |w x| = 9.8e-4 |w x|), then accumulated in f32 (at most
/// k 2^-24 = 2.4e-4 for k = 4096, far less in practice): 1.5e-3. F32 weights stay f32 (1e-5).
fn blas_tol(ty: GgmlType) -> f64 {
    if ty == GgmlType::F32 {
        1e-5
    } else {
        1.5e-3
    }
}

/// Whether a missing cuBLAS must fail the test (`ROCMFORGE_REQUIRE_CUBLAS` set: the H100 runs).
fn blas_or_skip(done: bool, test: &str) -> bool {
    if !done {
        assert!(
            std::env::var_os("ROCMFORGE_REQUIRE_CUBLAS").is_none(),
            "{test}: cuBLAS required but not available"
        );
        println!("{test}: skipped: no cuBLAS on this device");
    }
    done
}

/// The cuBLAS path (f16 weights and activations, f32 accumulation) for every type at 5, 16, 33
/// and 512 tokens, odd row counts, and row chunks forced small (a 37-row scratch, ragged last
/// chunk) as well as the 64 MiB default; then `matmul` itself, which picks the path by token
/// count. Tolerance: [`blas_tol`].
#[test]
fn matmul_blas_all_types_match_cpu() {
    let test = "matmul_blas_all_types_match_cpu";
    let Some(dev) = gpu_util::device(test) else {
        return;
    };
    let mut rng = gpu_util::rng(test);
    for ty in GPU_TYPES {
        let be = ty.block_elems().max(32);
        let mut cases = vec![(70, 2 * be), (129, be), (33, 4 * be)];
        if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            // Columns not a multiple of 32: F32/F16 go to cuBLAS as they are, BF16 is refused.
            cases.extend([(17, 100), (5, 1), (64, 45)]);
        }
        for (rows, cols) in cases {
            for tokens in [5usize, 16, 33, 512] {
                let (bytes, deq) = random_matrix(&mut rng, ty, rows, cols);
                let x = randn(&mut rng, tokens * cols, 1.0);
                let bias = randn(&mut rng, rows, 1.0);
                let (wb, xb, bb) = (
                    dev.upload(&bytes).unwrap(),
                    dev.upload(&x).unwrap(),
                    dev.upload(&bias).unwrap(),
                );
                let w = QMatrix {
                    data: &wb,
                    offset: 0,
                    ty,
                    rows,
                    cols,
                };
                let with_bias = tokens != 16;
                let bias_ref = with_bias.then_some(&bias[..]);
                let want = matmul_ref(&deq, &x, rows, cols, tokens, bias_ref);
                let chunked = 2 * 37 * cols;
                for scratch in [chunked, BLAS_SCRATCH_BYTES] {
                    let yb = dev.alloc::<f32>(tokens * rows).unwrap();
                    dev.memset(&yb, 0xff).unwrap();
                    let done = matmul_blas(
                        &dev,
                        &w,
                        &xb,
                        with_bias.then_some(&bb),
                        &yb,
                        tokens,
                        scratch,
                    )
                    .unwrap();
                    let quantized_odd =
                        !cols.is_multiple_of(32) && !matches!(ty, GgmlType::F32 | GgmlType::F16);
                    if quantized_odd {
                        assert!(!done, "{ty} with {cols} columns must be refused");
                        continue;
                    }
                    if !blas_or_skip(done, test) {
                        return;
                    }
                    let got = dev.download(&yb).unwrap();
                    let e = dot_err(&got, &want, &deq, &x, rows, cols, bias_ref);
                    assert!(
                        e < blas_tol(ty),
                        "matmul_blas {ty} {rows}x{cols} tokens {tokens} scratch {scratch}: err {e}"
                    );
                }
                // The dispatcher (cuBLAS from BLAS_MIN_TOKENS on, else tiled).
                let yb = dev.alloc::<f32>(tokens * rows).unwrap();
                dev.memset(&yb, 0xff).unwrap();
                matmul(&dev, &w, &xb, with_bias.then_some(&bb), &yb, tokens).unwrap();
                let got = dev.download(&yb).unwrap();
                let e = dot_err(&got, &want, &deq, &x, rows, cols, bias_ref);
                assert!(
                    e < blas_tol(ty),
                    "matmul {ty} {rows}x{cols} tokens {tokens}: err {e}"
                );
            }
        }
    }
}

/// Embedding rows from every table type: exact up to f32 rounding of the scale (1e-6).
#[test]
fn embedding_all_types_match_cpu() {
    let Some(dev) = gpu_util::device("embedding_all_types_match_cpu") else {
        return;
    };
    let mut rng = gpu_util::rng("embedding_all_types_match_cpu");
    for ty in GPU_TYPES {
        let be = ty.block_elems().max(32);
        let mut cases = vec![(50usize, be), (300, 2 * be)];
        if matches!(ty, GgmlType::F32 | GgmlType::F16) {
            cases.push((20, 100));
        }
        for (vocab, cols) in cases {
            let (bytes, deq) = random_matrix(&mut rng, ty, vocab, cols);
            let ids: Vec<u32> = (0..37).map(|_| rng.gen_range(0..vocab as u32)).collect();
            let scale = rng.gen_range(0.5f32..3.0);
            let (tb, ib) = (dev.upload(&bytes).unwrap(), dev.upload(&ids).unwrap());
            let ob = dev.alloc::<f32>(ids.len() * cols).unwrap();
            dev.memset(&ob, 0xff).unwrap();
            let t = QMatrix {
                data: &tb,
                offset: 0,
                ty,
                rows: vocab,
                cols,
            };
            embedding(&dev, &t, &ib, &ob, ids.len(), scale).unwrap();
            let want: Vec<f64> = ids
                .iter()
                .flat_map(|&i| {
                    deq[i as usize * cols..(i as usize + 1) * cols]
                        .iter()
                        .map(move |&v| v as f64 * scale as f64)
                })
                .collect();
            let e = rel_err(&dev.download(&ob).unwrap(), &want);
            assert!(e < 1e-6, "embedding {ty} cols {cols}: rel err {e}");
        }
    }
}

/// RMSNorm with and without the fused residual add, rows held in registers (up to 8 per
/// thread) and longer ones; tolerance 1e-5 relative.
#[test]
fn rms_norm_matches_cpu() {
    let Some(dev) = gpu_util::device("rms_norm_matches_cpu") else {
        return;
    };
    let mut rng = gpu_util::rng("rms_norm_matches_cpu");
    for n in [1usize, 31, 896, 4097, 8192, 10_000] {
        for with_res in [false, true] {
            let rows = 5;
            let x = randn(&mut rng, rows * n, 2.0);
            let res = randn(&mut rng, rows * n, 2.0);
            let w = randn(&mut rng, n, 1.5);
            let eps = 1e-6f32;
            let (xb, rb, wb) = (
                dev.upload(&x).unwrap(),
                dev.upload(&res).unwrap(),
                dev.upload(&w).unwrap(),
            );
            let ob = dev.alloc::<f32>(rows * n).unwrap();
            dev.memset(&ob, 0xff).unwrap();
            // The residual stream is updated in place: sum_out aliases the residual.
            rms_norm(
                &dev,
                &xb,
                with_res.then_some(&rb),
                with_res.then_some(&rb),
                &wb,
                &ob,
                rows,
                n,
                eps,
            )
            .unwrap();
            let mut want = vec![0f64; rows * n];
            let mut sums = vec![0f64; rows * n];
            for r in 0..rows {
                let s: Vec<f64> = (0..n)
                    .map(|i| {
                        x[r * n + i] as f64 + if with_res { res[r * n + i] as f64 } else { 0.0 }
                    })
                    .collect();
                let ms = s.iter().map(|v| v * v).sum::<f64>() / n as f64;
                let sc = 1.0 / (ms + eps as f64).sqrt();
                for i in 0..n {
                    want[r * n + i] = s[i] * sc * w[i] as f64;
                    sums[r * n + i] = s[i];
                }
            }
            let e = rel_err(&dev.download(&ob).unwrap(), &want);
            assert!(e < 1e-5, "rms_norm n={n} res={with_res}: rel err {e}");
            if with_res {
                let e = rel_err(&dev.download(&rb).unwrap(), &sums);
                assert!(e < 1e-6, "rms_norm sum_out n={n}: rel err {e}");
            }
        }
    }
}

/// RoPE, normal and NeoX, full and partial rotation, positions up to 4096: max abs error 2e-3
/// (the angle pos * freq is formed in f32, as llama.cpp does, against an f64 reference).
#[test]
fn rope_matches_cpu() {
    let Some(dev) = gpu_util::device("rope_matches_cpu") else {
        return;
    };
    let mut rng = gpu_util::rng("rope_matches_cpu");
    for (mode, head_dim, rot_dim, with_ff) in [
        (RopeMode::Normal, 64, 64, false),
        (RopeMode::Neox, 64, 64, false),
        (RopeMode::Neox, 128, 64, true),
        (RopeMode::Normal, 256, 256, true),
    ] {
        let (tokens, heads) = (19, 3);
        let cfg = RopeConfig {
            heads,
            head_dim,
            rot_dim,
            mode,
            base: 10000.0,
            freq_scale: 0.5,
        };
        let x = randn(&mut rng, tokens * heads * head_dim, 1.0);
        let pos: Vec<u32> = (0..tokens).map(|_| rng.gen_range(0..4096)).collect();
        let ff: Vec<f32> = (0..rot_dim / 2)
            .map(|_| rng.gen_range(1.0f32..8.0))
            .collect();
        let (xb, pb, fb) = (
            dev.upload(&x).unwrap(),
            dev.upload(&pos).unwrap(),
            dev.upload(&ff).unwrap(),
        );
        rope(&dev, &cfg, &xb, &pb, with_ff.then_some(&fb), tokens).unwrap();
        let mut want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        for t in 0..tokens {
            for h in 0..heads {
                let base = (t * heads + h) * head_dim;
                for i in 0..rot_dim / 2 {
                    let mut th =
                        pos[t] as f64 * 0.5 * 10000f64.powf(-2.0 * i as f64 / rot_dim as f64);
                    if with_ff {
                        th /= ff[i] as f64;
                    }
                    let (a, b) = match mode {
                        RopeMode::Normal => (base + 2 * i, base + 2 * i + 1),
                        RopeMode::Neox => (base + i, base + i + rot_dim / 2),
                    };
                    let (x0, x1) = (x[a] as f64, x[b] as f64);
                    want[a] = x0 * th.cos() - x1 * th.sin();
                    want[b] = x0 * th.sin() + x1 * th.cos();
                }
            }
        }
        let e = max_abs_err(&dev.download(&xb).unwrap(), &want);
        assert!(
            e < 2e-3,
            "rope {mode:?} hd {head_dim} rot {rot_dim}: max abs err {e}"
        );
    }
}

/// Row softmax; tolerance 1e-5 relative.
#[test]
fn softmax_matches_cpu() {
    let Some(dev) = gpu_util::device("softmax_matches_cpu") else {
        return;
    };
    let mut rng = gpu_util::rng("softmax_matches_cpu");
    for n in [1usize, 16, 31, 32, 33, 1024, 4096, 151_936] {
        let rows = 3;
        let x = randn(&mut rng, rows * n, 8.0);
        let scale = 0.7f32;
        let xb = dev.upload(&x).unwrap();
        let yb = dev.alloc::<f32>(rows * n).unwrap();
        dev.memset(&yb, 0xff).unwrap();
        softmax(&dev, &xb, &yb, rows, n, scale).unwrap();
        let mut want = vec![0f64; rows * n];
        for r in 0..rows {
            let row = &x[r * n..(r + 1) * n];
            let m = row
                .iter()
                .map(|&v| v as f64 * scale as f64)
                .fold(f64::MIN, f64::max);
            let s: f64 = row
                .iter()
                .map(|&v| (v as f64 * scale as f64 - m).exp())
                .sum();
            for i in 0..n {
                want[r * n + i] = (x[r * n + i] as f64 * scale as f64 - m).exp() / s;
            }
        }
        let e = rel_err(&dev.download(&yb).unwrap(), &want);
        assert!(e < 1e-5, "softmax n={n}: rel err {e}");
    }
}

/// Argmax: exact, first index on ties.
#[test]
fn argmax_matches_cpu() {
    let Some(dev) = gpu_util::device("argmax_matches_cpu") else {
        return;
    };
    let mut rng = gpu_util::rng("argmax_matches_cpu");
    for n in [1usize, 31, 32, 33, 1024, 32_000, 151_936] {
        let rows = 4;
        let mut x = randn(&mut rng, rows * n, 10.0);
        // Row 1: the maximum twice; the first occurrence wins.
        if n > 2 {
            let (a, b) = (rng.gen_range(0..n / 2), rng.gen_range(n / 2..n));
            x[n + a] = 100.0;
            x[n + b] = 100.0;
        }
        let xb = dev.upload(&x).unwrap();
        let ob = dev.alloc::<u32>(rows).unwrap();
        dev.memset(&ob, 0xff).unwrap();
        argmax(&dev, &xb, &ob, rows, n).unwrap();
        let got = dev.download(&ob).unwrap();
        for r in 0..rows {
            let row = &x[r * n..(r + 1) * n];
            let mut best = 0;
            for i in 1..n {
                if row[i] > row[best] {
                    best = i;
                }
            }
            assert_eq!(got[r] as usize, best, "argmax n={n} row {r}");
        }
    }
}

struct AttnCase {
    kv_lens: Vec<usize>,
    /// Query tokens per sequence: the last `q` positions of each.
    q: usize,
    n_heads: usize,
    n_kv: usize,
    head_dim: usize,
    causal: bool,
    window: Option<u32>,
    softcap: Option<f32>,
    /// Whether prefill-heavy passes may take the tiled kernel (false: every token on the
    /// per-token kernel, as under batch invariance).
    tiled: bool,
}

fn run_attention_case(dev: &GpuDevice, rng: &mut impl Rng, c: &AttnCase) {
    const BS: usize = rocmforge::model::BLOCK_SIZE;
    let n_seqs = c.kv_lens.len();
    let max_blocks = c.kv_lens.iter().map(|l| l.div_ceil(BS)).max().unwrap();
    let num_blocks = n_seqs * max_blocks + 3;
    // Random distinct physical blocks.
    let mut ids: Vec<u32> = (0..num_blocks as u32).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.gen_range(0..=i));
    }
    let tables: Vec<u32> = ids[..n_seqs * max_blocks].to_vec();
    let (hd, nkv, nh) = (c.head_dim, c.n_kv, c.n_heads);
    let cache_len = num_blocks * nkv * BS * hd;
    let kc = dev.alloc::<f16>(cache_len).unwrap();
    let vc = dev.alloc::<f16>(cache_len).unwrap();
    dev.memset(&kc, 0xff).unwrap();
    dev.memset(&vc, 0xff).unwrap();
    let kv = PagedKv {
        k: &kc,
        v: &vc,
        num_blocks,
        n_kv_heads: nkv,
        head_dim: hd,
    };
    // Write every position of every sequence through kv_write.
    let mut seq_of = Vec::new();
    let mut pos = Vec::new();
    for (s, &l) in c.kv_lens.iter().enumerate() {
        for p in 0..l {
            seq_of.push(s as u32);
            pos.push(p as u32);
        }
    }
    let all = seq_of.len();
    let kf = randn(rng, all * nkv * hd, 1.0);
    let vf = randn(rng, all * nkv * hd, 1.0);
    let lens: Vec<u32> = c.kv_lens.iter().map(|&l| l as u32).collect();
    let (tb, sb, pb, lb) = (
        dev.upload(&tables).unwrap(),
        dev.upload(&seq_of).unwrap(),
        dev.upload(&pos).unwrap(),
        dev.upload(&lens).unwrap(),
    );
    let idx_all = KvIndex {
        block_tables: &tb,
        max_blocks,
        seq_of_token: &sb,
        positions: &pb,
        kv_lens: &lb,
        n_seqs,
        tokens: all,
    };
    kv_write(
        dev,
        &kv,
        &idx_all,
        &dev.upload(&kf).unwrap(),
        &dev.upload(&vf).unwrap(),
    )
    .unwrap();
    // Queries: the last q positions of each sequence.
    let mut qseq = Vec::new();
    let mut qpos = Vec::new();
    for (s, &l) in c.kv_lens.iter().enumerate() {
        for p in l.saturating_sub(c.q)..l {
            qseq.push(s as u32);
            qpos.push(p as u32);
        }
    }
    let nq = qseq.len();
    let q = randn(rng, nq * nh * hd, 1.0);
    let (qsb, qpb, qb) = (
        dev.upload(&qseq).unwrap(),
        dev.upload(&qpos).unwrap(),
        dev.upload(&q).unwrap(),
    );
    let idx = KvIndex {
        block_tables: &tb,
        max_blocks,
        seq_of_token: &qsb,
        positions: &qpb,
        kv_lens: &lb,
        n_seqs,
        tokens: nq,
    };
    let ob = dev.alloc::<f32>(nq * nh * hd).unwrap();
    dev.memset(&ob, 0xff).unwrap();
    let scale = 1.0 / (hd as f32).sqrt();
    let cfg = AttentionConfig {
        n_heads: nh,
        scale,
        causal: c.causal,
        window: c.window,
        softcap: c.softcap,
        tiled: c.tiled,
    };
    attention(dev, &cfg, &kv, &idx, &qb, &ob).unwrap();
    // Reference in f64 over the f16-rounded cache values.
    let start_of: Vec<usize> = c
        .kv_lens
        .iter()
        .scan(0, |acc, &l| {
            let s = *acc;
            *acc += l;
            Some(s)
        })
        .collect();
    let kv_at = |buf: &[f32], s: usize, p: usize, g: usize, d: usize| -> f64 {
        f16::from_f32(buf[((start_of[s] + p) * nkv + g) * hd + d]).to_f64()
    };
    let mut want = vec![0f64; nq * nh * hd];
    let mut probs_all = Vec::new(); // for weighted_v: [nq, nh, max_len] probabilities
    let max_len = *c.kv_lens.iter().max().unwrap();
    for t in 0..nq {
        let (s, p) = (qseq[t] as usize, qpos[t] as usize);
        let end = if c.causal {
            (p + 1).min(c.kv_lens[s])
        } else {
            c.kv_lens[s]
        };
        let start = match c.window {
            Some(w) if p + 1 > w as usize => p + 1 - w as usize,
            _ => 0,
        };
        for h in 0..nh {
            let g = h / (nh / nkv);
            let mut sc = vec![f64::NEG_INFINITY; max_len];
            for j in start..end {
                let mut dot = 0f64;
                for d in 0..hd {
                    dot += q[(t * nh + h) * hd + d] as f64 * scale as f64 * kv_at(&kf, s, j, g, d);
                }
                if let Some(cap) = c.softcap {
                    dot = cap as f64 * (dot / cap as f64).tanh();
                }
                sc[j] = dot;
            }
            let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = sc.iter().map(|&v| (v - m).exp()).sum();
            let pr: Vec<f64> = sc.iter().map(|&v| (v - m).exp() / z).collect();
            for d in 0..hd {
                want[(t * nh + h) * hd + d] =
                    (start..end).map(|j| pr[j] * kv_at(&vf, s, j, g, d)).sum();
            }
            probs_all.extend(pr.iter().map(|&v| v as f32));
        }
    }
    let e = rel_err(&dev.download(&ob).unwrap(), &want);
    let tag = format!(
        "kv {:?} q {} heads {}/{} hd {} causal {} window {:?} softcap {:?}",
        c.kv_lens, c.q, nh, nkv, hd, c.causal, c.window, c.softcap
    );
    assert!(e < 1e-4, "attention {tag}: rel err {e}");
    // The weighted sum alone, fed the reference probabilities: 1e-5 relative.
    let wb = dev.upload(&probs_all).unwrap();
    let ob2 = dev.alloc::<f32>(nq * nh * hd).unwrap();
    dev.memset(&ob2, 0xff).unwrap();
    weighted_v(dev, nh, &kv, &idx, &wb, max_len, &ob2).unwrap();
    let mut want2 = vec![0f64; nq * nh * hd];
    for t in 0..nq {
        let s = qseq[t] as usize;
        for h in 0..nh {
            let g = h / (nh / nkv);
            for d in 0..hd {
                want2[(t * nh + h) * hd + d] = (0..max_len)
                    .filter(|&j| j < c.kv_lens[s])
                    .map(|j| probs_all[(t * nh + h) * max_len + j] as f64 * kv_at(&vf, s, j, g, d))
                    .sum();
            }
        }
    }
    if c.kv_lens.iter().all(|&l| l == max_len) {
        let e = rel_err(&dev.download(&ob2).unwrap(), &want2);
        assert!(e < 1e-5, "weighted_v {tag}: rel err {e}");
    }
}

/// Flash attention over the paged F16 cache: decode (q = 1) and chunked prefill at seq_k 1, 16,
/// 31, 32, 33, 1024, 4096, GQA 14/2 (Qwen2), head dims 64/128/256; tolerance 1e-4 relative
/// (f32 online softmax against f64).
#[test]
fn attention_decode_and_prefill_match_cpu() {
    let Some(dev) = gpu_util::device("attention_decode_and_prefill_match_cpu") else {
        return;
    };
    let mut rng = gpu_util::rng("attention_decode_and_prefill_match_cpu");
    for seq_k in [1usize, 16, 31, 32, 33, 1024, 4096] {
        for q in [1usize, 37] {
            let case = AttnCase {
                kv_lens: vec![seq_k],
                q,
                n_heads: 14,
                n_kv: 2,
                head_dim: 64,
                causal: true,
                window: None,
                softcap: None,
                tiled: true,
            };
            run_attention_case(&dev, &mut rng, &case);
        }
    }
    // Whole prompt at once, two sequences of different lengths in one batch.
    run_attention_case(
        &dev,
        &mut rng,
        &AttnCase {
            kv_lens: vec![300, 77],
            q: 300,
            n_heads: 4,
            n_kv: 1,
            head_dim: 128,
            causal: true,
            window: None,
            softcap: None,
            tiled: true,
        },
    );
    run_attention_case(
        &dev,
        &mut rng,
        &AttnCase {
            kv_lens: vec![1024],
            q: 1024,
            n_heads: 2,
            n_kv: 2,
            head_dim: 64,
            causal: true,
            window: None,
            softcap: None,
            tiled: true,
        },
    );
    run_attention_case(
        &dev,
        &mut rng,
        &AttnCase {
            kv_lens: vec![40, 40, 40],
            q: 2,
            n_heads: 8,
            n_kv: 4,
            head_dim: 256,
            causal: true,
            window: None,
            softcap: None,
            tiled: true,
        },
    );
}

/// The per-token kernels alone (the vector kernels for head dims 64, 128, 256 and the generic
/// one for 72): decode of sequences whose lengths give 1 to 8 key chunks in one batch (each
/// token's chunks merged by the last of its blocks), GQA, a window and soft-capping, and
/// prompts on the per-token path (`tiled: false`, as under batch invariance). Each case runs
/// twice on one device: the chunk counters must be back at zero after every launch.
/// Tolerance 1e-4 relative.
#[test]
fn attention_per_token_kernels_match_cpu() {
    let Some(dev) = gpu_util::device("attention_per_token_kernels_match_cpu") else {
        return;
    };
    let mut rng = gpu_util::rng("attention_per_token_kernels_match_cpu");
    for head_dim in [64usize, 128, 256, 72] {
        for (kv_lens, q, window, softcap) in [
            (
                vec![1usize, 64, 65, 129, 300, 1024, 2047],
                1usize,
                None,
                None,
            ),
            (vec![500, 33], 1, Some(100u32), Some(30.0f32)),
            (vec![200, 17], 24, None, None),
        ] {
            let case = AttnCase {
                kv_lens,
                q,
                n_heads: 8,
                n_kv: 2,
                head_dim,
                causal: true,
                window,
                softcap,
                tiled: false,
            };
            run_attention_case(&dev, &mut rng, &case);
            run_attention_case(&dev, &mut rng, &case);
        }
    }
}

/// Non-causal, sliding window and soft-capping variants; tolerance 1e-4 relative.
#[test]
fn attention_variants_match_cpu() {
    let Some(dev) = gpu_util::device("attention_variants_match_cpu") else {
        return;
    };
    let mut rng = gpu_util::rng("attention_variants_match_cpu");
    for seq_k in [1usize, 33, 1024] {
        run_attention_case(
            &dev,
            &mut rng,
            &AttnCase {
                kv_lens: vec![seq_k],
                q: seq_k.min(40),
                n_heads: 4,
                n_kv: 2,
                head_dim: 64,
                causal: false,
                window: None,
                softcap: None,
                tiled: true,
            },
        );
        run_attention_case(
            &dev,
            &mut rng,
            &AttnCase {
                kv_lens: vec![seq_k],
                q: seq_k.min(40),
                n_heads: 4,
                n_kv: 4,
                head_dim: 128,
                causal: true,
                window: Some(16),
                softcap: None,
                tiled: true,
            },
        );
        run_attention_case(
            &dev,
            &mut rng,
            &AttnCase {
                kv_lens: vec![seq_k],
                q: 3,
                n_heads: 8,
                n_kv: 1,
                head_dim: 256,
                causal: true,
                window: Some(512),
                softcap: Some(50.0),
                tiled: true,
            },
        );
    }
}

/// The tiled prefill kernel (from 8 query tokens per sequence on): head dims 64/80/128/256
/// (80: partial float4 groups per lane), a non-multiple of 16 (72: the per-token kernel),
/// tiles spanning several sequences of different lengths, GQA, window and soft-capping;
/// tolerance 1e-4 relative, as for the per-token kernel.
#[test]
fn attention_tiled_prefill_match_cpu() {
    let Some(dev) = gpu_util::device("attention_tiled_prefill_match_cpu") else {
        return;
    };
    let mut rng = gpu_util::rng("attention_tiled_prefill_match_cpu");
    for (kv_lens, q, n_heads, n_kv, head_dim, causal, window, softcap) in [
        (
            vec![200usize],
            200usize,
            14usize,
            2usize,
            64usize,
            true,
            None,
            None,
        ),
        (vec![50, 17, 130], 130, 6, 3, 80, true, None, None),
        (vec![97], 60, 4, 4, 128, false, None, None),
        (vec![300], 300, 8, 2, 256, true, Some(100u32), Some(30.0f32)),
        (vec![64, 45], 40, 4, 1, 72, true, Some(20), None),
        (vec![33, 1, 70], 70, 2, 1, 64, true, Some(7), None),
    ] {
        run_attention_case(
            &dev,
            &mut rng,
            &AttnCase {
                kv_lens,
                q,
                n_heads,
                n_kv,
                head_dim,
                causal,
                window,
                softcap,
                tiled: true,
            },
        );
    }
}

/// Shape errors come back as errors, not faults.
#[test]
fn ops_reject_bad_shapes() {
    let Some(dev) = gpu_util::device("ops_reject_bad_shapes") else {
        return;
    };
    let wb = dev.alloc::<u8>(34 * 4).unwrap();
    let x = dev.alloc::<f32>(64).unwrap();
    let y = dev.alloc::<f32>(4).unwrap();
    let w = QMatrix {
        data: &wb,
        offset: 0,
        ty: GgmlType::Q8_0,
        rows: 4,
        cols: 33,
    };
    assert!(
        matvec(&dev, &w, &x, None, &y, 1).is_err(),
        "cols not a multiple of 32"
    );
    let w = QMatrix {
        data: &wb,
        offset: 0,
        ty: GgmlType::Q8_0,
        rows: 5,
        cols: 32,
    };
    assert!(
        matvec(&dev, &w, &x, None, &y, 1).is_err(),
        "matrix past the buffer"
    );
    let w = QMatrix {
        data: &wb,
        offset: 2,
        ty: GgmlType::Q8_0,
        rows: 1,
        cols: 32,
    };
    assert!(
        matvec(&dev, &w, &x, None, &y, 1).is_err(),
        "misaligned offset"
    );
    let w = QMatrix {
        data: &wb,
        offset: 0,
        ty: GgmlType::Q8_0,
        rows: 4,
        cols: 32,
    };
    assert!(
        matvec(&dev, &w, &x, None, &y, 2).is_err(),
        "y too short for batch 2"
    );
    assert!(softmax(&dev, &x, &y, 2, 32, 1.0).is_err());
}
