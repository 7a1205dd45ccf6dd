//! The CPU sampler: the reference for the GPU kernel and its fallback.
//!
//! One step for one row of logits:
//! 1. Penalties (llama.cpp order) for each distinct token among the last `penalty_last_n` recent
//!    tokens, counted `c` times: the repetition penalty divides a positive logit and multiplies a
//!    non-positive one, then `c * frequency_penalty + presence_penalty` is subtracted.
//! 2. Logits are checked: NaN or +inf is an error; -inf is a token that is never drawn.
//! 3. Temperature 0 is argmax (ties to the lowest id).
//! 4. Softmax with the temperature fused in, as integer weights:
//!    `W[i] = trunc(exp((l[i] - max) / T) * 2^40)`, so the largest weight is exactly 2^40 and any
//!    sum over a row of up to 2^18 tokens fits in a u64. Sums are exact in every order, which is
//!    what lets the GPU's parallel reductions and this code agree bit for bit.
//! 5. Kept set (the intersection of the active filters, each defined by value so ties stay
//!    together): top-k keeps a token with fewer than k tokens of strictly larger weight; top-p keeps
//!    a token whose strictly larger tokens hold less than `top_p * total` (mass of the unfiltered
//!    distribution); min-p keeps `W >= min_p * 2^40`.
//! 6. Sort-free rejection sampling (FlashInfer's scheme): `pivot = 0`, `q = total`. In round `r`
//!    take `bits = philox::round_bits(seed, seq_id, step, r)` and `t = (q * bits) >> 32` (< q).
//!    The candidate is the first token `c` in vocabulary order with `W > pivot` whose inclusive
//!    running sum over tokens with `W > pivot` exceeds `t`. Compute the count and mass of tokens
//!    with `W > W[c]`; if `c` is in the kept set return it, else `pivot = W[c]`, `q = mass`, next
//!    round. Every rejected token and everything lighter leaves the support, and the accepted token
//!    is distributed exactly as the kept set renormalized. The heaviest token is always kept, so
//!    this ends; after [`MAX_ROUNDS`] rounds (never seen in practice) it returns the argmax.

use rayon::prelude::*;

use super::philox;
use super::{SampleRow, SamplingParams};
use crate::{Error, Result};

/// Weight of the most probable token: 2^40.
pub const WEIGHT_ONE: f32 = 1_099_511_627_776.0;

/// Largest vocabulary whose total weight fits in a u64 (2^24 * 2^40 = 2^64 would not).
pub const MAX_VOCAB: usize = 1 << 23;

/// Rejection rounds before giving up and returning the argmax.
pub const MAX_ROUNDS: u32 = 64;

/// Samples one token from one row of logits. See the module documentation for the algorithm.
pub fn sample(
    params: &SamplingParams,
    logits: &[f32],
    recent: &[u32],
    seq_id: u64,
    step: u64,
) -> Result<u32> {
    params.validate()?;
    let mut penalized;
    let logits = if params.has_penalties() && !recent.is_empty() {
        penalized = logits.to_vec();
        apply_penalties(params, &mut penalized, recent)?;
        &penalized[..]
    } else {
        logits
    };
    check_logits(logits)?;
    if params.is_greedy() {
        return argmax(logits);
    }
    let (w, total) = weights(logits, params.temperature)?;
    Ok(sample_weights(params, &w, total, seq_id, step))
}

