//! Q2_K: super-blocks of 256 = 16 sub-blocks of 16; 4-bit scale and min per sub-block;
//! x = d * sc * q - dmin * m, q in [0, 3]. Element 128n + 32j + l is bits 2j..2j+2 of
//! qs[32n + l], with scale byte 8n + 2j + l/16.

use super::q8_k::BlockQ8K;
use super::{f16_to_f32, Block, QK_K};

/// ggml's `block_q2_K`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: [u8; 2],
    pub dmin: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);
// SAFETY: repr(C), byte arrays only.
unsafe impl Block for BlockQ2K {}

/// (quant, scale byte index) of element `e`.
#[inline(always)]
fn q2(b: &BlockQ2K, e: usize) -> (i32, usize) {
    let (n, j, l) = (e / 128, (e % 128) / 32, e % 32);
    (
        ((b.qs[32 * n + l] >> (2 * j)) & 3) as i32,
        8 * n + 2 * j + l / 16,
    )
}

pub(super) fn dequantize(src: &[BlockQ2K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let min = f16_to_f32(b.dmin);
        for (e, y) in y.iter_mut().enumerate() {
            let (q, is) = q2(b, e);
            let sc = b.scales[is];
            let dl = d * (sc & 0xF) as f32;
            let ml = min * (sc >> 4) as f32;
            *y = dl * q as f32 - ml;
        }
    }
}

pub(super) fn vec_dot_ref(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (mut sumi, mut summ) = (0i32, 0i32);
        for e in 0..QK_K {
            let (q, is) = q2(x, e);
            sumi += (x.scales[is] & 0xF) as i32 * q * y.qs[e] as i32;
            summ += (x.scales[is] >> 4) as i32 * y.qs[e] as i32;
        }
        s += y.d() * f16_to_f32(x.d) * sumi as f32 - y.d() * f16_to_f32(x.dmin) * summ as f32;
    }
    s
}

/// AVX2 Q2_K x Q8_K: 2-bit quants times int8 with maddubs, 4-bit scales per 16 with madd, the
/// minimums once per block from Q8_K's bsums.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` holds `n / 256` Q2_K blocks, `a` as many Q8_K.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_avx2(w: &[u8], a: &[u8], n: usize) -> f32 {
    use super::simd::{hsum_ps, ld128, ld256, ld_f16};
    use std::arch::x86_64::*;
    let nb = n / QK_K;
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let m3 = _mm256_set1_epi8(3);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm256_setzero_ps();
    for i in 0..nb {
        let bw = wp.add(i * 84);
        let ba = ap.add(i * 292);
        let yd = ba.cast::<f32>().read_unaligned();
        let d = yd * ld_f16(bw.add(80));
        let dmin = -yd * ld_f16(bw.add(82));
        let sc_bytes: [u8; 16] = std::ptr::read_unaligned(bw.cast());
        let mins = _mm_and_si128(_mm_srli_epi16::<4>(ld128(bw)), _mm_set1_epi8(0xF));
        let prod = _mm256_madd_epi16(_mm256_cvtepu8_epi16(mins), ld256(ba.add(260)));
        acc_m = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc_m);
        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            let q2bits = ld256(bw.add(16 + 32 * h));
            for j in 0..4 {
                let q2 = _mm256_and_si256(
                    _mm256_srl_epi16(q2bits, _mm_cvtsi32_si128(2 * j as i32)),
                    m3,
                );
                let q8 = ld256(ba.add(4 + 128 * h + 32 * j));
                let s = 8 * h + 2 * j;
                let scale = _mm256_set_m128i(
                    _mm_set1_epi16((sc_bytes[s + 1] & 0xF) as i16),
                    _mm_set1_epi16((sc_bytes[s] & 0xF) as i16),
                );
                let p = _mm256_madd_epi16(scale, _mm256_maddubs_epi16(q2, q8));
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(_mm256_add_ps(acc, acc_m))
}
