//! Shared helpers of the GPU tests: open a device or say why not, random inputs, comparisons.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rocmforge::backend::gpu::GpuDevice;

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
