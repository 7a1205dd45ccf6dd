//! Q8_0 and Q8_1: 32 int8 quants with an f16 scale (Q8_1 adds s = d * sum(qs)).
//! Q8_0 is the activation format for Q4_0/Q5_0/Q8_0 weights, Q8_1 for Q4_1/Q5_1.

use super::{f16_to_f32, f32_to_f16, Block};

/// ggml's `block_q8_0`: x = d * q.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: [u8; 2],
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
// SAFETY: repr(C), byte arrays only.
unsafe impl Block for BlockQ8_0 {}

/// ggml's `block_q8_1`: x = d * q, s = d * sum(q).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: [u8; 2],
    pub s: [u8; 2],
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);
// SAFETY: repr(C), byte arrays only.
unsafe impl Block for BlockQ8_1 {}

pub(super) fn dequantize_q8_0(src: &[BlockQ8_0], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(32)) {
        let d = f16_to_f32(b.d);
        for (y, q) in y.iter_mut().zip(b.qs) {
            *y = q as f32 * d;
        }
    }
}

pub(super) fn dequantize_q8_1(src: &[BlockQ8_1], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(32)) {
        let d = f16_to_f32(b.d);
        for (y, q) in y.iter_mut().zip(b.qs) {
            *y = q as f32 * d;
        }
    }
}

fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// quantize_row_q8_0_ref: d = amax/127, q = round(x/d) (half away from zero).
pub(super) fn quantize_q8_0(src: &[f32], dst: &mut [BlockQ8_0]) {
    for (x, b) in src.chunks_exact(32).zip(dst.iter_mut()) {
        let d = amax(x) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
    }
}

/// The activation quantizer of ggml-cpu's `quantize_row_q8_0` / `_q8_1` as built for this
/// machine, which CPU inference must match to reproduce llama.cpp's products: on x86 (AVX2 and
/// AVX-512 paths) the values are multiplied by `127 / amax` instead of `1 / d`, and on x86 and
/// aarch64 (NEON) rounded half to even instead of half away from zero. `d` is `amax / 127` as
/// in the reference. About one element in 30 lands one step away from the reference's rounding.
#[inline]
fn act_scale(amax: f32) -> f32 {
    if amax == 0.0 {
        0.0
    } else if cfg!(target_arch = "x86_64") || cfg!(target_arch = "x86") {
        127.0 / amax
    } else {
        1.0 / (amax / 127.0)
    }
}

#[inline]
fn act_round(v: f32) -> i8 {
    if cfg!(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64"
    )) {
        v.round_ties_even() as i8
    } else {
        v.round() as i8
    }
}

/// Q8_0 for activations (see `act_scale`); weights use [`quantize_q8_0`].
pub(super) fn quantize_q8_0_act(src: &[f32], dst: &mut [BlockQ8_0]) {
    for (x, b) in src.chunks_exact(32).zip(dst.iter_mut()) {
        let m = amax(x);
        let id = act_scale(m);
        b.d = f32_to_f16(m / 127.0);
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = act_round(v * id);
        }
    }
}

/// Q8_1 for activations (see `act_scale`); weights use [`quantize_q8_1`].
pub(super) fn quantize_q8_1_act(src: &[f32], dst: &mut [BlockQ8_1]) {
    for (x, b) in src.chunks_exact(32).zip(dst.iter_mut()) {
        let m = amax(x);
        let (d, id) = (m / 127.0, act_scale(m));
        b.d = f32_to_f16(d);
        let mut sum = 0i32;
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = act_round(v * id);
            sum += *q as i32;
        }
        b.s = f32_to_f16(sum as f32 * d);
    }
}

/// quantize_row_q8_1_ref: as Q8_0 plus s = d * sum(q) (f32 d, stored as f16).
pub(super) fn quantize_q8_1(src: &[f32], dst: &mut [BlockQ8_1]) {
    for (x, b) in src.chunks_exact(32).zip(dst.iter_mut()) {
        let d = amax(x) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        let mut sum = 0i32;
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        b.s = f32_to_f16(sum as f32 * d);
    }
}

pub(super) fn dot_i8(a: &[i8; 32], b: &[i8; 32]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

pub(super) fn vec_dot_q8_0_ref(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a) {
        s += dot_i8(&x.qs, &y.qs) as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    s
}

pub(super) fn vec_dot_q8_1_ref(w: &[BlockQ8_1], a: &[BlockQ8_1]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a) {
        s += dot_i8(&x.qs, &y.qs) as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    s
}

/// AVX2 Q8_0 x Q8_0, two blocks per step into two accumulators.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` and `a` hold `n / 32` blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q8_0_avx2(w: &[u8], a: &[u8], n: usize) -> f32 {
    use super::simd::{hsum_ps, ld256, ld_f16, mul_sum_i8_pairs};
    use std::arch::x86_64::*;
    let nb = n / 32;
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    // A macro, not a closure: closures are not inlined into target_feature functions.
    macro_rules! block {
        ($i:expr, $acc:expr) => {{
            let (bw, ba) = (wp.add($i * 34), ap.add($i * 34));
            let d = _mm256_set1_ps(ld_f16(bw) * ld_f16(ba));
            let p = mul_sum_i8_pairs(ld256(bw.add(2)), ld256(ba.add(2)));
            _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), $acc)
        }};
    }
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 2 <= nb {
        acc0 = block!(i, acc0);
        acc1 = block!(i + 1, acc1);
        i += 2;
    }
    if i < nb {
        acc0 = block!(i, acc0);
    }
    hsum_ps(_mm256_add_ps(acc0, acc1))
}

/// AVX2: one weight row with 4 Q8_0 activation rows (prefill), weights unpacked once per block.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` and each `a[k]` hold `n / 32` blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q8_0_x4_avx2(w: &[u8], a: [&[u8]; 4], n: usize) -> [f32; 4] {
    super::simd::dot4_q8_0_family!(w, a, n, 34, |bw| (ld_f16(bw), ld256(bw.add(2))))
}
