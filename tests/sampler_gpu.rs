//! The GPU sampler against the reference distribution and against the CPU sampler.
//! Prints `skipped: no GPU (reason)` where there is none. Each test owns its device and sampler.

mod sampler_common;

use rocmforge::backend::gpu::GpuDevice;
use rocmforge::sampler::cpu::{self, PreparedRow};
use rocmforge::sampler::gpu::{DrawRow, GpuSampler};
use rocmforge::sampler::{SampleRow, SamplingParams};
use rocmforge::Error;
use sampler_common::*;

fn device(test: &str) -> Option<GpuDevice> {
    match GpuDevice::open_any() {
        Ok(d) => Some(d),
        Err(reason) => {
            println!("{test}: skipped: no GPU ({reason})");
            None
        }
    }
}

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

/// 100,000 GPU draws (ROWS rows of the same logits x launches), chi-square against the reference,
/// and each draw compared with the CPU sampler's token for the same (seed, seq_id, step).
/// Returns (agreeing draws, draws).
fn gpu_fit(dev: &GpuDevice, vocab: usize, scale: f32, p: SamplingParams) -> (u64, u64) {
    const ROWS: usize = 250;
    const LAUNCHES: u64 = 400;
    let lseed = fresh_seed("logits");
    let logits = normal_logits(vocab, scale, lseed);
    let expected = reference_distribution(&p, &logits);
    let prep = PreparedRow::new(&p, &logits, &[]).unwrap();
    let mut all = Vec::with_capacity(ROWS * vocab);
    for _ in 0..ROWS {
        all.extend_from_slice(&logits);
    }
    let buf = dev.upload(&all).unwrap();
    let mut s = GpuSampler::new(dev).unwrap();
    let mut counts = vec![0u64; vocab];
    let mut agree = 0u64;
    for step in 0..LAUNCHES {
        let rows: Vec<SampleRow> = (0..ROWS)
            .map(|r| SampleRow {
                params: &p,
                recent: &[],
                seq_id: r as u64,
                step,
            })
            .collect();
        let toks = s.sample(&buf, &rows, vocab, vocab).unwrap();
        for (r, &t) in toks.iter().enumerate() {
            counts[t as usize] += 1;
            agree += u64::from(prep.sample(r as u64, step) == t);
        }
    }
    let n = ROWS as u64 * LAUNCHES;
    let (stat, crit, df) = chi_square(&counts, &expected, n);
    println!(
        "GPU vocab {vocab} T {} k {} p {} min_p {}: chi2 {stat:.1} (df {df}, critical {crit:.1} at p={P_VALUE}), CPU agreement {agree}/{n}",
        p.temperature, p.top_k, p.top_p, p.min_p
    );
    assert!(
        stat < crit,
        "chi2 {stat} >= {crit} (df {df}), logits seed {lseed}"
    );
    (agree, n)
}

#[test]
fn gpu_fits_reference_and_agrees_with_cpu() {
    let Some(dev) = device("gpu_fits_reference_and_agrees_with_cpu") else {
        return;
    };
    let s = fresh_seed("sampler");
    let mut agree = (0u64, 0u64);
    for (vocab, scale, p) in [
        (32_000, 2.5, params(1.0, 0, 1.0, 0.0, s)),
        (32_000, 1.2, params(0.7, 40, 0.95, 0.05, s)),
        (151_936, 3.0, params(1.0, 100, 1.0, 0.0, s)),
        (151_936, 3.0, params(0.8, 0, 0.8, 0.0, s)),
        (151_936, 3.0, params(1.0, 0, 1.0, 0.02, s)),
        (262_144, 3.0, params(1.0, 500, 0.9, 0.01, s)),
        (262_144, 3.5, params(0.6, 20, 0.7, 0.0, s)),
    ] {
        let (a, n) = gpu_fit(&dev, vocab, scale, p);
        agree.0 += a;
        agree.1 += n;
    }
    let frac = agree.0 as f64 / agree.1 as f64;
    println!(
        "CPU/GPU agreement: {}/{} = {:.5}%",
        agree.0,
        agree.1,
        frac * 100.0
    );
    assert!(frac >= 0.999, "agreement {frac}");
}

