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

/// Tokens per attention work unit.
const QT: usize = 4;

/// Dot products of `N` queries with one key, each exactly as [`dot`] computes it (same lanes,
/// same order), interleaved so the `N` dependency chains overlap.
#[inline]
fn dot_n<const N: usize>(qs: [&[f32]; N], k: &[f32]) -> [f32; N] {
    let mut acc = [[0f32; 8]; N];
    let chunks = k.len() / 8;
    for c in 0..chunks {
        let kc = &k[8 * c..8 * c + 8];
        for (a, q) in acc.iter_mut().zip(&qs) {
            let qc = &q[8 * c..8 * c + 8];
            for l in 0..8 {
                a[l] += qc[l] * kc[l];
            }
        }
    }
    let mut out = [0f32; N];
    for (o, (a, q)) in out.iter_mut().zip(acc.iter().zip(&qs)) {
        let mut s: f32 = a.iter().sum();
        for (x, y) in q[8 * chunks..].iter().zip(&k[8 * chunks..]) {
            s += x * y;
        }
        *o = s;
    }
    out
}

/// [`dot_n`] for 8 queries (rows of `hd` floats from `q`) with AVX: the same 8 lanes, products
/// and sums unfused, lanes summed in order, so the results equal [`dot`]'s bit for bit.
///
/// # Safety
/// AVX must be available, `hd % 8 == 0`, `q` readable for `8 * hd` floats and `k` for `hd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn dot8_avx(q: *const f32, k: *const f32, hd: usize) -> [f32; 8] {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 8];
    for c in 0..hd / 8 {
        let kv = _mm256_loadu_ps(k.add(8 * c));
        for (n, a) in acc.iter_mut().enumerate() {
            *a = _mm256_add_ps(
                *a,
                _mm256_mul_ps(_mm256_loadu_ps(q.add(n * hd + 8 * c)), kv),
            );
        }
    }
    let mut out = [0f32; 8];
    for (o, a) in out.iter_mut().zip(acc) {
        let mut l = [0f32; 8];
        _mm256_storeu_ps(l.as_mut_ptr(), a);
        *o = l.iter().sum();
    }
    out
}

/// `o[..hd] = sum over k of w[k] * v[k * stride..][..hd]`, keys in increasing order, products and
/// sums unfused: the same values as the scalar `*x += w * vv` loop, 64 outputs in registers.
///
/// # Safety
/// AVX must be available, `hd % 64 == 0`, `o` writable for `hd` floats and `v` readable at
/// `k * stride..k * stride + hd` for every `k < w.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn pv_avx(o: *mut f32, w: &[f32], v: *const f32, stride: usize, hd: usize) {
    use std::arch::x86_64::*;
    for c0 in (0..hd).step_by(64) {
        let mut acc = [_mm256_setzero_ps(); 8];
        for (k, &wk) in w.iter().enumerate() {
            let wv = _mm256_set1_ps(wk);
            let vp = v.add(k * stride + c0);
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, _mm256_mul_ps(wv, _mm256_loadu_ps(vp.add(8 * r))));
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.add(c0 + 8 * r), *a);
        }
    }
}

