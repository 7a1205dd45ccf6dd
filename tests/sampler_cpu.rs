//! Statistical and edge-case tests of the CPU sampler against an independent sort-based reference.

mod sampler_common;

use rocmforge::sampler::cpu::{self, PreparedRow};
use rocmforge::sampler::{SampleRow, SamplingParams};
use rocmforge::Error;
use sampler_common::*;

const DRAWS: u64 = 100_000;

fn params(temperature: f32, top_k: u32, top_p: f32, min_p: f32, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
        min_p,
        seed,
        ..Default::default()
    }
}

/// 100,000 draws (steps 0..n of one sequence) against the reference distribution.
fn check_fit(vocab: usize, scale: f32, p: SamplingParams) {
    let lseed = fresh_seed("logits");
    let logits = normal_logits(vocab, scale, lseed);
    let expected = reference_distribution(&p, &logits);
    let kept = expected.iter().filter(|&&e| e > 0.0).count();
    let row = PreparedRow::new(&p, &logits, &[]).unwrap();
    let seq: u64 = rand::random();
    let mut counts = vec![0u64; vocab];
    for step in 0..DRAWS {
        counts[row.sample(seq, step) as usize] += 1;
    }
    // The prepared row is the fast path of `cpu::sample`: check they agree on some draws.
    for step in 0..200 {
        assert_eq!(
            cpu::sample(&p, &logits, &[], seq, step).unwrap(),
            row.sample(seq, step)
        );
    }
    let (stat, crit, df) = chi_square(&counts, &expected, DRAWS);
    println!("vocab {vocab} {p:?}: kept {kept}, chi2 {stat:.1} (df {df}, critical {crit:.1} at p={P_VALUE})");
    assert!(
        stat < crit,
        "chi2 {stat} >= {crit} (df {df}) for vocab {vocab} {p:?}, logits seed {lseed}"
    );
}

#[test]
fn fit_vocab_32000() {
    let s = fresh_seed("sampler");
    check_fit(32_000, 2.5, params(1.0, 0, 1.0, 0.0, s));
    check_fit(32_000, 1.2, params(0.7, 40, 0.95, 0.05, s));
    check_fit(32_000, 3.0, params(1.5, 0, 0.6, 0.0, s));
}

#[test]
fn fit_vocab_151936() {
    let s = fresh_seed("sampler");
    check_fit(151_936, 3.0, params(1.0, 100, 1.0, 0.0, s));
    check_fit(151_936, 3.0, params(0.8, 0, 0.8, 0.0, s));
    check_fit(151_936, 3.0, params(1.0, 0, 1.0, 0.02, s));
}

#[test]
fn fit_vocab_262144() {
    let s = fresh_seed("sampler");
    check_fit(262_144, 3.0, params(1.2, 0, 1.0, 0.01, s));
    check_fit(262_144, 3.0, params(1.0, 500, 0.9, 0.01, s));
    check_fit(262_144, 3.5, params(0.6, 20, 0.7, 0.0, s));
}

fn draws(p: &SamplingParams, logits: &[f32], n: u64) -> Vec<u32> {
    let row = PreparedRow::new(p, logits, &[]).unwrap();
    (0..n).map(|s| row.sample(11, s)).collect()
}

#[test]
fn k_one_and_tiny_p_are_argmax() {
    let logits = normal_logits(32_000, 2.0, fresh_seed("logits"));
    let am = cpu::argmax(&logits).unwrap();
    for p in [
        params(1.0, 1, 1.0, 0.0, 3),
        params(1.0, 0, 1e-6, 0.0, 3),
        params(5.0, 1, 0.5, 0.0, 9),
    ] {
        assert!(draws(&p, &logits, 2000).iter().all(|&t| t == am), "{p:?}");
        assert_eq!(cpu::sample(&p, &logits, &[], 5, 5).unwrap(), am);
    }
}

