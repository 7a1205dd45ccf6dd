//! Causal attention over the paged F16 KV cache, GQA, sliding window, logit soft-capping.
//!
//! Numerics follow llama.cpp's CPU graph (`kq = mul_mat(k, q)`, `soft_max_ext`,
//! `kqv = mul_mat(v, kq)`): Q is rounded to F16 for the F16 K dot products (ggml's
//! `vec_dot_type` of F16 is F16), and the softmax weights are rounded to F16 for the V product.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::{slot_of, CpuKv, CpuTensor};
use crate::backend::AttnParams;
use crate::model::Batch;
use crate::{Error, Result};

fn check(q: &CpuTensor, k: &CpuKv, v: &CpuKv, batch: &Batch, p: &AttnParams) -> Result<()> {
    if p.n_kv_heads == 0 || !p.n_heads.is_multiple_of(p.n_kv_heads) {
        return Err(Error::InvalidInput(format!(
            "attention: {} heads over {} KV heads",
            p.n_heads, p.n_kv_heads
        )));
    }
    if q.cols != p.n_heads * p.head_dim || q.rows != batch.n_tokens() {
        return Err(Error::InvalidInput(format!(
            "attention: q [{}, {}] for {} tokens x {} heads x {}",
            q.rows,
            q.cols,
            batch.n_tokens(),
            p.n_heads,
            p.head_dim
        )));
    }
    for c in [k, v] {
        if c.n_kv_heads != p.n_kv_heads || c.head_dim != p.head_dim {
            return Err(Error::InvalidInput(format!(
                "attention: cache of {} heads x {} for {} x {}",
                c.n_kv_heads, c.head_dim, p.n_kv_heads, p.head_dim
            )));
        }
    }
    if batch.positions.len() != batch.n_tokens() || batch.seq_of_token.len() != batch.n_tokens() {
        return Err(Error::InvalidInput(
            "attention: batch arrays differ in length".into(),
        ));
    }
    Ok(())
}