/// Samples one token per row of `logits` (`rows.len()` rows of `vocab` floats), rows in parallel.
/// Each row's token depends only on that row, so it does not change with the batch around it.
pub fn sample_batch(rows: &[SampleRow<'_>], logits: &[f32], vocab: usize) -> Result<Vec<u32>> {
    if vocab == 0 || logits.len() != rows.len().saturating_mul(vocab) {
        return Err(Error::InvalidInput(format!(
            "sampler: logits length {} != rows {} x vocab {vocab}",
            logits.len(),
            rows.len()
        )));
    }
    rows.par_iter()
        .zip(logits.par_chunks(vocab))
        .enumerate()
        .map(|(i, (row, l))| {
            sample(row.params, l, row.recent, row.seq_id, row.step).map_err(|e| match e {
                Error::Sampler(m) => Error::Sampler(format!("row {i}: {m}")),
                other => other,
            })
        })
        .collect()
}

/// Errors on an empty row, a row longer than [`MAX_VOCAB`], NaN or +inf.
pub fn check_logits(logits: &[f32]) -> Result<()> {
    if logits.is_empty() || logits.len() > MAX_VOCAB {
        return Err(Error::InvalidInput(format!(
            "sampler: vocabulary size {} outside 1..={MAX_VOCAB}",
            logits.len()
        )));
    }
    if let Some(i) = logits
        .iter()
        .position(|x| x.is_nan() || *x == f32::INFINITY)
    {
        return Err(Error::Sampler(format!(
            "logit {} at token {i} (vocabulary {})",
            logits[i],
            logits.len()
        )));
    }
    Ok(())
}

/// Applies the repetition, frequency and presence penalties in place (llama.cpp's order and
/// arithmetic). A recent token outside the vocabulary is an error.
pub fn apply_penalties(params: &SamplingParams, logits: &mut [f32], recent: &[u32]) -> Result<()> {
    if !params.has_penalties() {
        return Ok(());
    }
    let mut window = penalty_window(params, recent).to_vec();
    window.sort_unstable();
    let mut i = 0;
    while i < window.len() {
        let tok = window[i];
        let mut j = i;
        while j < window.len() && window[j] == tok {
            j += 1;
        }
        let count = (j - i) as u32;
        i = j;
        let vocab = logits.len();
        let l = logits.get_mut(tok as usize).ok_or_else(|| {
            Error::InvalidInput(format!(
                "sampler: recent token id {tok} >= vocabulary size {vocab}"
            ))
        })?;
        *l = penalize(*l, count, params);
    }
    Ok(())
}

/// The recent tokens the penalties look at: the last `penalty_last_n` (none when no penalty is on).
pub fn penalty_window<'a>(params: &SamplingParams, recent: &'a [u32]) -> &'a [u32] {
    if !params.has_penalties() {
        return &[];
    }
    let n = params.penalty_last_n.min(recent.len());
    &recent[recent.len() - n..]
}

/// One token's penalized logit, given how often it occurs among the recent tokens (>= 1).
/// The GPU kernel performs the same f32 operations in the same order, without contraction.
#[inline]
pub fn penalize(logit: f32, count: u32, p: &SamplingParams) -> f32 {
    let l = if logit <= 0.0 {
        logit * p.repeat_penalty
    } else {
        logit / p.repeat_penalty
    };
    let pen = count as f32 * p.frequency_penalty + p.presence_penalty;
    l - pen
}

/// The index of the largest logit, ties to the lowest id; an all -inf row is an error.
pub fn argmax(logits: &[f32]) -> Result<u32> {
    let mut best = 0usize;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    if logits.get(best).is_none_or(|x| *x == f32::NEG_INFINITY) {
        return Err(Error::Sampler(format!(
            "every logit is -inf (vocabulary {})",
            logits.len()
        )));
    }
    Ok(best as u32)
}

/// The integer weights `trunc(exp((l - max) / T) * 2^40)` and their total. Large rows are split
/// over the rayon pool; the sums are integers, so the result does not depend on the split.
pub fn weights(logits: &[f32], temperature: f32) -> Result<(Vec<u64>, u64)> {
    const CHUNK: usize = 16_384;
    let max = logits[argmax(logits)? as usize];
    let mut w = vec![0u64; logits.len()];
    let fill = |(dst, src): (&mut [u64], &[f32])| -> u64 {
        let mut total = 0u64;
        for (d, &l) in dst.iter_mut().zip(src) {
            *d = weight(l, max, temperature);
            total += *d;
        }
        total
    };
    let total = if logits.len() > 2 * CHUNK {
        w.par_chunks_mut(CHUNK)
            .zip(logits.par_chunks(CHUNK))
            .map(fill)
            .sum()
    } else {
        fill((&mut w, logits))
    };
    Ok((w, total))
}