#[test]
fn k_at_least_vocab_and_p_one_are_off() {
    let logits = normal_logits(1000, 1.0, fresh_seed("logits"));
    let off = draws(&params(1.0, 0, 1.0, 0.0, 77), &logits, 3000);
    assert_eq!(off, draws(&params(1.0, 1000, 1.0, 0.0, 77), &logits, 3000));
    assert_eq!(off, draws(&params(1.0, 5000, 1.0, 0.0, 77), &logits, 3000));
    // The unfiltered draws also fit the plain softmax.
    let p = params(1.0, 0, 1.0, 0.0, 77);
    let mut counts = vec![0u64; 1000];
    for t in draws(&p, &logits, DRAWS) {
        counts[t as usize] += 1;
    }
    let (stat, crit, df) = chi_square(&counts, &reference_distribution(&p, &logits), DRAWS);
    assert!(stat < crit, "chi2 {stat} >= {crit} (df {df})");
}

#[test]
fn ties_at_the_boundary_are_kept_together() {
    // Token 0 largest, tokens 1..=3 tied; top-k 2 keeps all four (fewer than 2 strictly larger).
    let mut logits = vec![-5.0f32; 100];
    logits[0] = 3.0;
    for l in &mut logits[1..4] {
        *l = 2.0;
    }
    let p = params(1.0, 2, 1.0, 0.0, fresh_seed("sampler"));
    let expected = reference_distribution(&p, &logits);
    assert_eq!(expected.iter().filter(|&&e| e > 0.0).count(), 4);
    let mut counts = vec![0u64; 100];
    for t in draws(&p, &logits, DRAWS) {
        counts[t as usize] += 1;
    }
    let (stat, crit, _) = chi_square(&counts, &expected, DRAWS);
    assert!(stat < crit, "chi2 {stat} >= {crit}: {:?}", &counts[..4]);
    // Top-p at a tie: the tied group is in or out as a whole.
    let p = params(1.0, 0, 0.5, 0.0, 5);
    let expected = reference_distribution(&p, &logits);
    let mut counts = vec![0u64; 100];
    for t in draws(&p, &logits, 20_000) {
        counts[t as usize] += 1;
    }
    let (stat, crit, _) = chi_square(&counts, &expected, 20_000);
    assert!(stat < crit, "chi2 {stat} >= {crit}");
}

#[test]
fn one_token_with_all_the_mass_and_neg_inf_logits() {
    let mut logits = vec![0.0f32; 50_000];
    logits[12_345] = 1000.0;
    for p in [params(1.0, 0, 1.0, 0.0, 1), SamplingParams::default()] {
        assert!(draws(&p, &logits, 1000).iter().all(|&t| t == 12_345));
        assert_eq!(cpu::sample(&p, &logits, &[], 0, 0).unwrap(), 12_345);
    }
    // Half the vocabulary at -inf: never drawn, the rest fits the reference.
    let mut logits = normal_logits(2000, 1.0, fresh_seed("logits"));
    for l in logits.iter_mut().step_by(2) {
        *l = f32::NEG_INFINITY;
    }
    let p = params(1.0, 0, 0.95, 0.0, fresh_seed("sampler"));
    let mut counts = vec![0u64; 2000];
    for t in draws(&p, &logits, DRAWS) {
        assert!(t % 2 == 1, "drew -inf token {t}");
        counts[t as usize] += 1;
    }
    let (stat, crit, _) = chi_square(&counts, &reference_distribution(&p, &logits), DRAWS);
    assert!(stat < crit, "chi2 {stat} >= {crit}");
}

#[test]
fn nan_is_an_error_not_a_token() {
    let mut logits = normal_logits(1000, 1.0, 1);
    logits[999] = f32::NAN;
    for p in [SamplingParams::default(), SamplingParams::greedy()] {
        let e = cpu::sample(&p, &logits, &[], 0, 0).unwrap_err();
        assert!(matches!(e, Error::Sampler(_)), "{e}");
        assert!(PreparedRow::new(&p, &logits, &[]).is_err());
    }
}

