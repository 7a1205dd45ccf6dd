//! Batch invariance on the GPU ([`GpuBackend::with_batch_invariance`]): a token's results must
//! not depend on what else is in its pass. Checked bit for bit (f32 `==`) at two levels:
//! - the quantized and float matrix-vector products, any batch against batch 1, every type;
//! - a whole model: one sequence run alone (prompt in one pass, then one token per pass) against
//!   the same sequence scheduled like a serving engine would, its prompt split in two chunks and
//!   batched with other sequences' prompt chunks and decode tokens.
//!
//! Its own test binary: the matvec tuning knobs other kernel tests vary are process-wide.

mod gpu_util;

use gpu_util::{randn, random_matrix};
use rand::Rng;
use rocmforge::backend::gpu::backend::GpuBackend;
use rocmforge::backend::gpu::kernels::GPU_TYPES;
use rocmforge::backend::gpu::ops::matvec::{self as mv, matvec};
use rocmforge::backend::gpu::ops::QMatrix;
use rocmforge::backend::gpu::GpuDevice;
use rocmforge::backend::Backend;
use rocmforge::model::{Batch, Model, SeqSlot};

fn run(dev: &GpuDevice, w: &QMatrix, x: &[f32], bias: &[f32], batch: usize) -> Vec<f32> {
    let xb = dev.upload(x).unwrap();
    let bb = dev.upload(bias).unwrap();
    let yb = dev.alloc::<f32>(batch * w.rows).unwrap();
    dev.memset(&yb, 0xff).unwrap();
    matvec(dev, w, &xb, Some(&bb), &yb, batch).unwrap();
    dev.download(&yb).unwrap()
}

/// Every row of a product over 1..=70 vectors (so 1, 4 and 8 vectors per block, one and many
/// vector groups, the quad kernel and, for Q8_0 on CUDA sm_80+, the tensor-core kernel with 16
/// and 32 vectors per block and its dp4a twin) equals the product of that vector alone, bit for
/// bit. (The model test beside this one may run while the knobs are switched: all kernels must
/// give the same bits, so it holds either way.)
#[test]
fn matvec_rows_do_not_depend_on_the_batch() {
    let Some(dev) = gpu_util::device("matvec_rows_do_not_depend_on_the_batch") else {
        return;
    };
    let mut rng = gpu_util::rng("matvec_rows_do_not_depend_on_the_batch");
    let default = mv::tuning();
    // `INV_TYPES=q8_0,q4_k` narrows the run (e.g. under compute-sanitizer).
    let only = std::env::var("INV_TYPES").ok();
    for ty in GPU_TYPES {
        let suffix = rocmforge::backend::gpu::kernels::type_suffix(ty).unwrap_or("?");
        if only
            .as_ref()
            .is_some_and(|o| !o.split(',').any(|s| s == suffix))
        {
            continue;
        }
        let be = ty.block_elems().max(32);
        // short rows (one warp per row), long rows (several warps per row), a ragged row block
        let mut shapes = vec![(67, 2 * be), (9, 11008 / be * be), (301, 1024.max(be))];
        if ty == rocmforge::quant::GgmlType::Q8_0 {
            shapes.push((77, 896)); // qwen2-0.5b's row length
        }
        for (rows, cols) in shapes {
            let (bytes, _) = random_matrix(&mut rng, ty, rows, cols);
            let wb = dev.upload(&bytes).unwrap();
            let w = QMatrix {
                data: &wb,
                offset: 0,
                ty,
                rows,
                cols,
            };
            let n = 70;
            let x = randn(&mut rng, n * cols, 1.0);
            let bias = randn(&mut rng, rows, 1.0);
            let alone: Vec<Vec<f32>> = (0..n)
                .map(|b| run(&dev, &w, &x[b * cols..(b + 1) * cols], &bias, 1))
                .collect();
            // (batch, quad kernel allowed, tensor-core kernel mode, its smallest batch): 5 and 8
            // take the 8-vector kernel, 13 and 70 the quad kernel or, with it off, several groups
            // of the 8-vector kernel; the tensor-core kernel (Q8_0) from 2 vectors, one partial
            // group or several: by shape (1), 32 (2) or 16 (3) vectors per block, its dp4a twin
            // (4), sub-warps side by side (5), the persistent x-stationary kernel with 64 (6) or
            // 32 (7) vectors per block, and with one block walking every row tile (8), by shape
            // without it (9), and with 32 rows per block (10)
            let mut cases = vec![
                (2, true, 0, 9),
                (3, true, 0, 9),
                (4, true, 0, 9),
                (5, true, 0, 9),
                (8, true, 0, 9),
                (13, true, 0, 9),
                (70, true, 0, 9),
                (70, false, 0, 9),
            ];
            if ty == rocmforge::quant::GgmlType::Q8_0 {
                cases.extend([
                    (2, true, 2, 2),
                    (8, true, 3, 2),
                    (8, true, 1, 1),
                    (9, true, 1, 9),
                    (13, true, 3, 9),
                    (33, true, 2, 9),
                    (70, true, 1, 9),
                    (70, true, 2, 9),
                    (70, true, 3, 9),
                    (70, true, 4, 9),
                    (13, true, 5, 9),
                    (33, true, 5, 9),
                    (70, true, 5, 9),
                    (2, true, 6, 2),
                    (9, true, 6, 9),
                    (70, true, 6, 9),
                    (33, true, 7, 9),
                    (70, true, 7, 9),
                    (13, true, 8, 9),
                    (70, true, 8, 9),
                    (70, true, 9, 9),
                    (13, true, 10, 9),
                    (70, true, 10, 9),
                ]);
            }
            for (batch, quad, mma, mma_min_batch) in cases {
                mv::set_tuning(mv::Tuning {
                    quad,
                    mma,
                    mma_min_batch,
                    ..default
                });
                let first = rng.gen_range(0..=n - batch);
                let got = run(
                    &dev,
                    &w,
                    &x[first * cols..(first + batch) * cols],
                    &bias,
                    batch,
                );
                mv::set_tuning(default);
                for b in 0..batch {
                    let row = &got[b * rows..(b + 1) * rows];
                    let want = &alone[first + b];
                    for (r, (g, a)) in row.iter().zip(want).enumerate() {
                        assert!(
                            g == a,
                            "{ty} {rows}x{cols}: vector {} of a batch of {batch} (quad {quad}, \
                             mma {mma}), row {r}: {g} alone {a}",
                            first + b
                        );
                    }
                }
            }
        }
    }
}