/// Dot product in f32 (8 accumulators, so it vectorizes).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// One sequence's keys and values for positions `lo..lo + n`, converted to f32 once per pass
/// (`[n, n_kv_heads * head_dim]` each).
struct SeqKv {
    lo: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

fn gather(k: &CpuKv, v: &CpuKv, batch: &Batch, seq: usize, lo: usize, hi: usize) -> Result<SeqKv> {
    let len = k.slot_len();
    let n = hi - lo;
    let mut kf = vec![0f32; n * len];
    let mut vf = vec![0f32; n * len];
    for j in lo..hi {
        let slot = slot_of(batch, seq, j, k.n_blocks)?;
        let r = (j - lo) * len;
        k.data[slot * len..(slot + 1) * len].convert_to_f32_slice(&mut kf[r..r + len]);
        v.data[slot * len..(slot + 1) * len].convert_to_f32_slice(&mut vf[r..r + len]);
    }
    Ok(SeqKv { lo, k: kf, v: vf })
}

/// `[n, n_heads * head_dim]` attention output.
pub fn attention(
    q: &CpuTensor,
    k: &CpuKv,
    v: &CpuKv,
    batch: &Batch,
    p: &AttnParams,
) -> Result<CpuTensor> {
    check(q, k, v, batch, p)?;
    let hd = p.head_dim;
    let group = p.n_heads / p.n_kv_heads;
    let slot_len = p.n_kv_heads * hd;
    let lo_of = |pos: usize| p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
    // Per sequence in the batch: the key range its tokens see, gathered once.
    let mut range: Vec<Option<(usize, usize)>> = vec![None; batch.seqs.len()];
    for t in 0..batch.n_tokens() {
        let (s, pos) = (batch.seq_of_token[t] as usize, batch.positions[t] as usize);
        let r = range
            .get_mut(s)
            .ok_or_else(|| Error::InvalidInput(format!("attention: sequence index {s}")))?;
        let (lo, hi) = r.unwrap_or((lo_of(pos), pos + 1));
        *r = Some((lo.min(lo_of(pos)), hi.max(pos + 1)));
    }
    let mut seqs: Vec<Option<SeqKv>> = Vec::with_capacity(range.len());
    for (s, r) in range.iter().enumerate() {
        seqs.push(match r {
            Some((lo, hi)) => Some(gather(k, v, batch, s, *lo, *hi)?),
            None => None,
        });
    }
    let mut out = vec![0f32; q.rows * q.cols];
    out.par_chunks_mut(hd).enumerate().for_each_init(
        || (Vec::new(), vec![0f32; hd]),
        |(scores, qh), (u, o)| {
            let (t, h) = (u / p.n_heads, u % p.n_heads);
            let kvh = h / group;
            let pos = batch.positions[t] as usize;
            let Some(kv) = &seqs[batch.seq_of_token[t] as usize] else {
                return;
            };
            // Q rounded to f16, as ggml converts it for the f16 K product.
            for (d, s) in qh.iter_mut().zip(&q.data[u * hd..(u + 1) * hd]) {
                *d = f16::from_f32(*s).to_f32();
            }
            let (lo, hi) = (lo_of(pos) - kv.lo, pos + 1 - kv.lo);
            scores.clear();
            let mut max = f32::NEG_INFINITY;
            for j in lo..hi {
                let off = j * slot_len + kvh * hd;
                let mut x = dot(qh, &kv.k[off..off + hd]) * p.scale;
                if let Some(cap) = p.softcap {
                    x = (x / cap).tanh() * cap;
                }
                max = max.max(x);
                scores.push(x);
            }
            let mut sum = 0f64;
            for x in scores.iter_mut() {
                *x = (*x - max).exp();
                sum += *x as f64;
            }
            let inv = (1.0 / sum) as f32;
            o.iter_mut().for_each(|x| *x = 0.0);
            for (j, &w) in (lo..hi).zip(scores.iter()) {
                // softmax weights rounded to f16, as ggml converts them for the f16 V product
                let w = f16::from_f32(w * inv).to_f32();
                let off = j * slot_len + kvh * hd;
                for (x, vv) in o.iter_mut().zip(&kv.v[off..off + hd]) {
                    *x += w * vv;
                }
            }
        },
    );
    Ok(CpuTensor {
        data: out,
        rows: q.rows,
        cols: q.cols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::backend::Backend;
    use crate::model::SeqSlot;
    use rand::{Rng, SeedableRng};

    /// Plain f64 attention over contiguous K/V of one sequence.
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        pos: usize,
        p: &AttnParams,
        h: usize,
    ) -> Vec<f64> {
        let hd = p.head_dim;
        let kvh = h / (p.n_heads / p.n_kv_heads);
        let lo = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let mut s: Vec<f64> = (lo..=pos)
            .map(|j| {
                let kr = &k[(j * p.n_kv_heads + kvh) * hd..][..hd];
                q.iter()
                    .zip(kr)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    * p.scale as f64
            })
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        s.iter_mut().for_each(|x| *x = (*x - m).exp());
        let z: f64 = s.iter().sum();
        let mut o = vec![0f64; hd];
        for (i, j) in (lo..=pos).enumerate() {
            let vr = &v[(j * p.n_kv_heads + kvh) * hd..][..hd];
            for d in 0..hd {
                o[d] += s[i] / z * vr[d] as f64;
            }
        }
        o
    }

    #[test]
    fn paged_gqa_window_matches_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
        let be = CpuBackend::new();
        let p = AttnParams {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            scale: 0.35,
            window: Some(20),
            softcap: None,
        };
        let kvd = p.n_kv_heads * p.head_dim;
        // two sequences: A with 37 tokens (blocks 3,0,5), B with 5 tokens (block 1); all new.
        let (na, nb) = (37usize, 5usize);
        let n = na + nb;
        let kf: Vec<f32> = (0..n * kvd).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let vf: Vec<f32> = (0..n * kvd).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let qf: Vec<f32> = (0..n * p.n_heads * p.head_dim)
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect();
        let tokens = vec![0u32; n];
        let positions: Vec<u32> = (0..na as u32).chain(0..nb as u32).collect();
        let seq_of: Vec<u32> = std::iter::repeat_n(0, na)
            .chain(std::iter::repeat_n(1, nb))
            .collect();
        let ta = [3u32, 0, 5];
        let tb = [1u32];
        let seqs = [
            SeqSlot {
                block_table: &ta,
                kv_len: na,
            },
            SeqSlot {
                block_table: &tb,
                kv_len: nb,
            },
        ];
        let logits_for = [0u32];
        let batch = Batch {
            tokens: &tokens,
            positions: &positions,
            seq_of_token: &seq_of,
            seqs: &seqs,
            logits_for: &logits_for,
        };
        let mut kc = be.kv_alloc(6, p.n_kv_heads, p.head_dim).unwrap();
        let mut vc = be.kv_alloc(6, p.n_kv_heads, p.head_dim).unwrap();
        kc.data.iter_mut().for_each(|x| *x = f16::NAN);
        vc.data.iter_mut().for_each(|x| *x = f16::NAN);
        be.kv_store(&mut kc, &be.tensor(&kf, n, kvd).unwrap(), &batch)
            .unwrap();
        be.kv_store(&mut vc, &be.tensor(&vf, n, kvd).unwrap(), &batch)
            .unwrap();
        let q = be.tensor(&qf, n, p.n_heads * p.head_dim).unwrap();
        let out = be.attention(&q, &kc, &vc, &batch, &p).unwrap();
        for t in 0..n {
            let (base, pos) = if t < na { (0, t) } else { (na, t - na) };
            let k = &kf[base * kvd..];
            let v = &vf[base * kvd..];
            for h in 0..p.n_heads {
                let qh = &qf[(t * p.n_heads + h) * p.head_dim..][..p.head_dim];
                let r = reference(qh, k, v, pos, &p, h);
                let o = &out.data[(t * p.n_heads + h) * p.head_dim..][..p.head_dim];
                for d in 0..p.head_dim {
                    assert!(
                        (o[d] as f64 - r[d]).abs() < 5e-3,
                        "t={t} h={h} d={d}: {} vs {}",
                        o[d],
                        r[d]
                    );
                }
            }
        }
    }
}