#[test]
fn penalties_shift_the_distribution_as_the_reference() {
    let vocab = 500;
    let logits = normal_logits(vocab, 1.0, fresh_seed("logits"));
    let p = SamplingParams {
        repeat_penalty: 1.3,
        presence_penalty: 0.4,
        frequency_penalty: 0.2,
        penalty_last_n: 8,
        ..params(1.0, 0, 1.0, 0.0, fresh_seed("sampler"))
    };
    let recent = [7u32, 3, 3, 100, 7, 7, 42, 499, 1, 2];
    // Reference: penalties applied by hand on the window (the last 8 tokens).
    let mut pen = logits.clone();
    for (tok, count) in [
        (3u32, 2u32),
        (100, 1),
        (7, 2),
        (42, 1),
        (499, 1),
        (1, 1),
        (2, 1),
    ] {
        let l = pen[tok as usize];
        let l = if l <= 0.0 { l * 1.3 } else { l / 1.3 };
        pen[tok as usize] = l - (count as f32 * 0.2 + 0.4);
    }
    let expected = reference_distribution(&p, &pen);
    let row = PreparedRow::new(&p, &logits, &recent).unwrap();
    let mut counts = vec![0u64; vocab];
    for s in 0..DRAWS {
        counts[row.sample(0, s) as usize] += 1;
    }
    let (stat, crit, _) = chi_square(&counts, &expected, DRAWS);
    assert!(stat < crit, "chi2 {stat} >= {crit}");
    for s in 0..50 {
        assert_eq!(
            cpu::sample(&p, &logits, &recent, 0, s).unwrap(),
            row.sample(0, s)
        );
    }
}

#[test]
fn same_seed_same_tokens_other_seed_other_tokens() {
    let logits = normal_logits(32_000, 2.0, fresh_seed("logits"));
    let p = params(1.0, 0, 1.0, 0.0, 1234);
    let a: Vec<u32> = (0..200)
        .map(|s| cpu::sample(&p, &logits, &[], 9, s).unwrap())
        .collect();
    let b: Vec<u32> = (0..200)
        .map(|s| cpu::sample(&p, &logits, &[], 9, s).unwrap())
        .collect();
    assert_eq!(a, b);
    let q = params(1.0, 0, 1.0, 0.0, 1235);
    let c: Vec<u32> = (0..200)
        .map(|s| cpu::sample(&q, &logits, &[], 9, s).unwrap())
        .collect();
    assert!(a.iter().zip(&c).filter(|(x, y)| x == y).count() < 100);
}

#[test]
fn sequences_are_independent() {
    // Uniform over 8 tokens: the pair (token of seq 0, token of seq 1) at the same step and seed
    // must be uniform over the 64 cells.
    let logits = vec![0.0f32; 8];
    let p = params(1.0, 0, 1.0, 0.0, fresh_seed("sampler"));
    let row = PreparedRow::new(&p, &logits, &[]).unwrap();
    let mut counts = vec![0u64; 64];
    for s in 0..DRAWS {
        counts[(row.sample(0, s) * 8 + row.sample(1, s)) as usize] += 1;
    }
    let (stat, crit, df) = chi_square(&counts, &[1.0 / 64.0; 64], DRAWS);
    assert_eq!(df, 63);
    assert!(stat < crit, "chi2 {stat} >= {crit}");
}

#[test]
fn batch_composition_does_not_change_a_row() {
    let vocab = 32_000;
    let rows_logits: Vec<Vec<f32>> = (0..4).map(|i| normal_logits(vocab, 2.0, 100 + i)).collect();
    let ps: Vec<SamplingParams> = (0..4)
        .map(|i| params(1.0, 50, 0.9, 0.0, 1000 + i))
        .collect();
    let recent: [&[u32]; 4] = [&[], &[1, 2], &[5], &[]];
    let solo = cpu::sample_batch(
        &[SampleRow {
            params: &ps[2],
            recent: recent[2],
            seq_id: 2,
            step: 17,
        }],
        &rows_logits[2],
        vocab,
    )
    .unwrap();
    let rows: Vec<SampleRow> = (0..4)
        .map(|i| SampleRow {
            params: &ps[i],
            recent: recent[i],
            seq_id: i as u64,
            step: 17,
        })
        .collect();
    let all = cpu::sample_batch(&rows, &rows_logits.concat(), vocab).unwrap();
    assert_eq!(all[2], solo[0]);
    assert!(cpu::sample_batch(&rows, &rows_logits[0], vocab).is_err());
}
