//! Q5_K: as Q4_K with a fifth bit per element in `qh`: element 64c + l takes bit 2c of qh[l],
//! element 64c + 32 + l bit 2c + 1. x = d * sc * q - dmin * m, q in [0, 31].

use super::q4_k::{quantize_k_scale_min, scale_min_k4, sub_dot};
use super::q8_k::BlockQ8K;
use super::{f16_to_f32, Block, QK_K};

/// ggml's `block_q5_K`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
// SAFETY: repr(C), byte arrays only.
unsafe impl Block for BlockQ5K {}

/// Quant of element `32 * j + i` (sub-block j in 0..8, i in 0..32).
#[inline(always)]
fn q5(b: &BlockQ5K, j: usize, i: usize) -> u8 {
    let c = j / 2;
    let low = (b.qs[32 * c + i] >> (4 * (j % 2))) & 0xF;
    let high = (b.qh[i] >> j) & 1;
    low | (high << 4)
}

pub(super) fn dequantize(src: &[BlockQ5K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let min = f16_to_f32(b.dmin);
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &b.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            for i in 0..32 {
                y[32 * j + i] = d1 * q5(b, j, i) as f32 - m1;
            }
        }
    }
}

/// quantize_row_q5_K_ref.
pub(super) fn quantize(src: &[f32], dst: &mut [BlockQ5K]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let (d, dmin, scales, l) = quantize_k_scale_min(x, 31, -0.5, 0.1, 15);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        b.qh = [0; 32];
        for c in 0..4 {
            for i in 0..32 {
                let l1 = l[64 * c + i];
                let l2 = l[64 * c + 32 + i];
                b.qh[i] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1));
                b.qs[32 * c + i] = (l1 & 0xF) | ((l2 & 0xF) << 4);
            }
        }
    }
}

pub(super) fn vec_dot_ref(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (mut sumi, mut summ) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &x.scales);
            let ya = &y.qs[32 * j..32 * j + 32];
            sumi += sc as i32 * sub_dot(ya, |i| q5(x, j, i) as i32);
            summ += m as i32 * ya.iter().map(|&v| v as i32).sum::<i32>();
        }
        s += y.d() * f16_to_f32(x.d) * sumi as f32 - y.d() * f16_to_f32(x.dmin) * summ as f32;
    }
    s
}

/// AVX2 Q5_K x Q8_K: as Q4_K with the fifth bit from `qh` ORed in as bit 4.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` holds `n / 256` Q5_K blocks, `a` as many Q8_K.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_avx2(w: &[u8], a: &[u8], n: usize) -> f32 {
    use super::q4_k::unpack_scales_mins;
    use super::simd::{hsum_ps, hsum_ps128, ld256, ld_f16};
    use std::arch::x86_64::*;
    let wb: &[BlockQ5K] = super::as_blocks(w);
    let nb = n / QK_K;
    let ap = a.as_ptr();
    let m4 = _mm256_set1_epi8(0xF);
    let one = _mm256_set1_epi8(1);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (i, x) in wb.iter().enumerate().take(nb) {
        let ba = ap.add(i * 292);
        let yd = ba.cast::<f32>().read_unaligned();
        let bw = x as *const BlockQ5K as *const u8;
        let d = yd * ld_f16(bw);
        let dmin = -yd * ld_f16(bw.add(2));
        let sm = unpack_scales_mins(&x.scales);
        let mins = _mm_cvtepu8_epi16(_mm_loadu_si128(sm.as_ptr().add(8).cast()));
        let q8sums = ld256(ba.add(260));
        let q8s = _mm_hadd_epi16(
            _mm256_castsi256_si128(q8sums),
            _mm256_extracti128_si256::<1>(q8sums),
        );
        let prod = _mm_madd_epi16(mins, q8s);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
        let hbits = ld256(bw.add(16));
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let q5bits = ld256(bw.add(48 + 32 * j));
            let hl = _mm256_and_si256(
                _mm256_srl_epi16(hbits, _mm_cvtsi32_si128(2 * j as i32)),
                one,
            );
            let hh = _mm256_and_si256(
                _mm256_srl_epi16(hbits, _mm_cvtsi32_si128(2 * j as i32 + 1)),
                one,
            );
            let q5l = _mm256_or_si256(_mm256_and_si256(q5bits, m4), _mm256_slli_epi16::<4>(hl));
            let q5h = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(q5bits), m4),
                _mm256_slli_epi16::<4>(hh),
            );
            let q8l = ld256(ba.add(4 + 64 * j));
            let q8h = ld256(ba.add(36 + 64 * j));
            let pl = _mm256_madd_epi16(
                _mm256_set1_epi16(sm[2 * j] as i16),
                _mm256_maddubs_epi16(q5l, q8l),
            );
            let ph = _mm256_madd_epi16(
                _mm256_set1_epi16(sm[2 * j + 1] as i16),
                _mm256_maddubs_epi16(q5h, q8h),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) + hsum_ps128(acc_m)
}
