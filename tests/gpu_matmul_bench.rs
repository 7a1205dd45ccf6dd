//! Timings of the prompt-processing / batched-decode matrix products of real model shapes
//! (random weights) at 5..512 tokens: batched matvec, the portable tiled kernel and the cuBLAS
//! path, to pick `matmul::BLAS_MIN_TOKENS`. A benchmark, not a test: `#[ignore]`d, prints
//! numbers, asserts nothing about time.
//! Run: `cargo test --release --test gpu_matmul_bench -- --ignored --nocapture`.

mod gpu_util;

use std::time::Instant;

use rand::Rng;
use rocmforge::backend::gpu::ops::matmul::{
    dequantize_f16, matmul_blas, matmul_tiled, BLAS_SCRATCH_BYTES,
};
use rocmforge::backend::gpu::ops::matvec::matvec;
use rocmforge::backend::gpu::ops::QMatrix;
use rocmforge::backend::gpu::{GpuBuffer, GpuDevice};
use rocmforge::quant::GgmlType;

/// (type, rows, cols, count per forward pass) of each weight matrix of a model.
fn model(name: &str) -> Vec<(GgmlType, usize, usize, usize)> {
    match name {
        // Qwen2.5-0.5B: 24 layers, hidden 896, kv 128, ffn 4864, vocab 151936 (tied).
        "qwen2-0.5b Q8_0" | "qwen2-0.5b F16" => {
            let t = if name.ends_with("F16") {
                GgmlType::F16
            } else {
                GgmlType::Q8_0
            };
            vec![
                (t, 896, 896, 48),
                (t, 128, 896, 48),
                (t, 4864, 896, 48),
                (t, 896, 4864, 24),
                (t, 151_936, 896, 1),
            ]
        }
        // Llama-2-7B Q4_K_M (approximately: Q4_K, with ffn_down and output in Q6_K).
        _ => vec![
            (GgmlType::Q4K, 4096, 4096, 128),
            (GgmlType::Q4K, 11008, 4096, 64),
            (GgmlType::Q6K, 4096, 11008, 32),
            (GgmlType::Q6K, 32000, 4096, 1),
        ],
    }
}

/// A random matrix whose f16 scales (and F16 weights) are finite and small.
fn random_weights(
    dev: &GpuDevice,
    rng: &mut impl Rng,
    ty: GgmlType,
    rows: usize,
    cols: usize,
) -> GpuBuffer<u8> {
    let rb = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut host = vec![0u8; rb * rows];
    rng.fill(&mut host[..]);
    // Clear bits 13..14 of every 16-bit word: any f16 there is finite and below 2^-7 in
    // magnitude (exponent field at most 7), so scales and F16 weights stay small.
    for i in (1..host.len()).step_by(2) {
        host[i] &= 0b1001_1111;
    }
    dev.upload(&host).unwrap()
}

fn time_ms(dev: &GpuDevice, iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    dev.synchronize().unwrap();
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    dev.synchronize().unwrap();
    t.elapsed().as_secs_f64() * 1e3 / iters as f64
}

#[test]
#[ignore]
fn prompt_matmul_timings() {
    let Some(dev) = gpu_util::device("prompt_matmul_timings") else {
        return;
    };
    let mut rng = gpu_util::rng("prompt_matmul_timings");
    println!("{}", dev.info());
    let token_counts = [5usize, 8, 16, 32, 64, 128, 256, 512];
    let models: Vec<String> = std::env::var("MATMUL_BENCH_MODELS")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| {
            vec![
                "qwen2-0.5b Q8_0".into(),
                "qwen2-0.5b F16".into(),
                "llama-7b Q4_K_M".into(),
            ]
        });
    for name in &models {
        let shapes = model(name);
        // Per-forward totals (ms) per token count: matvec, tiled, blas.
        let mut tot = vec![[0f64; 3]; token_counts.len()];
        for &(ty, rows, cols, count) in &shapes {
            // Copies rotated so that the L2 cache (50 MB) does not serve repeats.
            let bytes = ty.row_bytes(cols as u64).unwrap() as usize * rows;
            let copies = (128usize << 20).div_ceil(bytes).clamp(1, count);
            let ws: Vec<GpuBuffer<u8>> = (0..copies)
                .map(|_| random_weights(&dev, &mut rng, ty, rows, cols))
                .collect();
            let maxt = *token_counts.last().unwrap();
            let x = dev
                .upload(&gpu_util::randn(&mut rng, maxt * cols, 1.0))
                .unwrap();
            let y = dev.alloc::<f32>(maxt * rows).unwrap();
            let q = |i: usize| QMatrix {
                data: &ws[i % copies],
                offset: 0,
                ty,
                rows,
                cols,
            };
            let iters = copies.max(4);
            let deq = dev.alloc::<half::f16>(rows * cols).unwrap();
            let mut i = 0;
            let t_deq = time_ms(&dev, iters, || {
                i += 1;
                dequantize_f16(&dev, &q(i), &deq).unwrap();
            });
            drop(deq);
            print!(
                "{name} {ty} {rows}x{cols} (x{count}): dequant {:.3} ms;",
                t_deq
            );
            for (ti, &tokens) in token_counts.iter().enumerate() {
                let mut i = 0;
                let t_mv = if tokens <= 64 {
                    time_ms(&dev, iters, || {
                        i += 1;
                        matvec(&dev, &q(i), &x, None, &y, tokens).unwrap();
                    })
                } else {
                    f64::NAN
                };
                let t_tiled = time_ms(&dev, iters, || {
                    i += 1;
                    matmul_tiled(&dev, &q(i), &x, None, &y, tokens).unwrap();
                });
                let t_blas = time_ms(&dev, iters, || {
                    i += 1;
                    assert!(
                        matmul_blas(&dev, &q(i), &x, None, &y, tokens, BLAS_SCRATCH_BYTES).unwrap()
                    );
                });
                print!(" n={tokens}: mv {t_mv:.3} tiled {t_tiled:.3} blas {t_blas:.3};");
                for (k, t) in [t_mv, t_tiled, t_blas].into_iter().enumerate() {
                    tot[ti][k] += t * count as f64;
                }
            }
            println!();
        }
        println!("== {name}: matrix products of one forward pass (ms) and tokens/s they allow");
        println!("tokens | matvec | tiled | cuBLAS | t/s (best)");
        for (ti, &tokens) in token_counts.iter().enumerate() {
            let [a, b, c] = tot[ti];
            let best = [a, b, c]
                .into_iter()
                .filter(|v| v.is_finite())
                .fold(f64::MAX, f64::min);
            println!(
                "{tokens:>6} | {a:>8.3} | {b:>8.3} | {c:>8.3} | {:>9.0}",
                tokens as f64 / best * 1e3
            );
        }
    }
}

