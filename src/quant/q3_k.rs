//! Q3_K: super-blocks of 256 = 16 sub-blocks of 16 with 6-bit signed scales (offset 32);
//! x = d * (sc - 32) * (q - 4 * !hbit). Element 128n + 32j + l: low 2 bits at bits 2j of
//! qs[32n + l], high bit at bit 4n + j of hmask[l], scale index 8n + 2j + l/16.

use super::q8_k::BlockQ8K;
use super::{f16_to_f32, Block, QK_K};

/// ggml's `block_q3_K`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);
// SAFETY: repr(C), byte arrays only.
unsafe impl Block for BlockQ3K {}

/// The 16 signed scales (sc - 32) packed as 4 low bits in bytes 0..8 and 2 high bits in 8..12.
fn scales(b: &BlockQ3K) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = (b.scales[i % 8] >> (4 * (i / 8))) & 0xF;
        let high = (b.scales[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = (low | (high << 4)) as i32 - 32;
    }
    out
}

/// (signed quant in [-4, 3], scale index) of element `e`.
#[inline(always)]
fn q3(b: &BlockQ3K, e: usize) -> (i32, usize) {
    let (n, j, l) = (e / 128, (e % 128) / 32, e % 32);
    let low = ((b.qs[32 * n + l] >> (2 * j)) & 3) as i32;
    let hbit = (b.hmask[l] >> (4 * n + j)) & 1;
    (low - if hbit != 0 { 0 } else { 4 }, 8 * n + 2 * j + l / 16)
}

pub(super) fn dequantize(src: &[BlockQ3K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let sc = scales(b);
        for (e, y) in y.iter_mut().enumerate() {
            let (q, is) = q3(b, e);
            *y = (d * sc[is] as f32) * q as f32;
        }
    }
}

pub(super) fn vec_dot_ref(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sc = scales(x);
        let mut sumi = 0i32;
        for e in 0..QK_K {
            let (q, is) = q3(x, e);
            sumi += sc[is] * q * y.qs[e] as i32;
        }
        s += y.d() * f16_to_f32(x.d) * sumi as f32;
    }
    s
}

/// AVX2 Q3_K x Q8_K: q = low2 - 4 * !hbit taken as maddubs(low2, a) - maddubs(4 * !hbit, a),
/// signed 6-bit scales per 16 with madd.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` holds `n / 256` Q3_K blocks, `a` as many Q8_K.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_avx2(w: &[u8], a: &[u8], n: usize) -> f32 {
    use super::simd::{hsum_ps, ld256, ld_f16};
    use std::arch::x86_64::*;
    let wb: &[BlockQ3K] = super::as_blocks(w);
    let nb = n / QK_K;
    let ap = a.as_ptr();
    let m3 = _mm256_set1_epi8(3);
    let one = _mm256_set1_epi8(1);
    let mut acc = _mm256_setzero_ps();
    for (i, x) in wb.iter().enumerate().take(nb) {
        let bw = x as *const BlockQ3K as *const u8;
        let ba = ap.add(i * 292);
        let d = ba.cast::<f32>().read_unaligned() * ld_f16(bw.add(108));
        let sc = scales(x);
        let hbits = ld256(bw);
        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            let q2bits = ld256(bw.add(32 + 32 * h));
            for j in 0..4 {
                let cnt = _mm_cvtsi32_si128(2 * j as i32);
                let q2 = _mm256_and_si256(_mm256_srl_epi16(q2bits, cnt), m3);
                let hb = _mm256_and_si256(
                    _mm256_srl_epi16(hbits, _mm_cvtsi32_si128((4 * h + j) as i32)),
                    one,
                );
                let hsub = _mm256_slli_epi16::<2>(_mm256_xor_si256(hb, one));
                let q8 = ld256(ba.add(4 + 128 * h + 32 * j));
                let p16 =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(q2, q8), _mm256_maddubs_epi16(hsub, q8));
                let s = 8 * h + 2 * j;
                let scale = _mm256_set_m128i(
                    _mm_set1_epi16(sc[s + 1] as i16),
                    _mm_set1_epi16(sc[s] as i16),
                );
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, p16));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}