/// A sequence being served: its tokens and its blocks in the shared cache.
struct Seq {
    tokens: Vec<u32>,
    done: usize,
    blocks: Vec<u32>,
}

/// Runs one pass: `(sequence, tokens to run, logits wanted)` in batch order. Returns the logits
/// of the sequences that wanted them, in plan order, and appends each one's greedy token.
fn pass<B: Backend>(
    m: &Model<B>,
    kv: &mut rocmforge::model::KvCache<B>,
    seqs: &mut [Seq],
    plan: &[(usize, usize, bool)],
) -> Vec<(usize, Vec<f32>)> {
    let (mut tokens, mut positions, mut seq_of, mut logits_for) = (vec![], vec![], vec![], vec![]);
    for (slot, &(s, n, _)) in plan.iter().enumerate() {
        let q = &seqs[s];
        for i in q.done..q.done + n {
            tokens.push(q.tokens[i]);
            positions.push(i as u32);
            seq_of.push(slot as u32);
        }
        logits_for.push(tokens.len() as u32 - 1);
    }
    let slots: Vec<SeqSlot> = plan
        .iter()
        .map(|&(s, n, _)| {
            let len = seqs[s].done + n;
            SeqSlot {
                block_table: &seqs[s].blocks[..len.div_ceil(16)],
                kv_len: len,
            }
        })
        .collect();
    let batch = Batch {
        tokens: &tokens,
        positions: &positions,
        seq_of_token: &seq_of,
        seqs: &slots,
        logits_for: &logits_for,
    };
    let logits = m.forward(&batch, kv).unwrap();
    let n_vocab = logits.len() / plan.len();
    let mut out = Vec::new();
    for (slot, &(s, n, wants)) in plan.iter().enumerate() {
        seqs[s].done += n;
        if wants {
            let l = logits[slot * n_vocab..(slot + 1) * n_vocab].to_vec();
            seqs[s].tokens.push(gpu_util::argmax(&l));
            out.push((s, l));
        }
    }
    out
}

const STEPS: usize = 14;