/// Prefill attention of one layer at 512 tokens (one sequence, causal), qwen2-0.5b and llama-7b
/// head shapes: to see how much of a pp512 attention takes next to the matrix products.
#[test]
#[ignore]
fn prefill_attention_timings() {
    use rocmforge::backend::gpu::ops::attention::{attention, AttentionConfig, KvIndex, PagedKv};
    let Some(dev) = gpu_util::device("prefill_attention_timings") else {
        return;
    };
    let mut rng = gpu_util::rng("prefill_attention_timings");
    // (name, layers, heads, kv heads, head_dim)
    for (name, layers, n_heads, n_kv, hd) in [
        ("qwen2-0.5b", 24usize, 14usize, 2usize, 64usize),
        ("llama-7b", 32, 32, 32, 128),
    ] {
        for tokens in [128usize, 512, 2048] {
            let blocks = tokens.div_ceil(16);
            let cache = blocks * n_kv * 16 * hd;
            let kc: Vec<half::f16> = gpu_util::randn(&mut rng, cache, 1.0)
                .iter()
                .map(|&v| half::f16::from_f32(v))
                .collect();
            let vc: Vec<half::f16> = gpu_util::randn(&mut rng, cache, 1.0)
                .iter()
                .map(|&v| half::f16::from_f32(v))
                .collect();
            let (kb, vb) = (dev.upload(&kc).unwrap(), dev.upload(&vc).unwrap());
            let table: Vec<u32> = (0..blocks as u32).collect();
            let tb = dev.upload(&table).unwrap();
            let sot = dev.upload(&vec![0u32; tokens]).unwrap();
            let pos = dev.upload(&(0..tokens as u32).collect::<Vec<_>>()).unwrap();
            let lens = dev.upload(&[tokens as u32]).unwrap();
            let q = dev
                .upload(&gpu_util::randn(&mut rng, tokens * n_heads * hd, 1.0))
                .unwrap();
            let out = dev.alloc::<f32>(tokens * n_heads * hd).unwrap();
            let kv = PagedKv {
                k: &kb,
                v: &vb,
                num_blocks: blocks,
                n_kv_heads: n_kv,
                head_dim: hd,
            };
            let idx = KvIndex {
                block_tables: &tb,
                max_blocks: blocks,
                seq_of_token: &sot,
                positions: &pos,
                kv_lens: &lens,
                n_seqs: 1,
                tokens,
            };
            let cfg = AttentionConfig {
                n_heads,
                scale: 1.0 / (hd as f32).sqrt(),
                causal: true,
                window: None,
                softcap: None,
                tiled: true,
            };
            let t = time_ms(&dev, 10, || {
                attention(&dev, &cfg, &kv, &idx, &q, &out).unwrap();
            });
            // Causal: tokens^2 / 2 scores, each 2 * hd flops for q.k and 2 * hd for the sum.
            let flops = (tokens * tokens / 2 * n_heads * 4 * hd) as f64;
            println!(
                "attention {name} {tokens} tokens: {t:.3} ms per layer, {:.2} ms for {layers} layers, {:.1} TFLOP/s",
                t * layers as f64,
                flops / (t * 1e-3) / 1e12
            );
        }
    }
}
