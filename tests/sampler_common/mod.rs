//! Shared by the sampler tests: an independent, sort-based reference of the filtered distribution
//! and a chi-square goodness-of-fit check.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rocmforge::sampler::SamplingParams;

/// Upper-tail p-value used by every chi-square test: a correct sampler fails 1 run in 10,000.
pub const P_VALUE: f64 = 1e-4;

/// Logits `scale * N(0, 1)` from a fresh seed (printed so a failure can be replayed).
pub fn normal_logits(vocab: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..vocab)
        .map(|_| {
            let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
            let u2: f64 = rng.gen();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * scale
        })
        .collect()
}

/// A fresh seed for a test, printed.
pub fn fresh_seed(what: &str) -> u64 {
    let s: u64 = rand::random();
    println!("{what}: seed {s}");
    s
}

/// The exact distribution the sampler must draw from, computed the plain way in f64: softmax with
/// temperature, sort descending, keep by value (ties together): top-k (fewer than k strictly
/// larger), top-p (strictly larger tokens hold less than p of the full mass), min-p
/// (p >= min_p * p_max); renormalize. Penalties are not applied here.
pub fn reference_distribution(params: &SamplingParams, logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let t = params.temperature as f64;
    let probs: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / t).exp())
        .collect();
    let z: f64 = probs.iter().sum();
    let probs: Vec<f64> = probs.iter().map(|p| p / z).collect();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| probs[b].partial_cmp(&probs[a]).unwrap());
    let pmax = probs[order[0]];
    let mut keep = vec![false; logits.len()];
    let mut above_count = 0usize; // tokens strictly larger than the current value
    let mut above_mass = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let v = probs[order[i]];
        let mut j = i;
        while j < order.len() && probs[order[j]] == v {
            j += 1;
        }
        let k_ok = params.top_k == 0 || above_count < params.top_k as usize;
        let p_ok = params.top_p >= 1.0 || above_mass < params.top_p as f64;
        let m_ok = params.min_p <= 0.0 || v >= params.min_p as f64 * pmax;
        if v > 0.0 && k_ok && p_ok && m_ok {
            for &o in &order[i..j] {
                keep[o] = true;
            }
        }
        above_count += j - i;
        above_mass += v * (j - i) as f64;
        i = j;
    }
    let kept: f64 = (0..logits.len())
        .filter(|&i| keep[i])
        .map(|i| probs[i])
        .sum();
    (0..logits.len())
        .map(|i| if keep[i] { probs[i] / kept } else { 0.0 })
        .collect()
}

/// Chi-square critical value for `df` degrees of freedom at upper tail [`P_VALUE`]
/// (Wilson-Hilferty; z = 3.7190 for 1e-4).
pub fn chi2_critical(df: usize) -> f64 {
    let df = df as f64;
    let z = 3.7190;
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Goodness of fit of `counts` (per token) to `expected` probabilities over `n` draws. Tokens of
/// zero probability must never be drawn; tokens with expected count < 5 are pooled (in order of
/// decreasing probability) into bins of expected count >= 5. Returns (statistic, critical, df).
pub fn chi_square(counts: &[u64], expected: &[f64], n: u64) -> (f64, f64, usize) {
    for (i, (&c, &e)) in counts.iter().zip(expected).enumerate() {
        assert!(
            e > 0.0 || c == 0,
            "token {i} drawn {c} times but has probability 0"
        );
    }
    let mut idx: Vec<usize> = (0..expected.len()).filter(|&i| expected[i] > 0.0).collect();
    idx.sort_by(|&a, &b| expected[b].partial_cmp(&expected[a]).unwrap());
    let nf = n as f64;
    let mut bins: Vec<(f64, f64)> = Vec::new(); // (observed, expected)
    let mut acc = (0.0, 0.0);
    for &i in &idx {
        acc.0 += counts[i] as f64;
        acc.1 += expected[i] * nf;
        if acc.1 >= 5.0 {
            bins.push(acc);
            acc = (0.0, 0.0);
        }
    }
    if acc.1 > 0.0 {
        match bins.last_mut() {
            Some(last) => {
                last.0 += acc.0;
                last.1 += acc.1;
            }
            None => bins.push(acc),
        }
    }
    let stat: f64 = bins.iter().map(|(o, e)| (o - e) * (o - e) / e).sum();
    let df = bins.len().saturating_sub(1).max(1);
    (stat, chi2_critical(df), df)
}