/// Sequence 0's logits at each of its steps: alone, or (`mixed`) among three others.
fn sequence_zero_logits<B: Backend>(m: &Model<B>, mixed: bool) -> Vec<Vec<f32>> {
    let prompts: [Vec<u32>; 4] = [
        vec![1, 403, 407, 261, 378, 300, 290, 280, 270, 260, 250],
        (1..=20).map(|i| 7 * i + 3).collect(),
        vec![1, 261, 378, 300, 290, 280, 270, 260, 9],
        (1..=30).map(|i| 5 * i + 11).collect(),
    ];
    let per = (30 + STEPS + 4).div_ceil(16);
    let mut kv = m.new_kv_cache(4 * per).unwrap();
    let mut seqs: Vec<Seq> = prompts
        .iter()
        .enumerate()
        .map(|(s, p)| Seq {
            tokens: p.clone(),
            done: 0,
            blocks: ((s * per) as u32..((s + 1) * per) as u32).collect(),
        })
        .collect();
    let mut got = Vec::new();
    let mut keep = |out: Vec<(usize, Vec<f32>)>| {
        got.extend(out.into_iter().filter(|(s, _)| *s == 0).map(|(_, l)| l));
    };
    if !mixed {
        keep(pass(m, &mut kv, &mut seqs, &[(0, 11, true)]));
        for _ in 1..STEPS {
            keep(pass(m, &mut kv, &mut seqs, &[(0, 1, true)]));
        }
        return got;
    }
    // The prompt of 0 in two chunks, batched with another prompt, then with a third prompt and
    // a decode token; decoding among 2 and 3 others, a fourth prompt joining mid-way.
    keep(pass(m, &mut kv, &mut seqs, &[(1, 20, true), (0, 5, false)]));
    keep(pass(
        m,
        &mut kv,
        &mut seqs,
        &[(1, 1, true), (0, 6, true), (2, 9, true)],
    ));
    for step in 1..STEPS {
        let plan: Vec<(usize, usize, bool)> = match step {
            4 => vec![(2, 1, true), (0, 1, true), (1, 1, true), (3, 30, true)],
            s if s > 4 && s % 2 == 0 => {
                vec![(3, 1, true), (1, 1, true), (2, 1, true), (0, 1, true)]
            }
            s if s > 4 => vec![(0, 1, true), (3, 1, true), (2, 1, true), (1, 1, true)],
            _ => vec![(1, 1, true), (0, 1, true), (2, 1, true)],
        };
        keep(pass(m, &mut kv, &mut seqs, &plan));
    }
    got
}

/// stories260K as stored (F32) and quantized to Q8_0 and Q4_0 by our quantizer: with batch
/// invariance, sequence 0's logits at every step are bit for bit those of the run alone. Without
/// it (cuBLAS products and tiled attention for some passes) the difference is printed, not
/// asserted: it is what the mode exists to remove.
#[test]
fn model_logits_alone_equal_logits_among_other_sequences() {
    let Some(path) = gpu_util::stories260k() else {
        return;
    };
    let Some(dev) = gpu_util::device("model_logits_alone_equal") else {
        return;
    };
    let mut files = vec![(path.clone(), false)];
    for mix in ["Q8_0", "Q4_0"] {
        files.push((gpu_util::quantized_copy(&path, mix, "invariance"), true));
    }
    for (file, temp) in &files {
        for invariant in [true, false] {
            let be = GpuBackend::new(dev.clone()).with_batch_invariance(invariant);
            let m = Model::open(file, be).unwrap();
            let alone = sequence_zero_logits(&m, false);
            let mixed = sequence_zero_logits(&m, true);
            assert_eq!(alone.len(), STEPS);
            assert_eq!(mixed.len(), STEPS);
            let mut worst = 0f32;
            for (step, (a, b)) in alone.iter().zip(&mixed).enumerate() {
                assert!(a.iter().chain(b).all(|x| x.is_finite()), "step {step}: NaN");
                let d = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                worst = worst.max(d);
                if invariant {
                    assert!(
                        a.iter().zip(b).all(|(x, y)| x == y),
                        "{}: step {step}: logits alone and batched differ by up to {d}",
                        file.display()
                    );
                }
            }
            println!(
                "{}: batch invariance {invariant}: largest logit difference alone vs batched {worst}",
                file.display()
            );
        }
        if *temp {
            let _ = std::fs::remove_file(file);
        }
    }
}
