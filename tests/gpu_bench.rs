//! Kernel timings for the decode step of real model shapes (random weights): the matrix-vector
//! products of one token, launched one by one and replayed as one CUDA/HIP graph.
//! A benchmark, not a test: `#[ignore]`d, prints numbers, asserts nothing about time.
//! Run: `cargo test --release --test gpu_bench -- --ignored --nocapture`.
//! `MV_VARIANTS=v3,auto,w1,f0+w2` (comma-separated, options joined by `+`) times several matvec
//! settings ([`rocmforge::backend::gpu::ops::matvec::Tuning`]): `v3` the float kernels, `auto`
//! the defaults, `wN` N warps per row, `tN` the warp target, `fN` the fuse mode, `rN` the fuse
//! row limit. Default: `v3,auto`.

mod gpu_util;

use std::time::Instant;

use rand::Rng;
use rocmforge::backend::gpu::ops::matvec::{matvec, set_tuning, tuning, Tuning};
use rocmforge::backend::gpu::ops::QMatrix;
use rocmforge::backend::gpu::GpuBuffer;
use rocmforge::quant::GgmlType;

/// (type, rows, cols, count per token) of each weight matrix of a model's decode step.
fn model(name: &str) -> Vec<(GgmlType, usize, usize, usize)> {
    match name {
        // Qwen2.5-0.5B Q8_0: 24 layers, hidden 896, kv 128, ffn 4864, vocab 151936 (tied).
        "qwen2-0.5b Q8_0" => vec![
            (GgmlType::Q8_0, 896, 896, 48),
            (GgmlType::Q8_0, 128, 896, 48),
            (GgmlType::Q8_0, 4864, 896, 48),
            (GgmlType::Q8_0, 896, 4864, 24),
            (GgmlType::Q8_0, 151_936, 896, 1),
        ],
        // Llama-2-7B Q4_K_M (approximately: Q4_K, with ffn_down and output in Q6_K).
        _ => vec![
            (GgmlType::Q4K, 4096, 4096, 128),
            (GgmlType::Q4K, 11008, 4096, 64),
            (GgmlType::Q6K, 4096, 11008, 32),
            (GgmlType::Q6K, 32000, 4096, 1),
        ],
    }
}

