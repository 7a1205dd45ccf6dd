//! End to end: greedy decoding of stories260K (../shared/models) on the GPU gives the CPU's
//! tokens, and the logits agree to 1e-3 relative. Skips with the reason when there is no GPU
//! or no model file.

mod gpu_util;

use std::path::Path;

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
        let best = logits
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0 as u32;
        all_logits.push(logits);
        done = toks.len();
        toks.push(best);
    }
    (toks[prompt.len()..].to_vec(), all_logits)
}

#[test]
fn stories260k_greedy_gpu_equals_cpu() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models/stories260K.gguf");
    if !path.exists() {
        println!("skipped: {} not found", path.display());
        return;
    }
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
