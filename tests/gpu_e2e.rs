//! End to end: greedy decoding of stories260K (../shared/models) on the GPU gives the CPU's
//! tokens, and the logits agree to 1e-3 relative. Skips with the reason when there is no GPU
//! or no model file.

mod gpu_util;

use rocmforge::backend::cpu::CpuBackend;
use rocmforge::backend::gpu::backend::GpuBackend;
use rocmforge::backend::Backend;
use rocmforge::model::{Batch, Model, SeqSlot};

/// Greedy tokens after `prompt` (prefill in one pass, then one token per pass), with the logits
/// of every step.
fn greedy<B: Backend>(m: &Model<B>, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let total = prompt.len() + n;
    let blocks: Vec<u32> = (0..total.div_ceil(16) as u32).collect();
    let mut kv = m.new_kv_cache(blocks.len()).unwrap();
    let mut toks = prompt.to_vec();
    let mut all_logits = Vec::new();
    let mut done = 0;
    while toks.len() < total {
        let new = &toks[done..];
        let positions: Vec<u32> = (done as u32..toks.len() as u32).collect();
        let seq_of = vec![0u32; new.len()];
        let seqs = [SeqSlot {
            block_table: &blocks,
            kv_len: toks.len(),
        }];
        let last = [new.len() as u32 - 1];
        let batch = Batch {
            tokens: new,
            positions: &positions,
            seq_of_token: &seq_of,
            seqs: &seqs,
            logits_for: &last,
        };
        let logits = m.forward(&batch, &mut kv).unwrap();
        let best = gpu_util::argmax(&logits);
        all_logits.push(logits);
        done = toks.len();
        toks.push(best);
    }
    (toks[prompt.len()..].to_vec(), all_logits)
}

#[test]
fn stories260k_greedy_gpu_equals_cpu() {
    let Some(path) = gpu_util::stories260k() else {
        return;
    };
    let Some(dev) = gpu_util::device("stories260k_greedy_gpu_equals_cpu") else {
        return;
    };
    let cpu = Model::open(&path, CpuBackend::new()).unwrap();
    let gpu = Model::open(&path, GpuBackend::new(dev)).unwrap();
    let prompt = [1u32, 403, 407, 261, 378];
    let (tc, lc) = greedy(&cpu, &prompt, 48);
    let (tg, lg) = greedy(&gpu, &prompt, 48);
    assert_eq!(tg, tc, "greedy tokens differ");
    for (step, (g, c)) in lg.iter().zip(&lc).enumerate() {
        let num: f64 = g
            .iter()
            .zip(c)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum();
        let den: f64 = c.iter().map(|b| (*b as f64).powi(2)).sum();
        let e = (num / den).sqrt();
        assert!(e < 1e-3, "step {step}: logits rel err {e}");
    }
}

/// Decodes three sequences of different lengths together, one token each per pass, with block
/// tables that grow as the sequences do (so the staged table stride changes and graphs are
/// captured again). Returns every pass's logits.
fn batched_decode(m: &Model<GpuBackend>, steps: usize) -> Vec<Vec<f32>> {
    let prompts: [&[u32]; 3] = [
        &[1, 403, 407],
        &[1, 261, 378, 300, 290, 280, 270, 260],
        &[1],
    ];
    let max_len = 8 + steps + 1;
    let per_seq = max_len.div_ceil(16);
    let mut kv = m.new_kv_cache(3 * per_seq).unwrap();
    let tables: Vec<Vec<u32>> = (0..3)
        .map(|s| ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect())
        .collect();
    let mut toks: Vec<Vec<u32>> = prompts.iter().map(|p| p.to_vec()).collect();
    // prefill each sequence alone
    for (s, p) in prompts.iter().enumerate() {
        let positions: Vec<u32> = (0..p.len() as u32).collect();
        let seqs = [SeqSlot {
            block_table: &tables[s][..p.len().div_ceil(16)],
            kv_len: p.len(),
        }];
        let batch = Batch {
            tokens: p,
            positions: &positions,
            seq_of_token: &vec![0; p.len()],
            seqs: &seqs,
            logits_for: &[p.len() as u32 - 1],
        };
        let l = m.forward(&batch, &mut kv).unwrap();
        toks[s].push(gpu_util::argmax(&l));
    }
    let mut all = Vec::new();
    for _ in 0..steps {
        let tokens: Vec<u32> = toks.iter().map(|t| *t.last().unwrap()).collect();
        let positions: Vec<u32> = toks.iter().map(|t| t.len() as u32 - 1).collect();
        let seqs: Vec<SeqSlot> = toks
            .iter()
            .enumerate()
            .map(|(s, t)| SeqSlot {
                block_table: &tables[s][..t.len().div_ceil(16)],
                kv_len: t.len(),
            })
            .collect();
        let batch = Batch {
            tokens: &tokens,
            positions: &positions,
            seq_of_token: &[0, 1, 2],
            seqs: &seqs,
            logits_for: &[0, 1, 2],
        };
        let l = m.forward(&batch, &mut kv).unwrap();
        let n_vocab = l.len() / 3;
        for (s, t) in toks.iter_mut().enumerate() {
            t.push(gpu_util::argmax(&l[s * n_vocab..(s + 1) * n_vocab]));
        }
        all.push(l);
    }
    all
}