/// Rows with mixed parameters (greedy, penalties, every filter) over many seeds: GPU tokens vs
/// `cpu::sample`, and the logits are unchanged after the call.
#[test]
fn gpu_matches_cpu_with_penalties_over_many_seeds() {
    let Some(dev) = device("gpu_matches_cpu_with_penalties_over_many_seeds") else {
        return;
    };
    let vocab = 151_936;
    let rows_n = 32;
    let base = fresh_seed("seeds");
    let mut s = GpuSampler::new(&dev).unwrap();
    let (mut agree, mut n) = (0u64, 0u64);
    for launch in 0..10u64 {
        let logits: Vec<f32> = (0..rows_n)
            .flat_map(|r| {
                normal_logits(
                    vocab,
                    2.0 + (r % 3) as f32,
                    base ^ (launch * 1000 + r as u64),
                )
            })
            .collect();
        let ps: Vec<SamplingParams> = (0..rows_n)
            .map(|r| SamplingParams {
                temperature: [0.0, 0.5, 1.0, 1.5][r % 4],
                top_k: [0, 1, 40, 1000][(r / 4) % 4],
                top_p: [1.0, 0.9, 0.5][r % 3],
                min_p: [0.0, 0.05][r % 2],
                repeat_penalty: [1.0, 1.1, 1.5][r % 3],
                presence_penalty: [0.0, 0.3][(r / 2) % 2],
                frequency_penalty: [0.0, 0.2, -0.1][(r / 3) % 3],
                penalty_last_n: 64,
                seed: base.wrapping_add(launch * 7919 + r as u64),
            })
            .collect();
        let recents: Vec<Vec<u32>> = (0..rows_n)
            .map(|r| {
                (0..(r * 5) as u32)
                    .map(|i| (i * 7919 + r as u32) % 300)
                    .collect()
            })
            .collect();
        let rows: Vec<SampleRow> = (0..rows_n)
            .map(|r| SampleRow {
                params: &ps[r],
                recent: &recents[r],
                seq_id: r as u64 * 3,
                step: launch,
            })
            .collect();
        let buf = dev.upload(&logits).unwrap();
        let toks = s.sample(&buf, &rows, vocab, vocab).unwrap();
        for (r, &t) in toks.iter().enumerate() {
            let want = cpu::sample(
                &ps[r],
                &logits[r * vocab..(r + 1) * vocab],
                &recents[r],
                r as u64 * 3,
                launch,
            )
            .unwrap();
            agree += u64::from(want == t);
            n += 1;
        }
        let back = dev.download(&buf).unwrap();
        assert!(
            back.iter()
                .zip(&logits)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "logits changed by the sampler"
        );
    }
    println!("CPU/GPU agreement with penalties: {agree}/{n}");
    assert!(agree as f64 >= 0.999 * n as f64 - 1.0, "{agree}/{n}");
}

#[test]
fn gpu_batch_composition_does_not_change_a_row() {
    let Some(dev) = device("gpu_batch_composition_does_not_change_a_row") else {
        return;
    };
    let vocab = 32_000;
    let mut s = GpuSampler::new(&dev).unwrap();
    let seed = fresh_seed("logits");
    let target = normal_logits(vocab, 2.0, seed);
    let p = params(1.0, 50, 0.9, 0.0, seed);
    let q = params(0.7, 0, 0.8, 0.0, seed ^ 1);
    for step in 0..20u64 {
        let alone = s
            .sample(
                &dev.upload(&target).unwrap(),
                &[SampleRow {
                    params: &p,
                    recent: &[],
                    seq_id: 5,
                    step,
                }],
                vocab,
                vocab,
            )
            .unwrap()[0];
        for (before, after) in [(1usize, 0usize), (3, 4), (0, 63)] {
            let mut all = Vec::new();
            let mut rows = Vec::new();
            for i in 0..before {
                all.extend(normal_logits(vocab, 1.0, seed + 10 + i as u64));
                rows.push(SampleRow {
                    params: &q,
                    recent: &[],
                    seq_id: 100 + i as u64,
                    step,
                });
            }
            all.extend_from_slice(&target);
            rows.push(SampleRow {
                params: &p,
                recent: &[],
                seq_id: 5,
                step,
            });
            for i in 0..after {
                all.extend(normal_logits(vocab, 1.0, seed + 200 + i as u64));
                rows.push(SampleRow {
                    params: &q,
                    recent: &[],
                    seq_id: 300 + i as u64,
                    step,
                });
            }
            let toks = s
                .sample(&dev.upload(&all).unwrap(), &rows, vocab, vocab)
                .unwrap();
            assert_eq!(
                toks[before], alone,
                "step {step}, {before} rows before, {after} after"
            );
        }
    }
}

