//! Quantized matmul throughput: GB/s of weights read per second for the shapes that dominate
//! Gemma 3 270M Q4_K_M decode ([262144 x 640] Q8_0 output, [2048 x 640] Q5_0 ffn_gate/up,
//! [640 x 2048] Q4_K / Q6_K ffn_down), on 1 and 2 threads, decode (1 token) and prefill (256).
//!
//! Run: `cargo bench --bench quant` (filters: `cargo bench --bench quant -- Q8_0`, `-- gemma`).

use std::time::{Duration, Instant};

use rocmforge::quant::{matmul, GgmlType};

/// Offsets of the f16 scale fields in one block.
fn scale_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q6K => &[208],
        _ => &[],
    }
}

/// Pseudo-random weights with small finite scales (xorshift; contents do not affect speed).
fn weights(ty: GgmlType, n_rows: usize, n_cols: usize) -> Vec<u8> {
    let rb = ty.row_bytes(n_cols as u64).unwrap() as usize;
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut w: Vec<u8> = (0..n_rows * rb)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect();
    if ty == GgmlType::F16 {
        for h in w.chunks_mut(2) {
            h[1] &= 0x3b; // finite, |x| < 1
        }
    }
    for b in w.chunks_mut(ty.block_bytes()) {
        for &o in scale_fields(ty) {
            b[o..o + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
    }
    w
}

/// This thread's CPU time in ns (Linux schedstat), to see through a loaded machine.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn bench(ty: GgmlType, n_rows: usize, n_cols: usize, n_tok: usize, threads: usize) {
    let w = weights(ty, n_rows, n_cols);
    let x: Vec<f32> = (0..n_tok * n_cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut out = vec![0f32; n_tok * n_rows];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        matmul(ty, &w, n_rows, n_cols, &x, &mut out).unwrap();
        let mut iters = 0u32;
        let start = Instant::now();
        let mut best = Duration::MAX;
        let mut cpu_total = Some(0u64);
        while start.elapsed() < Duration::from_millis(1500) || iters < 3 {
            let c = thread_cpu_ns();
            let t = Instant::now();
            matmul(ty, &w, n_rows, n_cols, &x, &mut out).unwrap();
            best = best.min(t.elapsed());
            cpu_total = match (cpu_total, c, thread_cpu_ns()) {
                (Some(t), Some(c0), Some(c1)) => Some(t + (c1 - c0)),
                _ => None,
            };
            iters += 1;
        }
        // One thread, long runs: the work runs on this pool thread, so its mean CPU time is the
        // kernel's time even when other processes take the core away (schedstat is updated per
        // tick, so only runs of several ms are measured this way). Otherwise the best wall time.
        let mean_cpu = cpu_total.map(|t| t as f64 * 1e-9 / iters as f64);
        let use_cpu = threads == 1 && best.as_secs_f64() > 0.004 && mean_cpu.is_some();
        let secs = if use_cpu { mean_cpu.unwrap_or(0.0) } else { best.as_secs_f64() };
        let gbs = w.len() as f64 / secs / 1e9;
        let gmacs = (n_rows * n_cols * n_tok) as f64 / secs / 1e9;
        println!(
            "{:<5} [{n_rows:>6} x {n_cols:>4}] n_tok {n_tok:>3} threads {threads}: {:>8.3} ms {}  {gbs:>6.2} GB/s weights  {gmacs:>7.2} GMAC/s  (best of {iters}; wall {:.3} ms)",
            ty.name(),
            secs * 1e3,
            if use_cpu { "cpu " } else { "wall" },
            best.as_secs_f64() * 1e3
        );
    });
    std::hint::black_box(&out);
}

/// Every matmul of one Gemma 3 270M Q4_K_M decode step (types as in the real file: per layer
/// q/k/v Q5_0 (v Q8_0 in half the layers), o Q4_K, gate/up Q5_0, down Q4_K or Q6_K; then the
/// tied Q8_0 output [262144 x 640]), with distinct weights per layer so nothing stays cached.
/// Prints ms per token and the tokens/s the matmuls alone would allow.
fn gemma_decode(threads: usize) {
    let layer = |l: usize| -> Vec<(GgmlType, usize, usize)> {
        vec![
            (GgmlType::Q5_0, 1024, 640),
            (GgmlType::Q5_0, 256, 640),
            (
                if l.is_multiple_of(2) {
                    GgmlType::Q8_0
                } else {
                    GgmlType::Q5_0
                },
                256,
                640,
            ),
            (GgmlType::Q4K, 640, 1024),
            (GgmlType::Q5_0, 2048, 640),
            (GgmlType::Q5_0, 2048, 640),
            (
                if l.is_multiple_of(2) {
                    GgmlType::Q6K
                } else {
                    GgmlType::Q4K
                },
                640,
                2048,
            ),
        ]
    };
    let mut mats: Vec<(GgmlType, usize, usize, Vec<u8>)> = Vec::new();
    for l in 0..18 {
        for (ty, r, c) in layer(l) {
            mats.push((ty, r, c, weights(ty, r, c)));
        }
    }
    mats.push((
        GgmlType::Q8_0,
        262_144,
        640,
        weights(GgmlType::Q8_0, 262_144, 640),
    ));
    let bytes: usize = mats.iter().map(|m| m.3.len()).sum();
    let x: Vec<f32> = (0..2048)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut out = vec![0f32; 262_144];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let step = |out: &mut [f32]| {
            for (ty, r, c, w) in &mats {
                matmul(*ty, w, *r, *c, &x[..*c], &mut out[..*r]).unwrap();
            }
        };
        step(&mut out);
        let mut times = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) || times.len() < 5 {
            let t = Instant::now();
            step(&mut out);
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let (best, median) = (times[0], times[times.len() / 2]);
        println!(
            "gemma3-270m decode matmuls, threads {threads}: best {:.2} ms ({:.1} tok/s, {:.2} GB/s), median {:.2} ms ({:.1} tok/s); {:.1} MB of weights per token",
            best * 1e3,
            1.0 / best,
            bytes as f64 / best / 1e9,
            median * 1e3,
            1.0 / median,
            bytes as f64 / 1e6
        );
    });
    std::hint::black_box(&out);
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let cases: &[(GgmlType, usize, usize, usize)] = &[
        (GgmlType::Q8_0, 262_144, 640, 1),
        (GgmlType::Q5_0, 2048, 640, 1),
        (GgmlType::Q8_0, 2048, 640, 1),
        (GgmlType::Q4K, 640, 2048, 1),
        (GgmlType::Q6K, 640, 2048, 1),
        (GgmlType::F16, 2048, 640, 1),
        (GgmlType::F32, 2048, 640, 1),
        (GgmlType::F32, 65_536, 640, 1),
        (GgmlType::Q5_0, 2048, 640, 256),
        (GgmlType::Q4K, 640, 2048, 256),
        (GgmlType::Q8_0, 2048, 640, 256),
        (GgmlType::Q8_0, 262_144, 640, 4),
    ];
    if filter.is_empty() || filter.iter().any(|f| f == "gemma") {
        for threads in [1, 2] {
            gemma_decode(threads);
        }
        if !filter.is_empty() {
            return;
        }
    }
    for &(ty, r, c, t) in cases {
        let label = format!("{} {r}x{c} {t}", ty.name());
        if !filter.is_empty() && !filter.iter().any(|f| label.contains(f.as_str())) {
            continue;
        }
        for threads in [1, 2] {
            bench(ty, r, c, t, threads);
        }
    }
}
