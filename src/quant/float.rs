//! The float "formats": F32, F16 (IEEE half) and BF16, dotted against f32 activations.

fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

pub(super) fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32_at(s);
    }
}

pub(super) fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = super::f16_to_f32([s[0], s[1]]);
    }
}

pub(super) fn bf16_to_f32(s: [u8; 2]) -> f32 {
    f32::from_bits((u16::from_le_bytes(s) as u32) << 16)
}

pub(super) fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = bf16_to_f32([s[0], s[1]]);
    }
}

pub(super) fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(4)) {
        d.copy_from_slice(&s.to_le_bytes());
    }
}

pub(super) fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&super::f32_to_f16(*s));
    }
}

/// ggml_compute_fp32_to_bf16: NaN made quiet, otherwise round to nearest even.
pub(super) fn quantize_bf16(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        let u = s.to_bits();
        let h = if (u & 0x7fff_ffff) > 0x7f80_0000 {
            ((u >> 16) | 64) as u16
        } else {
            ((u as u64 + (0x7fff + ((u >> 16) & 1)) as u64) >> 16) as u16
        };
        d.copy_from_slice(&h.to_le_bytes());
    }
}

pub(super) fn vec_dot_f32_ref(w: &[u8], a: &[u8], _n: usize) -> f32 {
    let mut s = 0f64;
    for (x, y) in w.chunks_exact(4).zip(a.chunks_exact(4)) {
        s += f32_at(x) as f64 * f32_at(y) as f64;
    }
    s as f32
}

pub(super) fn vec_dot_f16_ref(w: &[u8], a: &[u8], _n: usize) -> f32 {
    let mut s = 0f64;
    for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(4)) {
        s += super::f16_to_f32([x[0], x[1]]) as f64 * f32_at(y) as f64;
    }
    s as f32
}

pub(super) fn vec_dot_bf16_ref(w: &[u8], a: &[u8], _n: usize) -> f32 {
    let mut s = 0f64;
    for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(4)) {
        s += bf16_to_f32([x[0], x[1]]) as f64 * f32_at(y) as f64;
    }
    s as f32
}

/// AVX2 F32 x F32: four accumulators of 8, scalar tail.
///
/// # Safety
/// AVX2 and FMA must be available; `w` and `a` hold `n` f32 each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_f32_avx2(w: &[u8], a: &[u8], n: usize) -> f32 {
    use std::arch::x86_64::*;
    let (wp, ap) = (w.as_ptr().cast::<f32>(), a.as_ptr().cast::<f32>());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(wp.add(i + 8 * k));
            let y = _mm256_loadu_ps(ap.add(i + 8 * k));
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(wp.add(i)),
            _mm256_loadu_ps(ap.add(i)),
            acc[0],
        );
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = super::simd::hsum_ps(s);
    while i < n {
        sum += wp.add(i).read_unaligned() * ap.add(i).read_unaligned();
        i += 1;
    }
    sum
}

/// AVX2 F16 x F32 (F16C conversion): four accumulators of 8, scalar tail.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` holds `n` f16, `a` `n` f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_f16_avx2(w: &[u8], a: &[u8], n: usize) -> f32 {
    use std::arch::x86_64::*;
    let (wp, ap) = (w.as_ptr(), a.as_ptr().cast::<f32>());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    macro_rules! ld {
        ($i:expr) => {
            _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * $i).cast()))
        };
    }
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let y = _mm256_loadu_ps(ap.add(i + 8 * k));
            *acc = _mm256_fmadd_ps(ld!(i + 8 * k), y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(ld!(i), _mm256_loadu_ps(ap.add(i)), acc[0]);
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = super::simd::hsum_ps(s);
    while i < n {
        sum += super::f16_to_f32([*wp.add(2 * i), *wp.add(2 * i + 1)]) * ap.add(i).read_unaligned();
        i += 1;
    }
    sum
}

/// AVX2 BF16 x F32 (bf16 -> f32 is a 16-bit shift): two accumulators of 8, scalar tail.
///
/// # Safety
/// AVX2 and FMA must be available; `w` holds `n` bf16, `a` `n` f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn vec_dot_bf16_avx2(w: &[u8], a: &[u8], n: usize) -> f32 {
    use std::arch::x86_64::*;
    let (wp, ap) = (w.as_ptr(), a.as_ptr().cast::<f32>());
    macro_rules! ld {
        ($i:expr) => {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                _mm_loadu_si128(wp.add(2 * $i).cast()),
            )))
        };
    }
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        acc0 = _mm256_fmadd_ps(ld!(i), _mm256_loadu_ps(ap.add(i)), acc0);
        acc1 = _mm256_fmadd_ps(ld!(i + 8), _mm256_loadu_ps(ap.add(i + 8)), acc1);
        i += 16;
    }
    while i + 8 <= n {
        acc0 = _mm256_fmadd_ps(ld!(i), _mm256_loadu_ps(ap.add(i)), acc0);
        i += 8;
    }
    let mut sum = super::simd::hsum_ps(_mm256_add_ps(acc0, acc1));
    while i < n {
        sum += bf16_to_f32([*wp.add(2 * i), *wp.add(2 * i + 1)]) * ap.add(i).read_unaligned();
        i += 1;
    }
    sum
}