#[test]
fn gpu_edge_cases_and_errors() {
    let Some(dev) = device("gpu_edge_cases_and_errors") else {
        return;
    };
    let vocab = 50_000;
    let mut s = GpuSampler::new(&dev).unwrap();
    let lg = normal_logits(vocab, 2.0, fresh_seed("logits"));
    let am = cpu::argmax(&lg).unwrap();
    let mut one = vec![0.0f32; vocab];
    one[12_345] = 1000.0;
    let mut nan = lg.clone();
    nan[777] = f32::NAN;
    let neg = vec![f32::NEG_INFINITY; vocab];
    let mut half = lg.clone();
    for l in half.iter_mut().step_by(2) {
        *l = f32::NEG_INFINITY;
    }
    let all = [lg.clone(), lg.clone(), one, nan, neg, half].concat();
    let buf = dev.upload(&all).unwrap();
    let k1 = params(1.0, 1, 1.0, 0.0, 3);
    let tiny = params(1.0, 0, 1e-6, 0.0, 3);
    let dflt = SamplingParams::default();
    let pf = params(1.0, 0, 0.95, 0.0, 9);
    for step in 0..50 {
        let rows = [
            SampleRow {
                params: &k1,
                recent: &[],
                seq_id: 0,
                step,
            },
            SampleRow {
                params: &tiny,
                recent: &[],
                seq_id: 1,
                step,
            },
            SampleRow {
                params: &dflt,
                recent: &[],
                seq_id: 2,
                step,
            },
            SampleRow {
                params: &dflt,
                recent: &[],
                seq_id: 3,
                step,
            },
            SampleRow {
                params: &dflt,
                recent: &[],
                seq_id: 4,
                step,
            },
            SampleRow {
                params: &pf,
                recent: &[],
                seq_id: 5,
                step,
            },
        ];
        let r = s.sample_each(&buf, &rows, vocab, vocab).unwrap();
        assert_eq!(r[0].as_ref().unwrap(), &am);
        assert_eq!(r[1].as_ref().unwrap(), &am);
        assert_eq!(r[2].as_ref().unwrap(), &12_345);
        assert!(matches!(r[3], Err(Error::Sampler(_))), "{:?}", r[3]);
        assert!(matches!(r[4], Err(Error::Sampler(_))), "{:?}", r[4]);
        assert_eq!(r[5].as_ref().unwrap() % 2, 1, "drew a -inf token");
    }
    // Shape errors are errors, not launches.
    let rows = [SampleRow {
        params: &dflt,
        recent: &[],
        seq_id: 0,
        step: 0,
    }; 7];
    assert!(s.sample(&buf, &rows, vocab, vocab).is_err());
    let bad = [SampleRow {
        params: &dflt,
        recent: &[vocab as u32],
        seq_id: 0,
        step: 0,
    }];
    let pen = SamplingParams {
        repeat_penalty: 1.2,
        ..dflt
    };
    let bad_pen = [SampleRow {
        params: &pen,
        ..bad[0]
    }];
    assert!(s.sample(&buf, &bad_pen, vocab, vocab).is_err());
}

