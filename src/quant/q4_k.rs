//! Q4_K: super-blocks of 256 = 8 sub-blocks of 32 with 6-bit scales and minimums;
//! x = d * sc * q - dmin * m. Byte l of each 32-byte chunk c holds element 64c + l (low nibble)
//! and element 64c + 32 + l (high nibble).

use super::q8_k::BlockQ8K;
use super::{f16_to_f32, f32_to_f16, nearest_int, Block, QK_K};

/// ggml's `block_q4_K`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
// SAFETY: repr(C), byte arrays only.
unsafe impl Block for BlockQ4K {}

/// ggml's `get_scale_min_k4`: the 6-bit scale and minimum of sub-block `j` (0..8).
#[inline(always)]
pub(super) fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs 8 six-bit scales and minimums the way `scale_min_k4` reads them.
pub(super) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

pub(super) fn dequantize(src: &[BlockQ4K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let min = f16_to_f32(b.dmin);
        for c in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * c, &b.scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, &b.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let q = &b.qs[32 * c..32 * c + 32];
            for l in 0..32 {
                y[64 * c + l] = d1 * (q[l] & 0xF) as f32 - m1;
                y[64 * c + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// ggml's `make_qkx2_quants`: fits x ~ scale * L - min with L in [0, nmax], minimizing the
/// weighted error over a small search of scales. Returns (scale, min) with min >= 0.
#[allow(clippy::too_many_arguments)]
pub(super) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = min.min(x[i]);
        max = max.max(x[i]);
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        best_error += weights[i] * err(scale * l as f32 + min - x[i]);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let dd = sum_w * sum_l2 - sum_l * sum_l;
        if dd > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / dd;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / dd;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                cur_error += weights[i] * err(this_scale * laux[i] as f32 + this_min - x[i]);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The shared body of quantize_row_q4_K_ref / quantize_row_q5_K_ref: per-sub-block scales and
/// mins quantized to 6 bits, then each element requantized against them. Returns
/// (d, dmin, packed scales, L) with L in [0, nmax].
pub(super) fn quantize_k_scale_min(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> ([u8; 2], [u8; 2], [u8; 12], [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().map(|v| v * v).sum();
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut w = [0f32; 32];
        for (w, v) in w.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &w,
            &mut l[32 * j..32 * j + 32],
            rmin,
            rdelta,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        max_scale = max_scale.max(s);
        max_min = max_min.max(m);
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = nearest_int(inv_scale * scales[j]).clamp(0, 63) as u8;
        lm[j] = nearest_int(inv_min * mins[j]).clamp(0, 63) as u8;
    }
    let packed = pack_scale_min_k4(&ls, &lm);
    let d = f32_to_f16(max_scale / 63.0);
    let dmin = f32_to_f16(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dd = f16_to_f32(d) * sc as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = f16_to_f32(dmin) * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dd).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, l)
}

/// quantize_row_q4_K_ref.
pub(super) fn quantize(src: &[f32], dst: &mut [BlockQ4K]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let (d, dmin, scales, l) = quantize_k_scale_min(x, 15, -1.0, 0.1, 20);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        for c in 0..4 {
            for i in 0..32 {
                b.qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
            }
        }
    }
}

/// Sum of `a[i] * q(i)` over a 32-element sub-block.
#[inline(always)]
pub(super) fn sub_dot(a: &[i8], q: impl Fn(usize) -> i32) -> i32 {
    (0..a.len()).map(|i| a[i] as i32 * q(i)).sum()
}

pub(super) fn vec_dot_ref(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (mut sumi, mut summ) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &x.scales);
            let c = j / 2;
            let shift = 4 * (j % 2);
            let ya = &y.qs[32 * j..32 * j + 32];
            sumi += sc as i32 * sub_dot(ya, |i| ((x.qs[32 * c + i] >> shift) & 0xF) as i32);
            summ += m as i32 * ya.iter().map(|&v| v as i32).sum::<i32>();
        }
        s += y.d() * f16_to_f32(x.d) * sumi as f32 - y.d() * f16_to_f32(x.dmin) * summ as f32;
    }
    s
}

/// Unpacks the 12 packed scale bytes into [sc0..sc7, m0..m7] (ggml's utmp shuffle).
#[inline(always)]
pub(super) fn unpack_scales_mins(s: &[u8; 12]) -> [u8; 16] {
    const K1: u32 = 0x3f3f_3f3f;
    const K2: u32 = 0x0f0f_0f0f;
    const K3: u32 = 0x0303_0303;
    let u0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let u1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let u2 = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let sc_hi = (u2 & K2) | (((u0 >> 6) & K3) << 4);
    let m_hi = ((u2 >> 4) & K2) | (((u1 >> 6) & K3) << 4);
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&(u0 & K1).to_le_bytes());
    out[4..8].copy_from_slice(&sc_hi.to_le_bytes());
    out[8..12].copy_from_slice(&(u1 & K1).to_le_bytes());
    out[12..16].copy_from_slice(&m_hi.to_le_bytes());
    out
}