#[test]
#[ignore]
fn decode_matvec_bandwidth() {
    let Some(dev) = gpu_util::device("decode_matvec_bandwidth") else {
        return;
    };
    let mut rng = gpu_util::rng("decode_matvec_bandwidth");
    println!(
        "{}: peak {:.2} TB/s",
        dev.info(),
        dev.info().peak_bandwidth / 1e12
    );
    let variants = std::env::var("MV_VARIANTS").unwrap_or_else(|_| "v3,auto".into());
    let mut summary = Vec::new();
    for name in ["qwen2-0.5b Q8_0", "llama-7b Q4_K_M"] {
        // One buffer per distinct matrix, reused `count` times (as many layers read as many
        // distinct weights, allocate them all: the L2 cache must not serve repeats).
        let mut mats: Vec<(GpuBuffer<u8>, GgmlType, usize, usize)> = Vec::new();
        let mut bytes = 0usize;
        for (ty, rows, cols, count) in model(name) {
            let rb = ty.row_bytes(cols as u64).unwrap() as usize;
            for _ in 0..count {
                let mut host = vec![0u8; rb * rows];
                rng.fill(&mut host[..]);
                // Finite f16 scales: put a small half at every block start (all types here
                // keep one at offset 0 or near the end; random bytes elsewhere are valid).
                let bb = ty.block_bytes();
                let off = match ty {
                    GgmlType::Q6K => 208,
                    _ => 0,
                };
                for b in 0..host.len() / bb {
                    host[b * bb + off..b * bb + off + 2]
                        .copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
                }
                mats.push((dev.upload(&host).unwrap(), ty, rows, cols));
                bytes += rb * rows;
            }
        }
        for v in variants.split(',') {
            let mut t = Tuning::default();
            for o in v.split('+') {
                let num = || o[1..].parse::<u32>().unwrap();
                match o.as_bytes()[0] {
                    b'a' => {}
                    b'v' => t.float_path = true,
                    b'w' => t.warps_per_row = num(),
                    b't' => t.target_warps = num(),
                    b'f' => t.fuse = num(),
                    b'r' => t.fuse_rows = num(),
                    _ => panic!("unknown variant {o}"),
                }
            }
            set_tuning(t);
            println!("{name}, variant {v}: {:?}", tuning());
            // Each shape alone (its `count` matrices in one graph).
            {
                let maxc = mats.iter().map(|m| m.3).max().unwrap();
                let maxr = mats.iter().map(|m| m.2).max().unwrap();
                let x = dev.upload(&gpu_util::randn(&mut rng, maxc, 1.0)).unwrap();
                let y = dev.alloc::<f32>(maxr).unwrap();
                for (ty, rows, cols, _) in model(name) {
                    let sel: Vec<_> = mats
                        .iter()
                        .filter(|m| m.1 == ty && m.2 == rows && m.3 == cols)
                        .collect();
                    let run = || {
                        for (b, ty, rows, cols) in &sel {
                            let w = QMatrix {
                                data: b,
                                offset: 0,
                                ty: *ty,
                                rows: *rows,
                                cols: *cols,
                            };
                            matvec(&dev, &w, &x, None, &y, 1).unwrap();
                        }
                    };
                    run();
                    dev.begin_capture().unwrap();
                    run();
                    let g = dev.end_capture().unwrap();
                    g.launch().unwrap();
                    dev.synchronize().unwrap();
                    let t0 = Instant::now();
                    for _ in 0..10 {
                        g.launch().unwrap();
                    }
                    dev.synchronize().unwrap();
                    let t = t0.elapsed().as_secs_f64() / 10.0 / sel.len() as f64;
                    let b = ty.row_bytes(cols as u64).unwrap() as f64 * rows as f64;
                    println!(
                        "  {ty} {rows}x{cols}: {:.1} us each, {:.0} GB/s",
                        t * 1e6,
                        b / t / 1e9
                    );
                }
            }
            let maxc = mats.iter().map(|m| m.3).max().unwrap();
            let maxr = mats.iter().map(|m| m.2).max().unwrap();
            let x = dev.upload(&gpu_util::randn(&mut rng, maxc, 1.0)).unwrap();
            let y = dev.alloc::<f32>(maxr).unwrap();
            let step = || {
                for (b, ty, rows, cols) in &mats {
                    let w = QMatrix {
                        data: b,
                        offset: 0,
                        ty: *ty,
                        rows: *rows,
                        cols: *cols,
                    };
                    matvec(&dev, &w, &x, None, &y, 1).unwrap();
                }
            };
            step();
            dev.synchronize().unwrap();
            let iters = 20;
            let t0 = Instant::now();
            for _ in 0..iters {
                step();
            }
            dev.synchronize().unwrap();
            let eager = t0.elapsed().as_secs_f64() / iters as f64;
            dev.begin_capture().unwrap();
            step();
            let graph = dev.end_capture().unwrap();
            graph.launch().unwrap();
            dev.synchronize().unwrap();
            let mut times = Vec::new();
            for _ in 0..5 {
                let t0 = Instant::now();
                for _ in 0..iters {
                    graph.launch().unwrap();
                }
                dev.synchronize().unwrap();
                times.push(t0.elapsed().as_secs_f64() / iters as f64);
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let g = times[times.len() / 2];
            let peak = dev.info().peak_bandwidth;
            println!(
                "{name}: {} matrices, {:.1} MB/token; eager {:.3} ms ({:.0} GB/s); graph {:.3} ms ({:.0} GB/s, {:.0}% of peak) -> matvec-only ceiling {:.0} t/s",
                mats.len(),
                bytes as f64 / 1e6,
                eager * 1e3,
                bytes as f64 / eager / 1e9,
                g * 1e3,
                bytes as f64 / g / 1e9,
                100.0 * bytes as f64 / g / peak,
                1.0 / g
            );
            summary.push(format!(
                "{name} [{v}]: graph {:.3} ms ({:.0} GB/s), eager {:.3} ms",
                g * 1e3,
                bytes as f64 / g / 1e9,
                eager * 1e3
            ));
        }
    }
    set_tuning(Tuning::default());
    println!("summary:");
    for l in summary {
        println!("  {l}");
    }
}