#[test]
fn decode_graph_replay_equals_eager() {
    let Some(path) = gpu_util::stories260k() else {
        return;
    };
    let Some(dev) = gpu_util::device("decode_graph_replay_equals_eager") else {
        return;
    };
    let Some(dev2) = gpu_util::device("decode_graph_replay_equals_eager") else {
        return;
    };
    let eager = Model::open(&path, GpuBackend::with_graphs(dev, false)).unwrap();
    let graphed = Model::open(&path, GpuBackend::with_graphs(dev2, true)).unwrap();
    // 40 steps: the longest sequence grows from 9 to 49 tokens, block tables from 1 to 4 blocks
    // (strides 1, 2, 4): three graph shapes, each run eagerly once, captured, then replayed.
    let le = batched_decode(&eager, 40);
    let lg = batched_decode(&graphed, 40);
    assert_eq!(eager.backend().graphs_captured(), 0);
    assert!(
        graphed.backend().graphs_captured() >= 3,
        "{} graphs captured",
        graphed.backend().graphs_captured()
    );
    for (step, (g, e)) in lg.iter().zip(&le).enumerate() {
        let worst = g
            .iter()
            .zip(e)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            g.iter().all(|x| x.is_finite()) && worst <= 1e-5,
            "step {step}: graph replay differs from eager by {worst}"
        );
    }
}

/// With F16 copies of the quantized weights kept for batched products, prefill (a 8-token
/// prompt goes through the batched product) and decoding give the logits of the backend that
/// dequantizes each matrix per product: both feed the same f16 values to the same GEMM.
#[test]
fn f16_batch_weights_equal_per_product_dequantization() {
    let Some(path) = gpu_util::stories260k() else {
        return;
    };
    let Some(dev) = gpu_util::device("f16_batch_weights") else {
        return;
    };
    let Some(dev2) = gpu_util::device("f16_batch_weights") else {
        return;
    };
    let q8 = gpu_util::quantized_copy(&path, "Q8_0", "f16batch");
    let plain = Model::open(&q8, GpuBackend::new(dev)).unwrap();
    let copies = Model::open(&q8, GpuBackend::new(dev2).with_f16_batch_weights(true)).unwrap();
    let _ = std::fs::remove_file(&q8);
    let lp = batched_decode(&plain, 12);
    let lc = batched_decode(&copies, 12);
    for (step, (a, b)) in lc.iter().zip(&lp).enumerate() {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            a.iter().all(|x| x.is_finite()) && worst <= 1e-4,
            "step {step}: {worst}"
        );
    }
    // the copies exist and take memory: rows * cols * 2 bytes per quantized matrix
    let (with, _) = copies.backend().device().memory_use();
    let (without, _) = plain.backend().device().memory_use();
    assert!(with > without, "{with} vs {without} bytes");
}