/// AVX2 Q4_K x Q8_K: nibbles times int8 with maddubs, scaled per sub-block with madd; the
/// minimums are applied once per block from Q8_K's bsums.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` holds `n / 256` Q4_K blocks, `a` as many Q8_K.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_avx2(w: &[u8], a: &[u8], n: usize) -> f32 {
    use super::simd::{hsum_ps, hsum_ps128, ld256, ld_f16};
    use std::arch::x86_64::*;
    let wb: &[BlockQ4K] = super::as_blocks(w);
    let nb = n / QK_K;
    let ap = a.as_ptr();
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (i, x) in wb.iter().enumerate().take(nb) {
        let ba = ap.add(i * 292);
        let yd = ba.cast::<f32>().read_unaligned();
        let bw = x as *const BlockQ4K as *const u8;
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
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let q4bits = ld256(bw.add(16 + 32 * j));
            let q4l = _mm256_and_si256(q4bits, m4);
            let q4h = _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits), m4);
            let q8l = ld256(ba.add(4 + 64 * j));
            let q8h = ld256(ba.add(36 + 64 * j));
            let pl = _mm256_madd_epi16(
                _mm256_set1_epi16(sm[2 * j] as i16),
                _mm256_maddubs_epi16(q4l, q8l),
            );
            let ph = _mm256_madd_epi16(
                _mm256_set1_epi16(sm[2 * j + 1] as i16),
                _mm256_maddubs_epi16(q4h, q8h),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) + hsum_ps128(acc_m)
}

/// AVX2: one Q4_K weight row with 4 Q8_K activation rows (prefill); nibbles and scales are
/// unpacked once per block and shared by the 4 tokens.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` holds `n / 256` Q4_K blocks, each `a[k]` as many
/// Q8_K blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_x4_avx2(w: &[u8], a: [&[u8]; 4], n: usize) -> [f32; 4] {
    use super::simd::{hsum_ps, hsum_ps128, ld256, ld_f16};
    use std::arch::x86_64::*;
    let wb: &[BlockQ4K] = super::as_blocks(w);
    let nb = n / QK_K;
    let ap = [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()];
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut acc_m = [_mm_setzero_ps(); 4];
    for (i, x) in wb.iter().enumerate().take(nb) {
        let bw = x as *const BlockQ4K as *const u8;
        let dw = ld_f16(bw);
        let dminw = ld_f16(bw.add(2));
        let sm = unpack_scales_mins(&x.scales);
        let mins = _mm_cvtepu8_epi16(_mm_loadu_si128(sm.as_ptr().add(8).cast()));
        let mut sumi = [_mm256_setzero_si256(); 4];
        for j in 0..4 {
            let q4bits = ld256(bw.add(16 + 32 * j));
            let q4l = _mm256_and_si256(q4bits, m4);
            let q4h = _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits), m4);
            let sl = _mm256_set1_epi16(sm[2 * j] as i16);
            let sh = _mm256_set1_epi16(sm[2 * j + 1] as i16);
            for k in 0..4 {
                let ba = ap[k].add(i * 292);
                let pl =
                    _mm256_madd_epi16(sl, _mm256_maddubs_epi16(q4l, ld256(ba.add(4 + 64 * j))));
                let ph =
                    _mm256_madd_epi16(sh, _mm256_maddubs_epi16(q4h, ld256(ba.add(36 + 64 * j))));
                sumi[k] = _mm256_add_epi32(sumi[k], _mm256_add_epi32(pl, ph));
            }
        }
        for k in 0..4 {
            let ba = ap[k].add(i * 292);
            let yd = ba.cast::<f32>().read_unaligned();
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(yd * dw), _mm256_cvtepi32_ps(sumi[k]), acc[k]);
            let q8sums = ld256(ba.add(260));
            let q8s = _mm_hadd_epi16(
                _mm256_castsi256_si128(q8sums),
                _mm256_extracti128_si256::<1>(q8sums),
            );
            let prod = _mm_cvtepi32_ps(_mm_madd_epi16(mins, q8s));
            acc_m[k] = _mm_fmadd_ps(_mm_set1_ps(-yd * dminw), prod, acc_m[k]);
        }
    }
    let mut out = [0f32; 4];
    for k in 0..4 {
        out[k] = hsum_ps(acc[k]) + hsum_ps128(acc_m[k]);
    }
    out
}