/// One work unit: tokens `t0..t0 + nt` (one sequence) x the query heads of KV head `kvh`.
/// Returns `[nt, group * head_dim]`. Numerics as the per-query loop this replaced: Q rounded to
/// f16, [`dot`] per key, exact softmax (max, exp, f64 sum), weights rounded to f16, and each
/// output element summed over the keys in increasing order.
#[allow(clippy::too_many_arguments)]
fn unit(
    q: &CpuTensor,
    kv: &SeqKv,
    batch: &Batch,
    p: &AttnParams,
    t0: usize,
    nt: usize,
    kvh: usize,
    slot_len: usize,
    lo_of: &dyn Fn(usize) -> usize,
) -> Vec<f32> {
    let hd = p.head_dim;
    let group = p.n_heads / p.n_kv_heads;
    let nq = nt * group;
    // Query qi = tt * group + g is token t0 + tt, head kvh * group + g.
    let mut qh = vec![0f32; nq * hd];
    let mut range = Vec::with_capacity(nq);
    // f16 rounding of whole rows at once (F16C where the CPU has it).
    let mut h16: Vec<f16> = Vec::new();
    for tt in 0..nt {
        let t = t0 + tt;
        let pos = batch.positions[t] as usize;
        let r = (lo_of(pos) - kv.lo, pos + 1 - kv.lo);
        for g in 0..group {
            let qi = tt * group + g;
            let src = t * q.cols + (kvh * group + g) * hd;
            h16.resize(hd, f16::ZERO);
            h16.convert_from_f32_slice(&q.data[src..src + hd]);
            h16.convert_to_f32_slice(&mut qh[qi * hd..(qi + 1) * hd]);
            range.push(r);
        }
    }
    let ulo = range.iter().map(|r| r.0).min().unwrap_or(0);
    let uhi = range.iter().map(|r| r.1).max().unwrap_or(0);
    let nk = uhi - ulo;
    // Scores of every query against every key of the union range (the few outside a query's
    // own range are computed and ignored).
    let mut sc = vec![0f32; nq * nk];
    #[cfg(target_arch = "x86_64")]
    let avx = std::is_x86_feature_detected!("avx");
    let qrow = |qi: usize| &qh[qi * hd..(qi + 1) * hd];
    for j in ulo..uhi {
        let off = j * slot_len + kvh * hd;
        let krow = &kv.k[off..off + hd];
        let mut qi = 0;
        #[cfg(target_arch = "x86_64")]
        if avx && hd.is_multiple_of(8) {
            while qi + 8 <= nq {
                // SAFETY: AVX was detected; rows qi..qi + 8 of qh (hd each) and krow (hd) are
                // in bounds.
                let d = unsafe { dot8_avx(qh[qi * hd..(qi + 8) * hd].as_ptr(), krow.as_ptr(), hd) };
                for (k, v) in d.into_iter().enumerate() {
                    sc[(qi + k) * nk + j - ulo] = v;
                }
                qi += 8;
            }
        }
        while qi + 8 <= nq {
            let d = dot_n([0, 1, 2, 3, 4, 5, 6, 7].map(|k| qrow(qi + k)), krow);
            for (k, v) in d.into_iter().enumerate() {
                sc[(qi + k) * nk + j - ulo] = v;
            }
            qi += 8;
        }
        while qi < nq {
            sc[qi * nk + j - ulo] = dot(qrow(qi), krow);
            qi += 1;
        }
    }
    // Softmax per query over its own range; the weights (f16-rounded) replace the scores.
    for (qi, &(lo, hi)) in range.iter().enumerate() {
        let row = &mut sc[qi * nk + lo - ulo..qi * nk + hi - ulo];
        let mut max = f32::NEG_INFINITY;
        for x in row.iter_mut() {
            *x *= p.scale;
            if let Some(cap) = p.softcap {
                *x = (*x / cap).tanh() * cap;
            }
            max = max.max(*x);
        }
        let mut sum = 0f64;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x as f64;
        }
        let inv = (1.0 / sum) as f32;
        for x in row.iter_mut() {
            *x *= inv;
        }
        h16.resize(row.len(), f16::ZERO);
        h16.convert_from_f32_slice(row);
        h16.convert_to_f32_slice(row);
    }
    let mut o = vec![0f32; nq * hd];
    #[cfg(target_arch = "x86_64")]
    if avx && hd.is_multiple_of(64) {
        for (qi, &(lo, hi)) in range.iter().enumerate() {
            let w = &sc[qi * nk + lo - ulo..qi * nk + hi - ulo];
            let first = lo * slot_len + kvh * hd;
            if hi > lo {
                // Bounds of the last value row read.
                let _ = &kv.v[first + (hi - lo - 1) * slot_len..][..hd];
            }
            // SAFETY: AVX was detected; hd % 64 == 0; o's row qi has hd floats; value rows
            // first + k * slot_len (k < w.len()) of hd floats are inside kv.v (checked above,
            // rows increase with k).
            unsafe {
                pv_avx(
                    o[qi * hd..(qi + 1) * hd].as_mut_ptr(),
                    w,
                    kv.v.as_ptr().add(first),
                    slot_len,
                    hd,
                )
            };
        }
        return o;
    }
    for j in ulo..uhi {
        let off = j * slot_len + kvh * hd;
        let vrow = &kv.v[off..off + hd];
        for (qi, &(lo, hi)) in range.iter().enumerate() {
            if j < lo || j >= hi {
                continue;
            }
            let w = sc[qi * nk + j - ulo];
            for (x, vv) in o[qi * hd..(qi + 1) * hd].iter_mut().zip(vrow) {
                *x += w * vv;
            }
        }
    }
    o
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
    // Work units: up to QT consecutive tokens of one sequence x one KV head, i.e. all the
    // query heads sharing that KV head. A unit reads each key and value row once for its
    // QT * group queries (instead of once per query) and keeps several dot products in flight.
    let n = batch.n_tokens();
    let mut units = Vec::new();
    let mut t = 0;
    while t < n {
        let s = batch.seq_of_token[t];
        let mut e = t + 1;
        while e < n && e - t < QT && batch.seq_of_token[e] == s {
            e += 1;
        }
        for kvh in 0..p.n_kv_heads {
            units.push((t, e - t, kvh));
        }
        t = e;
    }
    let results: Vec<Vec<f32>> = units
        .par_iter()
        .map(|&(t0, nt, kvh)| {
            let Some(kv) = &seqs[batch.seq_of_token[t0] as usize] else {
                return vec![0f32; nt * group * hd];
            };
            unit(q, kv, batch, p, t0, nt, kvh, slot_len, &lo_of)
        })
        .collect();
    let mut out = vec![0f32; q.rows * q.cols];
    for (&(t0, nt, kvh), r) in units.iter().zip(&results) {
        for tt in 0..nt {
            let dst = (t0 + tt) * q.cols + kvh * group * hd;
            out[dst..dst + group * hd].copy_from_slice(&r[tt * group * hd..(tt + 1) * group * hd]);
        }
    }
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
        check_paged_gqa_window(8);
    }

    /// head_dim 64: the AVX paths (8 queries per dot, P.V in registers) where the CPU has AVX.
    #[test]
    fn paged_gqa_window_matches_reference_head_dim_64() {
        check_paged_gqa_window(64);
    }

    fn check_paged_gqa_window(head_dim: usize) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
        let be = CpuBackend::new();
        let p = AttnParams {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim,
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
