//! Kernel timings for the decode step of real model shapes (random weights): the matrix-vector
//! products of one token, launched one by one and replayed as one CUDA/HIP graph.
//! A benchmark, not a test: `#[ignore]`d, prints numbers, asserts nothing about time.
//! Run: `cargo test --release --test gpu_bench -- --ignored --nocapture`.
//! `MV_VARIANTS=v3,auto,w1,f0+w2` (comma-separated, options joined by `+`) times several matvec
//! settings ([`rocmforge::backend::gpu::ops::matvec::Tuning`]): `v3` the float kernels, `auto`
//! the defaults, `wN` N warps per row, `tN` the warp target, `fN` the fuse mode, `rN` the fuse
//! row limit. Default: `v3,auto`.
//! `mmvq_kernel_variants` times copies of `kernels/matvec.cu` with other dot functions against
//! each other, kernel by kernel (`MV_SRC`, see there): how the session-3 K-quant dots were chosen.

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
        // Llama-2-7B Q4_K_M as `quantize ... Q4_K_M` writes it and the GPU backend stacks it:
        // attn_v and ffn_down are Q6_K in 16 of the 32 layers; where Q, K, V share Q4_K they
        // are one 12288-row product; gate|up is one 22016-row product; output Q6_K.
        _ => vec![
            (GgmlType::Q4K, 12288, 4096, 16),
            (GgmlType::Q4K, 4096, 4096, 64),
            (GgmlType::Q6K, 4096, 4096, 16),
            (GgmlType::Q4K, 22016, 4096, 32),
            (GgmlType::Q4K, 4096, 11008, 16),
            (GgmlType::Q6K, 4096, 11008, 16),
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
                // Finite f16 scales (random bytes elsewhere are valid).
                let host = random_weights(&mut rng, ty, rows, cols);
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

/// The f16 scale fields (byte offsets in a block) of the types timed here: random bytes there
/// could be Inf/NaN, so they get small finite halves.
fn half_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q4_1 | GgmlType::Q5_1 => &[0, 2],
        GgmlType::Q6K => &[208],
        GgmlType::Q3K => &[108],
        GgmlType::Q2K => &[80, 82],
        _ => &[0],
    }
}

/// Random weights of `ty` with finite scales.
fn random_weights(rng: &mut impl Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let rb = ty.row_bytes(cols as u64).unwrap() as usize;
    let mut host = vec![0u8; rb * rows];
    rng.fill(&mut host[..]);
    let bb = ty.block_bytes();
    let h = half::f16::from_f32(0.01).to_le_bytes();
    for b in 0..host.len() / bb {
        for &off in half_fields(ty) {
            host[b * bb + off..b * bb + off + 2].copy_from_slice(&h);
        }
    }
    host
}

/// Mirrors `MmvqParams` of `kernels/matvec.cu` (and of `ops::matvec`) at this commit.
#[repr(C)]
#[derive(Clone, Copy)]
struct MmvqParams {
    w: u64,
    xq: u64,
    xds: u64,
    x: u64,
    bias: u64,
    y: u64,
    row_bytes: u64,
    rows: u32,
    cols: u32,
    n: u32,
    y_stride: u32,
    warps_per_row: u32,
    groups: u32,
}

/// Mirrors `QuantizeParams` of `kernels/matvec.cu`.
#[repr(C)]
#[derive(Clone, Copy)]
struct QuantizeParams {
    x: u64,
    xq: u64,
    xds: u64,
    total: u32,
}