#[test]
fn gpu_single_filter_entries_equal_the_fused_sampler() {
    let Some(dev) = device("gpu_single_filter_entries_equal_the_fused_sampler") else {
        return;
    };
    let vocab = 32_000;
    let mut s = GpuSampler::new(&dev).unwrap();
    let seed = fresh_seed("logits");
    let rows_n = 16;
    let logits: Vec<f32> = (0..rows_n)
        .flat_map(|r| normal_logits(vocab, 2.5, seed + r))
        .collect();
    let buf = dev.upload(&logits).unwrap();
    let draws: Vec<DrawRow> = (0..rows_n)
        .map(|r| DrawRow {
            temperature: 0.9,
            seed: seed ^ r,
            seq_id: r,
            step: 4,
        })
        .collect();
    let ks: Vec<u32> = (0..rows_n as u32).map(|r| 1 + r * 10).collect();
    let ps: Vec<f32> = (0..rows_n).map(|r| 0.3 + 0.04 * r as f32).collect();
    let ms: Vec<f32> = (0..rows_n).map(|r| 0.01 * r as f32).collect();
    let got = [
        s.topk(&buf, &draws, &ks, vocab).unwrap(),
        s.topp(&buf, &draws, &ps, vocab).unwrap(),
        s.topk_topp(&buf, &draws, &ks, &ps, vocab).unwrap(),
        s.minp(&buf, &draws, &ms, vocab).unwrap(),
    ];
    for (r, d) in draws.iter().enumerate() {
        let row = &logits[r * vocab..(r + 1) * vocab];
        let base = params(d.temperature, 0, 1.0, 0.0, d.seed);
        let want = [
            SamplingParams {
                top_k: ks[r],
                ..base
            },
            SamplingParams {
                top_p: ps[r],
                ..base
            },
            SamplingParams {
                top_k: ks[r],
                top_p: ps[r],
                ..base
            },
            SamplingParams {
                min_p: ms[r],
                ..base
            },
        ];
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                g[r],
                cpu::sample(&w, row, &[], d.seq_id, d.step).unwrap(),
                "row {r} {w:?}"
            );
        }
    }
    assert!(s.topk(&buf, &draws, &ks[..3], vocab).is_err());
}

/// Greedy rows against the CPU's argmax where the scan's vector path ends: rows of 50,001
/// logits one after the other (every row but the first starts off a 16-byte boundary, so both
/// the float4 and the scalar scan run), a tie (the first index wins), the maximum in the last
/// element, and a NaN in the last element (an error, as anywhere else).
#[test]
fn gpu_greedy_ties_tails_and_unaligned_rows() {
    let Some(dev) = device("gpu_greedy_ties_tails_and_unaligned_rows") else {
        return;
    };
    let vocab = 50_001;
    let mut s = GpuSampler::new(&dev).unwrap();
    let seed = fresh_seed("greedy");
    let mut rows_l: Vec<Vec<f32>> = (0..6)
        .map(|i| normal_logits(vocab, 2.0, seed + i))
        .collect();
    // rows 0 and 1: a tie between an early and a late index
    for r in [0, 1] {
        rows_l[r][49_000] = 100.0;
        rows_l[r][1_234 + r] = 100.0;
    }
    // rows 2 and 3: the maximum in the last element
    rows_l[2][vocab - 1] = 100.0;
    rows_l[3][vocab - 1] = 100.0;
    // row 5: NaN in the last element
    rows_l[5][vocab - 1] = f32::NAN;
    let all: Vec<f32> = rows_l.concat();
    let buf = dev.upload(&all).unwrap();
    let greedy = params(0.0, 0, 1.0, 0.0, 1);
    let rows: Vec<SampleRow> = (0..6)
        .map(|i| SampleRow {
            params: &greedy,
            recent: &[],
            seq_id: i,
            step: 0,
        })
        .collect();
    let r = s.sample_each(&buf, &rows, vocab, vocab).unwrap();
    assert_eq!(r[0].as_ref().unwrap(), &1_234);
    assert_eq!(r[1].as_ref().unwrap(), &1_235);
    assert_eq!(r[2].as_ref().unwrap(), &(vocab as u32 - 1));
    assert_eq!(r[3].as_ref().unwrap(), &(vocab as u32 - 1));
    assert_eq!(r[4].as_ref().unwrap(), &cpu::argmax(&rows_l[4]).unwrap());
    assert!(matches!(r[5], Err(Error::Sampler(_))), "{:?}", r[5]);
}
