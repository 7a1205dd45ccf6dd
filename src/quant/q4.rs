//! Q4_0 (x = d * (q - 8)) and Q4_1 (x = d * q + m): 32 4-bit quants per block;
//! byte j holds element j in its low nibble and element j + 16 in its high nibble.

use super::q8::{BlockQ8_0, BlockQ8_1};
use super::{f16_to_f32, f32_to_f16, Block};

/// ggml's `block_q4_0`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: [u8; 2],
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
// SAFETY: repr(C), byte arrays only.
unsafe impl Block for BlockQ4_0 {}

/// ggml's `block_q4_1`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
// SAFETY: repr(C), byte arrays only.
unsafe impl Block for BlockQ4_1 {}

pub(super) fn dequantize_q4_0(src: &[BlockQ4_0], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(32)) {
        let d = f16_to_f32(b.d);
        for j in 0..16 {
            y[j] = ((b.qs[j] & 0xF) as i32 - 8) as f32 * d;
            y[j + 16] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub(super) fn dequantize_q4_1(src: &[BlockQ4_1], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(32)) {
        let d = f16_to_f32(b.d);
        let m = f16_to_f32(b.m);
        for j in 0..16 {
            y[j] = (b.qs[j] & 0xF) as f32 * d + m;
            y[j + 16] = (b.qs[j] >> 4) as f32 * d + m;
        }
    }
}

/// The element with the largest magnitude (first one on ties), sign kept.
pub(super) fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// quantize_row_q4_0_ref.
pub(super) fn quantize_q4_0(src: &[f32], dst: &mut [BlockQ4_0]) {
    for (x, b) in src.chunks_exact(32).zip(dst.iter_mut()) {
        let d = signed_absmax(x) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        for j in 0..16 {
            let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// The minimum and maximum of `x` (as ggml's reference quantizers find them).
pub(super) fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// quantize_row_q4_1_ref.
pub(super) fn quantize_q4_1(src: &[f32], dst: &mut [BlockQ4_1]) {
    for (x, b) in src.chunks_exact(32).zip(dst.iter_mut()) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        b.m = f32_to_f16(min);
        for j in 0..16 {
            let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

pub(super) fn vec_dot_q4_0_ref(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += ((x.qs[j] & 0xF) as i32 - 8) * y.qs[j] as i32;
            sumi += ((x.qs[j] >> 4) as i32 - 8) * y.qs[j + 16] as i32;
        }
        s += sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    s
}

pub(super) fn vec_dot_q4_1_ref(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += (x.qs[j] & 0xF) as i32 * y.qs[j] as i32;
            sumi += (x.qs[j] >> 4) as i32 * y.qs[j + 16] as i32;
        }
        s += sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d)) + f16_to_f32(x.m) * f16_to_f32(y.s);
    }
    s
}

/// AVX2 Q4_0 x Q8_0.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` holds `n / 32` Q4_0 blocks, `a` as many Q8_0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q4_0_avx2(w: &[u8], a: &[u8], n: usize) -> f32 {
    use super::simd::{hsum_ps, ld128, ld256, ld_f16, mul_sum_i8_pairs, nibbles_32};
    use std::arch::x86_64::*;
    let nb = n / 32;
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    // A macro, not a closure: closures are not inlined into target_feature functions.
    macro_rules! block {
        ($i:expr, $acc:expr) => {{
            let (bw, ba) = (wp.add($i * 18), ap.add($i * 34));
            let d = _mm256_set1_ps(ld_f16(bw) * ld_f16(ba));
            let qx = _mm256_sub_epi8(nibbles_32(ld128(bw.add(2))), _mm256_set1_epi8(8));
            let p = mul_sum_i8_pairs(qx, ld256(ba.add(2)));
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
pub(super) unsafe fn vec_dot_q4_0_x4_avx2(w: &[u8], a: [&[u8]; 4], n: usize) -> [f32; 4] {
    super::simd::dot4_q8_0_family!(w, a, n, 18, |bw| {
        let q = super::simd::nibbles_32(super::simd::ld128(bw.add(2)));
        (ld_f16(bw), _mm256_sub_epi8(q, _mm256_set1_epi8(8)))
    })
}

/// AVX2 Q4_1 x Q8_1: unsigned nibbles times int8 with maddubs; the minimum enters as m * s.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` holds `n / 32` Q4_1 blocks, `a` as many Q8_1.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q4_1_avx2(w: &[u8], a: &[u8], n: usize) -> f32 {
    use super::simd::{hsum_ps, ld128, ld256, ld_f16, nibbles_32};
    use std::arch::x86_64::*;
    let nb = n / 32;
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for i in 0..nb {
        let (bw, ba) = (wp.add(i * 20), ap.add(i * 36));
        let d = _mm256_set1_ps(ld_f16(bw) * ld_f16(ba));
        summs += ld_f16(bw.add(2)) * ld_f16(ba.add(2));
        let qx = nibbles_32(ld128(bw.add(4)));
        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qx, ld256(ba.add(4))), ones);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc) + summs
}