/// Times variants of the integer matvec kernels (`mmvq1_*` / `mmvq4_*` / `mmvq8_*`, x
/// pre-quantized, no quantize launch) against each other on llama-7b's decode shapes, one CUDA
/// graph of many distinct matrices per (shape, batch, variant), and checks every variant against
/// the first (relative error) and for batch invariance (token r's output bit-for-bit the same at
/// batch 1, 2, 3, 4, 5, 8).
/// `MV_SRC=name=path[:wpr],...`: kernel files to compare (a copy of `kernels/matvec.cu` with
/// changed dot functions; `builtin` = the embedded one); default `base=builtin`.
/// `MV_SHAPES=q4_k:4096x4096,...` and `MV_BATCH=1,2,4,8` narrow the run.
#[test]
#[ignore]
fn mmvq_kernel_variants() {
    use rocmforge::backend::gpu::kernels::{self, KernelSource, MATVEC, QUANTIZE_Q8_1};
    use rocmforge::backend::gpu::LaunchConfig;
    let Some(dev) = gpu_util::device("mmvq_kernel_variants") else {
        return;
    };
    let mut rng = gpu_util::rng("mmvq_kernel_variants");
    println!("{}", dev.info());
    let spec = std::env::var("MV_SRC").unwrap_or_else(|_| "base=builtin".into());
    let mut variants: Vec<(String, KernelSource, u32)> = Vec::new();
    for v in spec.split(',') {
        let (name, rest) = v.split_once('=').expect("MV_SRC entry name=path[:wpr]");
        let (path, wpr) = match rest.split_once(':') {
            Some((p, w)) => (p, w.parse::<u32>().expect("wpr")),
            None => (rest, 1),
        };
        let src = if path == "builtin" {
            MATVEC
        } else {
            let text = std::fs::read_to_string(path).expect("variant source");
            KernelSource {
                name: Box::leak(format!("matvec_{name}").into_boxed_str()),
                source: Box::leak(text.into_boxed_str()),
                kernels: &[],
            }
        };
        variants.push((name.to_string(), src, wpr));
    }
    let all_shapes = [
        (GgmlType::Q4K, 4096, 4096),
        (GgmlType::Q4K, 12288, 4096),
        (GgmlType::Q4K, 22016, 4096),
        (GgmlType::Q4K, 4096, 11008),
        (GgmlType::Q6K, 4096, 4096),
        (GgmlType::Q6K, 4096, 11008),
        (GgmlType::Q6K, 32000, 4096),
        (GgmlType::Q5K, 4096, 4096),
        (GgmlType::Q5K, 22016, 4096),
    ];
    let want_shapes = std::env::var("MV_SHAPES").ok();
    let batches: Vec<usize> = std::env::var("MV_BATCH")
        .unwrap_or_else(|_| "1,2,4,8".into())
        .split(',')
        .map(|b| b.parse().expect("MV_BATCH"))
        .collect();
    let q = dev.kernel(&MATVEC, QUANTIZE_Q8_1).unwrap();
    let mut table = Vec::new();
    for (ty, rows, cols) in all_shapes {
        let suffix = kernels::type_suffix(ty).unwrap();
        let label = format!("{suffix}:{rows}x{cols}");
        if want_shapes
            .as_ref()
            .is_some_and(|w| !w.split(',').any(|s| s == label))
        {
            continue;
        }
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        let bytes = rb * rows;
        // Enough distinct matrices that the 50 MB L2 cannot serve repeats.
        let count = 256_000_000usize.div_ceil(bytes).max(2);
        let mats: Vec<GpuBuffer<u8>> = (0..count)
            .map(|_| {
                dev.upload(&random_weights(&mut rng, ty, rows, cols))
                    .unwrap()
            })
            .collect();
        // Eight vectors; batch b uses the first b (token r's result must not depend on b).
        let x = dev
            .upload(&gpu_util::randn(&mut rng, 8 * cols, 1.0))
            .unwrap();
        let total = 8 * cols;
        let xq = dev.alloc::<u8>(total + total / 32 * 8).unwrap();
        let qp = QuantizeParams {
            x: x.ptr(),
            xq: xq.ptr(),
            xds: xq.ptr() + total as u64,
            total: total as u32,
        };
        unsafe {
            dev.launch_params(
                &q,
                LaunchConfig::linear((total / 4).div_ceil(256) as u32, 256),
                &qp,
            )
            .unwrap()
        };
        let y = dev.alloc::<f32>(8 * rows).unwrap();
        let kernel_nb = |b: usize| match b {
            1 => 1,
            2..=4 => 4,
            _ => 8,
        };
        for &batch in &batches {
            let mut base: Option<Vec<f32>> = None;
            for (vname, src, wpr) in &variants {
                let nb = kernel_nb(batch);
                let kname = format!("mmvq{nb}_{suffix}");
                let k = match dev.kernel(src, &kname) {
                    Ok(k) => k,
                    Err(e) => {
                        println!("{vname}: {kname}: {e}");
                        continue;
                    }
                };
                let wpr = *wpr as usize;
                let cfg = LaunchConfig {
                    grid: (rows.div_ceil(4 / wpr) as u32, batch.div_ceil(nb) as u32, 1),
                    block: (128, 1, 1),
                    shared_mem: 0,
                };
                let params = |m: &GpuBuffer<u8>| MmvqParams {
                    w: m.ptr(),
                    xq: xq.ptr(),
                    xds: xq.ptr() + total as u64,
                    x: 0,
                    bias: 0,
                    y: y.ptr(),
                    row_bytes: rb as u64,
                    rows: rows as u32,
                    cols: cols as u32,
                    n: batch as u32,
                    y_stride: rows as u32,
                    warps_per_row: wpr as u32,
                    groups: 0,
                };
                // Results on the first matrix, for the checks.
                let mut outs = Vec::new();
                let checked = [1, 2, 3, 4, 5, 8];
                for b in checked {
                    let kb = dev
                        .kernel(src, &format!("mmvq{}_{suffix}", kernel_nb(b)))
                        .unwrap();
                    dev.memset(&y, 0xFF).unwrap();
                    let mut p = params(&mats[0]);
                    p.n = b as u32;
                    let c = LaunchConfig {
                        grid: (cfg.grid.0, 1, 1),
                        ..cfg
                    };
                    unsafe { dev.launch_params(&kb, c, &p).unwrap() };
                    outs.push(dev.download(&y).unwrap()[..b * rows].to_vec());
                }
                let mut invariant = true;
                for (bi, o) in outs.iter().enumerate() {
                    for r in 0..checked[bi] {
                        let a = &o[r * rows..(r + 1) * rows];
                        let want = &outs[5][r * rows..(r + 1) * rows];
                        if a.iter().zip(want).any(|(u, v)| u.to_bits() != v.to_bits()) {
                            invariant = false;
                        }
                    }
                }
                let got = match checked.iter().position(|&b| b == batch) {
                    Some(i) => outs[i].clone(),
                    None => panic!("MV_BATCH {batch}: one of {checked:?}"),
                };
                assert!(
                    got.iter().all(|v| v.is_finite()),
                    "{vname} {label}: non-finite"
                );
                let err = match &base {
                    None => {
                        base = Some(got);
                        0.0
                    }
                    Some(b) => {
                        let want: Vec<f64> = b.iter().map(|&v| v as f64).collect();
                        gpu_util::rel_err(&got, &want)
                    }
                };
                let run = || {
                    for m in &mats {
                        let p = params(m);
                        unsafe { dev.launch_params(&k, cfg, &p).unwrap() };
                    }
                };
                run();
                dev.begin_capture().unwrap();
                run();
                let g = dev.end_capture().unwrap();
                g.launch().unwrap();
                dev.synchronize().unwrap();
                let mut times = Vec::new();
                for _ in 0..7 {
                    let t0 = Instant::now();
                    for _ in 0..10 {
                        g.launch().unwrap();
                    }
                    dev.synchronize().unwrap();
                    times.push(t0.elapsed().as_secs_f64() / 10.0 / count as f64);
                }
                times.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let t = times[times.len() / 2];
                let line = format!(
                    "{label} b{batch} {vname:>8} (wpr {wpr}): {:7.2} us {:5.0} GB/s (min {:7.2})  err {err:.1e}  invariant {}",
                    t * 1e6,
                    bytes as f64 / t / 1e9,
                    times[0] * 1e6,
                    if invariant { "yes" } else { "NO" }
                );
                println!("{line}");
                table.push(line);
            }
        }
    }
    println!("summary:");
    for l in table {
        println!("  {l}");
    }
}

