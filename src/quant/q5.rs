//! Q5_0 (x = d * (q - 16)) and Q5_1 (x = d * q + m): 32 5-bit quants per block. The low
//! nibbles are packed as in Q4_0; bit j of the little-endian u32 `qh` is element j's fifth bit.

use super::q4::{min_max, signed_absmax};
use super::q8::{BlockQ8_0, BlockQ8_1};
use super::{f16_to_f32, f32_to_f16, Block};

/// ggml's `block_q5_0`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
// SAFETY: repr(C), byte arrays only.
unsafe impl Block for BlockQ5_0 {}

/// ggml's `block_q5_1`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);
// SAFETY: repr(C), byte arrays only.
unsafe impl Block for BlockQ5_1 {}

/// The 32 unsigned 5-bit quants of a block, in element order.
#[inline]
fn unpack5(qh: [u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    let h = u32::from_le_bytes(qh);
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0xF) | ((((h >> j) & 1) as u8) << 4);
        q[j + 16] = (qs[j] >> 4) | ((((h >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

fn pack5(q: &[u8; 32]) -> ([u8; 4], [u8; 16]) {
    let mut qs = [0u8; 16];
    let mut h = 0u32;
    for j in 0..16 {
        qs[j] = (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4);
        h |= ((q[j] as u32 >> 4) & 1) << j;
        h |= ((q[j + 16] as u32 >> 4) & 1) << (j + 16);
    }
    (h.to_le_bytes(), qs)
}

pub(super) fn dequantize_q5_0(src: &[BlockQ5_0], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(32)) {
        let d = f16_to_f32(b.d);
        for (y, q) in y.iter_mut().zip(unpack5(b.qh, &b.qs)) {
            *y = (q as i32 - 16) as f32 * d;
        }
    }
}

pub(super) fn dequantize_q5_1(src: &[BlockQ5_1], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(32)) {
        let d = f16_to_f32(b.d);
        let m = f16_to_f32(b.m);
        for (y, q) in y.iter_mut().zip(unpack5(b.qh, &b.qs)) {
            *y = q as f32 * d + m;
        }
    }
}

/// quantize_row_q5_0_ref.
pub(super) fn quantize_q5_0(src: &[f32], dst: &mut [BlockQ5_0]) {
    for (x, b) in src.chunks_exact(32).zip(dst.iter_mut()) {
        let d = signed_absmax(x) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        let mut q = [0u8; 32];
        for (q, v) in q.iter_mut().zip(x) {
            *q = ((v * id + 16.5) as i8).min(31) as u8;
        }
        (b.qh, b.qs) = pack5(&q);
    }
}

/// quantize_row_q5_1_ref.
pub(super) fn quantize_q5_1(src: &[f32], dst: &mut [BlockQ5_1]) {
    for (x, b) in src.chunks_exact(32).zip(dst.iter_mut()) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        b.m = f32_to_f16(min);
        let mut q = [0u8; 32];
        for (q, v) in q.iter_mut().zip(x) {
            *q = (((v - min) * id + 0.5) as i8).min(31) as u8;
        }
        (b.qh, b.qs) = pack5(&q);
    }
}

pub(super) fn vec_dot_q5_0_ref(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a) {
        let q = unpack5(x.qh, &x.qs);
        let sumi: i32 = q
            .iter()
            .zip(y.qs)
            .map(|(&q, a)| (q as i32 - 16) * a as i32)
            .sum();
        s += sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    s
}

pub(super) fn vec_dot_q5_1_ref(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a) {
        let q = unpack5(x.qh, &x.qs);
        let sumi: i32 = q.iter().zip(y.qs).map(|(&q, a)| q as i32 * a as i32).sum();
        s += sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d)) + f16_to_f32(x.m) * f16_to_f32(y.s);
    }
    s
}

/// AVX2 Q5_0 x Q8_0: the fifth bit clear means q - 16 < 0, so OR 0xF0 into those bytes.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` holds `n / 32` Q5_0 blocks, `a` as many Q8_0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q5_0_avx2(w: &[u8], a: &[u8], n: usize) -> f32 {
    use super::simd::{bits_32, hsum_ps, ld128, ld256, ld_f16, mul_sum_i8_pairs, nibbles_32};
    use std::arch::x86_64::*;
    let nb = n / 32;
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    // A macro, not a closure: closures are not inlined into target_feature functions.
    macro_rules! block {
        ($i:expr, $acc:expr) => {{
            let (bw, ba) = (wp.add($i * 22), ap.add($i * 34));
            let d = _mm256_set1_ps(ld_f16(bw) * ld_f16(ba));
            let qh = bw.add(2).cast::<u32>().read_unaligned();
            let hi = _mm256_andnot_si256(bits_32(qh), _mm256_set1_epi8(0xF0u8 as i8));
            let qx = _mm256_or_si256(nibbles_32(ld128(bw.add(6))), hi);
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
pub(super) unsafe fn vec_dot_q5_0_x4_avx2(w: &[u8], a: [&[u8]; 4], n: usize) -> [f32; 4] {
    super::simd::dot4_q8_0_family!(w, a, n, 22, |bw| {
        let qh = bw.add(2).cast::<u32>().read_unaligned();
        let hi = _mm256_andnot_si256(super::simd::bits_32(qh), _mm256_set1_epi8(0xF0u8 as i8));
        let lo = super::simd::nibbles_32(super::simd::ld128(bw.add(6)));
        (ld_f16(bw), _mm256_or_si256(lo, hi))
    })
}

/// AVX2 Q5_1 x Q8_1: unsigned 5-bit quants times int8 with maddubs; the minimum enters as m * s.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` holds `n / 32` Q5_1 blocks, `a` as many Q8_1.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_q5_1_avx2(w: &[u8], a: &[u8], n: usize) -> f32 {
    use super::simd::{bits_32, hsum_ps, ld128, ld256, ld_f16, nibbles_32};
    use std::arch::x86_64::*;
    let nb = n / 32;
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0f32;
    for i in 0..nb {
        let (bw, ba) = (wp.add(i * 24), ap.add(i * 36));
        let d = _mm256_set1_ps(ld_f16(bw) * ld_f16(ba));
        summs += ld_f16(bw.add(2)) * ld_f16(ba.add(2));
        let qh = bw.add(4).cast::<u32>().read_unaligned();
        let hi = _mm256_and_si256(bits_32(qh), _mm256_set1_epi8(0x10));
        let qx = _mm256_or_si256(nibbles_32(ld128(bw.add(8))), hi);
        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qx, ld256(ba.add(4))), ones);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum_ps(acc) + summs
}
