//! GPU sampler vs CPU sampler per decoding step (vocabulary 151,936; batch 1, 8, 64, 256).
//! GPU: parameter upload + one launch + token read-back. CPU: logits copied device -> host +
//! `cpu::sample_batch` (rayon over rows). Without a GPU only the CPU side runs (logits on host).
//! Run: `cargo bench --bench sampler` (set SAMPLER_BENCH_ITERS to change the iteration count).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rocmforge::backend::gpu::GpuDevice;
use rocmforge::sampler::gpu::{GpuRowParams, GpuSampler};
use rocmforge::sampler::{cpu, SampleRow, SamplingParams};

const VOCAB: usize = 151_936;

fn main() {
    let iters: usize = std::env::var("SAMPLER_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dev = match GpuDevice::open_any() {
        Ok(d) => {
            println!("device: {}", d.info());
            Some(d)
        }
        Err(e) => {
            println!("skipped GPU side: no GPU ({e})");
            None
        }
    };
    println!("CPU threads: {}", rayon::current_num_threads());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let configs = [
        (
            "default (T 0.8, k 40, p 0.95, min_p 0.05)",
            SamplingParams::default(),
        ),
        (
            "top-p only (T 1.0, p 0.9)",
            SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 0.9,
                min_p: 0.0,
                ..Default::default()
            },
        ),
    ];
    println!(
        "| params | batch | GPU ms/step | GPU kernel ms | CPU ms/step (copy + sample) | speed-up |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, p) in configs {
        for batch in [1usize, 8, 64, 256] {
            // Logits like a model's: N(0, 3^2), fresh per batch size.
            let logits: Vec<f32> = (0..batch * VOCAB)
                .map(|_| {
                    let u1: f64 = rng.gen_range(1e-300..1.0);
                    let u2: f64 = rng.gen();
                    (3.0 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
                })
                .collect();
            let params: Vec<SamplingParams> = (0..batch)
                .map(|i| SamplingParams {
                    seed: i as u64,
                    ..p
                })
                .collect();
            let recent: Vec<Vec<u32>> = (0..batch).map(|i| vec![i as u32; 16]).collect();
            let rows = |step: u64| -> Vec<SampleRow> {
                (0..batch)
                    .map(|i| SampleRow {
                        params: &params[i],
                        recent: &recent[i],
                        seq_id: i as u64,
                        step,
                    })
                    .collect()
            };
            let (gpu_ms, cpu_ms) = match &dev {
                Some(dev) => {
                    let buf = dev.upload(&logits).expect("upload");
                    let mut s = GpuSampler::new(dev).expect("compile");
                    for step in 0..3 {
                        s.sample(&buf, &rows(step), VOCAB, VOCAB)
                            .expect("gpu sample");
                    }
                    let t = Instant::now();
                    for step in 0..iters as u64 {
                        s.sample(&buf, &rows(step), VOCAB, VOCAB)
                            .expect("gpu sample");
                    }
                    let g = t.elapsed().as_secs_f64() * 1e3 / iters as f64;
                    // The kernel alone: parameters already on the device, no read-back.
                    let gp: Vec<GpuRowParams> = (0..batch)
                        .map(|i| GpuRowParams {
                            temperature: p.temperature,
                            top_k: p.top_k,
                            top_p: p.top_p,
                            min_p: p.min_p,
                            repeat_penalty: 1.0,
                            seed: i as u64,
                            seq_id: i as u64,
                            ..Default::default()
                        })
                        .collect();
                    s.launch(&buf, &gp, &[], VOCAB, VOCAB).expect("launch");
                    dev.synchronize().expect("sync");
                    let t = Instant::now();
                    for _ in 0..iters {
                        s.launch(&buf, &gp, &[], VOCAB, VOCAB).expect("launch");
                    }
                    dev.synchronize().expect("sync");
                    let k = t.elapsed().as_secs_f64() * 1e3 / iters as f64;
                    let t = Instant::now();
                    for step in 0..iters as u64 {
                        let host = dev.download(&buf).expect("download");
                        cpu::sample_batch(&rows(step), &host, VOCAB).expect("cpu sample");
                    }
                    (Some((g, k)), t.elapsed().as_secs_f64() * 1e3 / iters as f64)
                }
                None => {
                    let t = Instant::now();
                    for step in 0..iters as u64 {
                        cpu::sample_batch(&rows(step), &logits, VOCAB).expect("cpu sample");
                    }
                    (None, t.elapsed().as_secs_f64() * 1e3 / iters as f64)
                }
            };
            match gpu_ms {
                Some((g, k)) => println!(
                    "| {name} | {batch} | {g:.3} | {k:.3} | {cpu_ms:.3} | {:.1}x |",
                    cpu_ms / g
                ),
                None => println!("| {name} | {batch} | - | - | {cpu_ms:.3} | - |"),
            }
        }
    }
}