/// Batch-invariant batched decoding: the products of one decode step of qwen2-0.5b Q8_0 (as the
/// GPU backend stacks them: q|k|v 1152x896, o 896x896, gate|up 9728x896, down 896x4864, output
/// 151936x896; 24 distinct matrices per layer shape, so L2 cannot serve repeats) over many
/// vectors, by kernel: `MM_VARIANTS` (comma-separated; default `quad,mma,m4,m2`): `quad` the quad
/// kernel (`mmvqt`), `v8` the 8-vector kernel, `mma` the tensor-core kernel as dispatched, `m4` /
/// `m2` / `d4` with 32 / 16 vectors per block / its dp4a twin at any batch, `s4` its 16-warp
/// blocks (sub-warps side by side). `MM_BATCH` (default
/// `8,64,128`). Each variant's outputs are compared bit for bit with the first variant's (all
/// must compute the same float operations).
#[test]
#[ignore]
fn invariant_batched_matvec() {
    let Some(dev) = gpu_util::device("invariant_batched_matvec") else {
        return;
    };
    let mut rng = gpu_util::rng("invariant_batched_matvec");
    println!("{}", dev.info());
    let shapes = [
        (1152usize, 896usize, 24usize),
        (896, 896, 24),
        (9728, 896, 24),
        (896, 4864, 24),
        (151_936, 896, 1),
    ];
    // `MM_SHAPES=2,4` keeps those shapes (indices), `MM_COUNT=1` at most that many matrices
    // per shape (for profiling one launch).
    let keep: Option<Vec<usize>> = std::env::var("MM_SHAPES").ok().map(|v| {
        v.split(',')
            .map(|i| i.parse().expect("MM_SHAPES"))
            .collect()
    });
    let most: usize = std::env::var("MM_COUNT")
        .ok()
        .map_or(usize::MAX, |v| v.parse().expect("MM_COUNT"));
    let shapes: Vec<(usize, usize, usize)> = shapes
        .iter()
        .enumerate()
        .filter(|(i, _)| keep.as_ref().is_none_or(|k| k.contains(i)))
        .map(|(_, &(r, c, n))| (r, c, n.min(most)))
        .collect();
    let ty = GgmlType::Q8_0;
    let mats: Vec<Vec<GpuBuffer<u8>>> = shapes
        .iter()
        .map(|&(rows, cols, count)| {
            (0..count)
                .map(|_| {
                    dev.upload(&random_weights(&mut rng, ty, rows, cols))
                        .unwrap()
                })
                .collect()
        })
        .collect();
    let variants = std::env::var("MM_VARIANTS").unwrap_or_else(|_| "quad,mma,m4,m2".into());
    let batches: Vec<usize> = std::env::var("MM_BATCH")
        .unwrap_or_else(|_| "8,64,128".into())
        .split(',')
        .map(|b| b.parse().expect("MM_BATCH"))
        .collect();
    let maxc = shapes.iter().map(|s| s.1).max().unwrap();
    let maxr = shapes.iter().map(|s| s.0).max().unwrap();
    let mut summary = Vec::new();
    for &batch in &batches {
        let x = dev
            .upload(&gpu_util::randn(&mut rng, batch * maxc, 1.0))
            .unwrap();
        let y = dev.alloc::<f32>(batch * maxr).unwrap();
        let mut reference: Vec<Option<Vec<f32>>> = vec![None; shapes.len()];
        for v in variants.split(',') {
            let d = Tuning::default();
            let t = match v {
                "quad" => Tuning { mma: 0, ..d },
                "v8" => Tuning {
                    mma: 0,
                    quad: false,
                    ..d
                },
                "mma" => d,
                "m4" => Tuning {
                    mma: 2,
                    mma_min_batch: 1,
                    ..d
                },
                "m2" => Tuning {
                    mma: 3,
                    mma_min_batch: 1,
                    ..d
                },
                "d4" => Tuning {
                    mma: 4,
                    mma_min_batch: 1,
                    ..d
                },
                "s4" => Tuning {
                    mma: 5,
                    mma_min_batch: 1,
                    ..d
                },
                "p2" => Tuning {
                    mma: 6,
                    mma_min_batch: 1,
                    ..d
                },
                "old" => Tuning { mma: 9, ..d },
                "r2" => Tuning {
                    mma: 10,
                    mma_min_batch: 1,
                    ..d
                },
                "p1" => Tuning {
                    mma: 7,
                    mma_min_batch: 1,
                    ..d
                },
                _ => panic!("unknown variant {v}"),
            };
            set_tuning(t);
            let mut step = 0.0;
            let mut line = format!("b{batch:<4} {v:>5}:");
            for (si, &(rows, cols, count)) in shapes.iter().enumerate() {
                let run = || {
                    for b in &mats[si] {
                        let w = QMatrix {
                            data: b,
                            offset: 0,
                            ty,
                            rows,
                            cols,
                        };
                        matvec(&dev, &w, &x, None, &y, batch).unwrap();
                    }
                };
                dev.memset(&y, 0xff).unwrap();
                run();
                dev.synchronize().unwrap();
                let got = dev.download(&y).unwrap()[..batch * rows].to_vec();
                let same = match &reference[si] {
                    None => {
                        reference[si] = Some(got);
                        "ref".to_string()
                    }
                    Some(r) => {
                        let bad = r
                            .iter()
                            .zip(&got)
                            .filter(|(a, b)| a.to_bits() != b.to_bits())
                            .count();
                        if bad == 0 {
                            "same".to_string()
                        } else {
                            format!("DIFF {bad}")
                        }
                    }
                };
                dev.begin_capture().unwrap();
                run();
                let g = dev.end_capture().unwrap();
                g.launch().unwrap();
                dev.synchronize().unwrap();
                let reps = 5;
                let t0 = Instant::now();
                for _ in 0..reps {
                    g.launch().unwrap();
                }
                dev.synchronize().unwrap();
                let per = t0.elapsed().as_secs_f64() / (reps * count) as f64;
                let per_step = per * if rows == 151_936 { 1.0 } else { 24.0 };
                step += per_step;
                let macs = (rows * cols * batch) as f64;
                line += &format!(
                    "  {rows}x{cols} {:8.1} us {:5.1} TMAC/s {same}",
                    per * 1e6,
                    macs / per / 1e12
                );
            }
            println!("{line}");
            summary.push(format!(
                "b{batch} {v}: products of one step {:.3} ms = {:.3} ms per 8 tokens",
                step * 1e3,
                step * 1e3 * 8.0 / batch as f64
            ));
        }
    }
    set_tuning(Tuning::default());
    println!("summary:");
    for l in summary {
        println!("  {l}");
    }
}