/// `x` below which `exp(x) * 2^40 < 1` for certain (`exp(-28) = 6.9e-13 < 2^-40 = 9.1e-13`):
/// the weight is 0 whatever the `exp` implementation, so it is not computed.
const ZERO_WEIGHT_BELOW: f32 = -28.0;

/// One token's integer weight.
#[inline]
pub fn weight(logit: f32, max: f32, temperature: f32) -> u64 {
    let x = (logit - max) / temperature;
    if x < ZERO_WEIGHT_BELOW {
        return 0;
    }
    // In [0, 2^40]: through i64, whose conversion is one instruction on x86-64 (u64's is not).
    (x.exp() * WEIGHT_ONE) as i64 as u64
}

/// The acceptance test of the kept set, from the count and mass of strictly heavier tokens.
#[derive(Debug, Clone, Copy)]
struct Filter {
    top_k: u64,
    top_p_mass: Option<f64>,
    min_weight: Option<f64>,
}

impl Filter {
    fn new(p: &SamplingParams, vocab: usize, total: u64) -> Self {
        Filter {
            top_k: if (p.top_k as usize) < vocab {
                u64::from(p.top_k)
            } else {
                0
            },
            top_p_mass: (p.top_p < 1.0).then(|| f64::from(p.top_p) * total as f64),
            min_weight: (p.min_p > 0.0).then(|| f64::from(p.min_p) * f64::from(WEIGHT_ONE)),
        }
    }

    fn is_off(&self) -> bool {
        self.top_k == 0 && self.top_p_mass.is_none() && self.min_weight.is_none()
    }

    fn accepts(&self, count_above: u64, mass_above: u64, w: u64) -> bool {
        (self.top_k == 0 || count_above < self.top_k)
            && self.top_p_mass.is_none_or(|m| (mass_above as f64) < m)
            && self.min_weight.is_none_or(|m| w as f64 >= m)
    }
}

/// `(q * bits) >> 32`: the round's threshold, uniform in [0, q).
#[inline]
pub fn threshold(q: u64, bits: u32) -> u64 {
    ((u128::from(q) * u128::from(bits)) >> 32) as u64
}

/// The rejection sampler over integer weights (direct, O(vocab) per round).
pub fn sample_weights(
    params: &SamplingParams,
    w: &[u64],
    total: u64,
    seq_id: u64,
    step: u64,
) -> u32 {
    let filter = Filter::new(params, w.len(), total);
    let mut pivot = 0u64;
    let mut q = total;
    for round in 0..MAX_ROUNDS {
        let t = threshold(q, philox::round_bits(params.seed, seq_id, step, round));
        let c = inverse_cdf(w, pivot, t);
        if filter.is_off() {
            return c as u32;
        }
        let wc = w[c];
        let (count, mass) = above(w, wc);
        if filter.accepts(count, mass, wc) {
            return c as u32;
        }
        pivot = wc;
        q = mass;
    }
    argmax_weights(w)
}

/// Count and mass of the weights strictly above `wc` (split over the rayon pool for long rows).
fn above(w: &[u64], wc: u64) -> (u64, u64) {
    const CHUNK: usize = 32_768;
    let part = |c: &[u64]| {
        c.iter()
            .filter(|&&x| x > wc)
            .fold((0u64, 0u64), |(n, m), &x| (n + 1, m + x))
    };
    if w.len() > 2 * CHUNK {
        w.par_chunks(CHUNK)
            .map(part)
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    } else {
        part(w)
    }
}

