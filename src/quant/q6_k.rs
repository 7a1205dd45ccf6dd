//! Q6_K: super-blocks of 256 = 16 sub-blocks of 16 with int8 scales; x = d * sc * (q - 32).
//! In half h (128 elements), group g (32 elements): low 4 bits from ql[64h + 32(g%2) + l]
//! (low nibble for g < 2, high otherwise), high 2 bits from qh[32h + l] >> 2g.

use super::q8_k::BlockQ8K;
use super::{f16_to_f32, f32_to_f16, nearest_int, Block, QK_K};

/// ggml's `block_q6_K`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
// SAFETY: repr(C), byte arrays only.
unsafe impl Block for BlockQ6K {}

/// Unsigned quant (0..64) of element `e` (0..256).
#[inline(always)]
fn q6(b: &BlockQ6K, e: usize) -> i32 {
    let (h, g, l) = (e / 128, (e % 128) / 32, e % 32);
    let low = (b.ql[64 * h + 32 * (g % 2) + l] >> (4 * (g / 2))) & 0xF;
    let high = (b.qh[32 * h + l] >> (2 * g)) & 3;
    (low | (high << 4)) as i32
}

pub(super) fn dequantize(src: &[BlockQ6K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        for (e, y) in y.iter_mut().enumerate() {
            *y = d * b.scales[e / 16] as f32 * (q6(b, e) - 32) as f32;
        }
    }
}

/// ggml's `make_qx_quants` with rmse_type 1 and no importance weights (w = x^2): fits
/// x ~ scale * l with l in [-nmax, nmax - 1]; writes l + nmax to `lq`, returns the scale.
pub(super) fn make_qx_quants(nmax: i32, x: &[f32], lq: &mut [u8]) -> f32 {
    let max = super::q4::signed_absmax(x);
    if max.abs() < 1e-15 {
        lq.fill(0);
        return 0.0;
    }
    let fit = |iscale: f32, lq: Option<&mut [u8]>| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        let mut ls = [0i32; 16];
        for (i, &v) in x.iter().enumerate() {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            ls[i] = l;
            let w = v * v;
            sumlx += w * v * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if let Some(lq) = lq {
            for (q, l) in lq.iter_mut().zip(ls) {
                *q = (l + nmax) as u8;
            }
        }
        (sumlx, suml2)
    };
    let iscale = -(nmax as f32) / max;
    let (sumlx, suml2) = fit(iscale, Some(&mut *lq));
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = fit(iscale, None);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            fit(iscale, Some(&mut *lq));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// quantize_row_q6_K_ref.
pub(super) fn quantize(src: &[f32], dst: &mut [BlockQ6K]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ib in 0..16 {
            let s = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < 1e-15 {
            *b = BlockQ6K {
                ql: [0; 128],
                qh: [0; 64],
                scales: [0; 16],
                d: f32_to_f16(0.0),
            };
            continue;
        }
        let iscale = -128.0 / max_scale;
        b.d = f32_to_f16(1.0 / iscale);
        for (sc, s) in b.scales.iter_mut().zip(scales) {
            *sc = nearest_int(iscale * s).clamp(-128, 127) as i8;
        }
        for j in 0..16 {
            let d = f16_to_f32(b.d) * b.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as u8;
            }
        }
        for h in 0..2 {
            for i in 0..32 {
                let e = 128 * h + i;
                b.ql[64 * h + i] = (l[e] & 0xF) | ((l[e + 64] & 0xF) << 4);
                b.ql[64 * h + 32 + i] = (l[e + 32] & 0xF) | ((l[e + 96] & 0xF) << 4);
                b.qh[32 * h + i] = (l[e] >> 4)
                    | ((l[e + 32] >> 4) << 2)
                    | ((l[e + 64] >> 4) << 4)
                    | ((l[e + 96] >> 4) << 6);
            }
        }
    }
}

pub(super) fn vec_dot_ref(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let sub: i32 = (16 * j..16 * j + 16)
                .map(|e| (q6(x, e) - 32) * y.qs[e] as i32)
                .sum();
            sumi += x.scales[j] as i32 * sub;
        }
        s += y.d() * f16_to_f32(x.d) * sumi as f32;
    }
    s
}