/// First token with `w > pivot` whose inclusive running sum over such tokens exceeds `t`.
fn inverse_cdf(w: &[u64], pivot: u64, t: u64) -> usize {
    let mut cum = 0u64;
    let mut last = 0usize;
    for (i, &x) in w.iter().enumerate() {
        if x > pivot {
            cum += x;
            last = i;
            if cum > t {
                return i;
            }
        }
    }
    last // unreachable while t < sum of w > pivot
}

fn argmax_weights(w: &[u64]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in w.iter().enumerate() {
        if x > w[best] {
            best = i;
        }
    }
    best as u32
}

const BLOCK: usize = 1024;

/// A row prepared for many draws (n completions of one prompt, statistical tests): the same
/// tokens as [`sample`] for every (seq_id, step), in O(vocab / 1024 * log + 1024) per round
/// instead of O(vocab).
pub struct PreparedRow {
    params: SamplingParams,
    filter: Filter,
    greedy: Option<u32>,
    w: Vec<u64>,
    total: u64,
    /// All weights, descending, and prefix sums of that order (`desc_mass[j]` = sum of first j).
    desc: Vec<u64>,
    desc_mass: Vec<u64>,
    /// Per block of [`BLOCK`] tokens: its weights ascending and their suffix sums.
    block_asc: Vec<Vec<u64>>,
    block_suffix: Vec<Vec<u64>>,
}

impl PreparedRow {
    /// Validates, penalizes and converts one row of logits.
    pub fn new(params: &SamplingParams, logits: &[f32], recent: &[u32]) -> Result<Self> {
        params.validate()?;
        let mut l = logits.to_vec();
        apply_penalties(params, &mut l, recent)?;
        check_logits(&l)?;
        let greedy = if params.is_greedy() {
            Some(argmax(&l)?)
        } else {
            None
        };
        let (w, total) = if greedy.is_some() {
            (Vec::new(), 0)
        } else {
            weights(&l, params.temperature)?
        };
        let mut desc = w.clone();
        desc.sort_unstable_by(|a, b| b.cmp(a));
        let mut desc_mass = Vec::with_capacity(desc.len() + 1);
        desc_mass.push(0u64);
        let mut acc = 0u64;
        for &x in &desc {
            acc += x;
            desc_mass.push(acc);
        }
        let mut block_asc = Vec::new();
        let mut block_suffix = Vec::new();
        for chunk in w.chunks(BLOCK) {
            let mut asc = chunk.to_vec();
            asc.sort_unstable();
            let mut suffix = vec![0u64; asc.len() + 1];
            for j in (0..asc.len()).rev() {
                suffix[j] = suffix[j + 1] + asc[j];
            }
            block_asc.push(asc);
            block_suffix.push(suffix);
        }
        Ok(PreparedRow {
            params: *params,
            filter: Filter::new(params, w.len(), total),
            greedy,
            w,
            total,
            desc,
            desc_mass,
            block_asc,
            block_suffix,
        })
    }

    /// The token [`sample`] returns for this row at (seq_id, step).
    pub fn sample(&self, seq_id: u64, step: u64) -> u32 {
        if let Some(t) = self.greedy {
            return t;
        }
        let mut pivot = 0u64;
        let mut q = self.total;
        for round in 0..MAX_ROUNDS {
            let t = threshold(q, philox::round_bits(self.params.seed, seq_id, step, round));
            let c = self.inverse_cdf(pivot, t);
            if self.filter.is_off() {
                return c as u32;
            }
            let wc = self.w[c];
            let count = self.desc.partition_point(|&x| x > wc);
            let mass = self.desc_mass[count];
            if self.filter.accepts(count as u64, mass, wc) {
                return c as u32;
            }
            pivot = wc;
            q = mass;
        }
        argmax_weights(&self.w)
    }

    fn inverse_cdf(&self, pivot: u64, t: u64) -> usize {
        let mut cum = 0u64;
        for (b, (asc, suffix)) in self.block_asc.iter().zip(&self.block_suffix).enumerate() {
            let m = suffix[asc.partition_point(|&x| x <= pivot)];
            if cum + m > t {
                let start = b * BLOCK;
                let end = (start + BLOCK).min(self.w.len());
                return start + inverse_cdf(&self.w[start..end], pivot, t - cum);
            }
            cum += m;
        }
        argmax_weights(&self.w) as usize // unreachable while t < q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32, k: u32, p: f32, min_p: f32) -> SamplingParams {
        SamplingParams {
            temperature: t,
            top_k: k,
            top_p: p,
            min_p,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_ties_go_to_lowest_id() {
        let l = [0.5, 2.0, -1.0, 2.0, f32::NEG_INFINITY];
        assert_eq!(sample(&SamplingParams::greedy(), &l, &[], 0, 0).unwrap(), 1);
    }

    #[test]
    fn nan_and_pos_inf_are_errors_all_neg_inf_too() {
        let p = SamplingParams::default();
        let e = sample(&p, &[0.0, f32::NAN, 1.0], &[], 0, 0).unwrap_err();
        assert!(matches!(e, Error::Sampler(_)), "{e}");
        assert!(e.to_string().contains("token 1"), "{e}");
        assert!(sample(&p, &[0.0, f32::INFINITY], &[], 0, 0).is_err());
        let e = sample(&p, &[f32::NEG_INFINITY; 4], &[], 0, 0).unwrap_err();
        assert!(e.to_string().contains("-inf"), "{e}");
        assert!(sample(&p, &[], &[], 0, 0).is_err());
    }

    #[test]
    fn penalties_follow_llama_cpp() {
        let p = SamplingParams {
            repeat_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            penalty_last_n: 3,
            ..Default::default()
        };
        let mut l = [4.0f32, -4.0, 1.0, 1.0];
        // Only the last 3 recent tokens count: 1, 0, 1 (the leading 2 is outside the window).
        apply_penalties(&p, &mut l, &[2, 1, 0, 1]).unwrap();
        assert_eq!(l, [4.0 / 2.0 - 0.75, -4.0 * 2.0 - 1.0, 1.0, 1.0]);
        let e = apply_penalties(&p, &mut l, &[9]).unwrap_err();
        assert!(e.to_string().contains("recent token id 9"), "{e}");
    }

    #[test]
    fn prepared_row_matches_direct_sampler() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let logits: Vec<f32> = (0..5000).map(|_| rng.gen_range(-8.0f32..8.0)).collect();
        for prm in [
            params(1.0, 0, 1.0, 0.0),
            params(0.7, 50, 0.9, 0.0),
            params(1.3, 5, 1.0, 0.0),
            params(1.0, 0, 0.5, 0.1),
        ] {
            let prep = PreparedRow::new(&prm, &logits, &[]).unwrap();
            for step in 0..300 {
                let a = sample(&prm, &logits, &[], 3, step).unwrap();
                assert_eq!(a, prep.sample(3, step), "{prm:?} step {step}");
            }
        }
    }

    #[test]
    fn skipped_weights_would_be_zero() {
        let mut x = ZERO_WEIGHT_BELOW;
        for _ in 0..1000 {
            x = f32::from_bits(x.to_bits() + 1); // the next value below
            assert!(x.exp() * WEIGHT_ONE < 1.0, "{x}");
        }
        assert_eq!(weight(-100.0, 0.0, 1.0), 0);
        assert_eq!(weight(0.0, 0.0, 0.7), 1 << 40);
        assert_eq!(weight(f32::NEG_INFINITY, 0.0, 0.7), 0);
    }

    #[test]
    fn threshold_is_below_q() {
        assert_eq!(threshold(1 << 40, u32::MAX), (1u64 << 40) - (1 << 8));
        assert_eq!(threshold(12345, 0), 0);
        assert!(threshold(1, u32::MAX) < 1);
    }
}