/// AVX2 Q6_K x Q8_K: unsigned 6-bit quants times int8 with maddubs, scaled per 16 with madd;
/// the -32 offset is applied once per block as 32 * sum(sc * bsums).
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` holds `n / 256` Q6_K blocks, `a` as many Q8_K.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_avx2(w: &[u8], a: &[u8], n: usize) -> f32 {
    use super::simd::{hsum_ps, ld128, ld256, ld_f16};
    use std::arch::x86_64::*;
    let nb = n / QK_K;
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let m4 = _mm256_set1_epi8(0xF);
    let m2 = _mm256_set1_epi8(3);
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let bw = wp.add(i * 210);
        let ba = ap.add(i * 292);
        let d = ba.cast::<f32>().read_unaligned() * ld_f16(bw.add(208));
        let sc: [i8; 16] = std::ptr::read_unaligned(bw.add(192).cast());
        let scales16 = _mm256_cvtepi8_epi16(ld128(bw.add(192)));
        let corr = _mm256_madd_epi16(scales16, ld256(ba.add(260)));
        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            let b1 = ld256(bw.add(64 * h));
            let b2 = ld256(bw.add(64 * h + 32));
            let bh = ld256(bw.add(128 + 32 * h));
            let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(bh, m2));
            let h1 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(bh), m2));
            let h2 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(bh), m2));
            let h3 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(bh), m2));
            let q = [
                _mm256_or_si256(_mm256_and_si256(b1, m4), h0),
                _mm256_or_si256(_mm256_and_si256(b2, m4), h1),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(b1), m4), h2),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(b2), m4), h3),
            ];
            for (g, q) in q.into_iter().enumerate() {
                let q8 = ld256(ba.add(4 + 128 * h + 32 * g));
                let s = 8 * h + 2 * g;
                let scale = _mm256_set_m128i(
                    _mm_set1_epi16(sc[s + 1] as i16),
                    _mm_set1_epi16(sc[s] as i16),
                );
                let p = _mm256_madd_epi16(scale, _mm256_maddubs_epi16(q, q8));
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        let sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32::<5>(corr));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

/// AVX2: one Q6_K weight row with 4 Q8_K activation rows (prefill); the 6-bit quants are
/// unpacked once per block half and shared by the 4 tokens.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` holds `n / 256` Q6_K blocks, each `a[k]` as many
/// Q8_K blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_x4_avx2(w: &[u8], a: [&[u8]; 4], n: usize) -> [f32; 4] {
    use super::simd::{hsum_ps, ld128, ld256, ld_f16};
    use std::arch::x86_64::*;
    let nb = n / QK_K;
    let wp = w.as_ptr();
    let ap = [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()];
    let m4 = _mm256_set1_epi8(0xF);
    let m2 = _mm256_set1_epi8(3);
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in 0..nb {
        let bw = wp.add(i * 210);
        let dw = ld_f16(bw.add(208));
        let sc: [i8; 16] = std::ptr::read_unaligned(bw.add(192).cast());
        let scales16 = _mm256_cvtepi8_epi16(ld128(bw.add(192)));
        let mut sumi = [_mm256_setzero_si256(); 4];
        for h in 0..2 {
            let b1 = ld256(bw.add(64 * h));
            let b2 = ld256(bw.add(64 * h + 32));
            let bh = ld256(bw.add(128 + 32 * h));
            let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(bh, m2));
            let h1 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(bh), m2));
            let h2 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(bh), m2));
            let h3 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(bh), m2));
            let q = [
                _mm256_or_si256(_mm256_and_si256(b1, m4), h0),
                _mm256_or_si256(_mm256_and_si256(b2, m4), h1),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(b1), m4), h2),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(b2), m4), h3),
            ];
            for (g, q) in q.into_iter().enumerate() {
                let s = 8 * h + 2 * g;
                let scale = _mm256_set_m128i(
                    _mm_set1_epi16(sc[s + 1] as i16),
                    _mm_set1_epi16(sc[s] as i16),
                );
                for k in 0..4 {
                    let q8 = ld256(ap[k].add(i * 292 + 4 + 128 * h + 32 * g));
                    let p = _mm256_madd_epi16(scale, _mm256_maddubs_epi16(q, q8));
                    sumi[k] = _mm256_add_epi32(sumi[k], p);
                }
            }
        }
        for k in 0..4 {
            let ba = ap[k].add(i * 292);
            let corr = _mm256_madd_epi16(scales16, ld256(ba.add(260)));
            let s = _mm256_sub_epi32(sumi[k], _mm256_slli_epi32::<5>(corr));
            let d = ba.cast::<f32>().read_unaligned() * dw;
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc[k]);
        }
    }
    [
        hsum_ps(acc[0]),
        hsum_ps(acc[1]),
        hsum_ps(acc[2]),
        hsum_ps(acc[3]),
    ]
}
