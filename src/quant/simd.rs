//! AVX2 + FMA + F16C helpers and the run-time kernel choice. The kernels themselves live in
//! each block family's file (`vec_dot_avx2` beside `vec_dot_ref`).

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::{Dot4Fn, DotFn, GgmlType};

/// Whether this CPU has AVX2, FMA and F16C (checked once).
pub(crate) fn has_avx2() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// Declares a safe `DotFn` wrapper around an AVX2 kernel. The wrapper is only handed out by
/// [`kernel`] after [`has_avx2`] returned true, and the caller has checked the lengths.
macro_rules! avx2_dot {
    ($name:ident, $kernel:path) => {
        fn $name(w: &[u8], a: &[u8], n: usize) -> f32 {
            // SAFETY: only reachable through `kernel`, which checks the CPU features first;
            // the slice lengths match `n` (checked by vec_dot / matmul).
            unsafe { $kernel(w, a, n) }
        }
    };
}

avx2_dot!(dot_f32, super::float::vec_dot_f32_avx2);
avx2_dot!(dot_f16, super::float::vec_dot_f16_avx2);
avx2_dot!(dot_bf16, super::float::vec_dot_bf16_avx2);
avx2_dot!(dot_q4_0, super::q4::vec_dot_q4_0_avx2);
avx2_dot!(dot_q4_1, super::q4::vec_dot_q4_1_avx2);
avx2_dot!(dot_q5_1, super::q5::vec_dot_q5_1_avx2);
avx2_dot!(dot_q5_0, super::q5::vec_dot_q5_0_avx2);
avx2_dot!(dot_q8_0, super::q8::vec_dot_q8_0_avx2);
avx2_dot!(dot_q2_k, super::q2_k::vec_dot_avx2);
avx2_dot!(dot_q3_k, super::q3_k::vec_dot_avx2);
avx2_dot!(dot_q4_k, super::q4_k::vec_dot_avx2);
avx2_dot!(dot_q5_k, super::q5_k::vec_dot_avx2);
avx2_dot!(dot_q6_k, super::q6_k::vec_dot_avx2);

/// The AVX2 kernel for `ty`, when this CPU has AVX2, FMA and F16C and one exists.
pub(crate) fn kernel(ty: GgmlType) -> Option<DotFn> {
    if !has_avx2() {
        return None;
    }
    Some(match ty {
        GgmlType::F32 => dot_f32,
        GgmlType::F16 => dot_f16,
        GgmlType::BF16 => dot_bf16,
        GgmlType::Q4_0 => dot_q4_0,
        GgmlType::Q4_1 => dot_q4_1,
        GgmlType::Q5_1 => dot_q5_1,
        GgmlType::Q5_0 => dot_q5_0,
        GgmlType::Q8_0 => dot_q8_0,
        GgmlType::Q2K => dot_q2_k,
        GgmlType::Q3K => dot_q3_k,
        GgmlType::Q4K => dot_q4_k,
        GgmlType::Q5K => dot_q5_k,
        GgmlType::Q6K => dot_q6_k,
        _ => return None,
    })
}

macro_rules! avx2_dot4 {
    ($name:ident, $kernel:path) => {
        fn $name(w: &[u8], a: [&[u8]; 4], n: usize) -> [f32; 4] {
            // SAFETY: only reachable through `kernel_x4`, which checks the CPU features first;
            // every slice length matches `n` (checked by matmul).
            unsafe { $kernel(w, a, n) }
        }
    };
}

avx2_dot4!(dot4_q4_0, super::q4::vec_dot_q4_0_x4_avx2);
avx2_dot4!(dot4_q5_0, super::q5::vec_dot_q5_0_x4_avx2);
avx2_dot4!(dot4_q8_0, super::q8::vec_dot_q8_0_x4_avx2);
avx2_dot4!(dot4_q4_k, super::q4_k::vec_dot_x4_avx2);
avx2_dot4!(dot4_q6_k, super::q6_k::vec_dot_x4_avx2);

/// The AVX2 4-token kernel for `ty`, where one exists and the CPU has the features.
pub(crate) fn kernel_x4(ty: GgmlType) -> Option<Dot4Fn> {
    if !has_avx2() {
        return None;
    }
    Some(match ty {
        GgmlType::Q4_0 => dot4_q4_0,
        GgmlType::Q5_0 => dot4_q5_0,
        GgmlType::Q8_0 => dot4_q8_0,
        GgmlType::Q4K => dot4_q4_k,
        GgmlType::Q6K => dot4_q6_k,
        _ => return None,
    })
}

/// The body of a one-weight-row x 4-activation-rows kernel for the 32-element formats dotted
/// with Q8_0: `|bw| unpack` (bw: the block's pointer; expanded inline, not a closure) gives (weight scale, 32 signed quants); the unsigned/sign
/// split of the weights is done once per block and shared by the 4 tokens.
macro_rules! dot4_q8_0_family {
    ($w:expr, $a:expr, $n:expr, $wbytes:expr, |$bw:ident| $unpack:expr) => {{
        use std::arch::x86_64::*;
        use $crate::quant::simd::{hsum_ps, ld256, ld_f16};
        let nb = $n / 32;
        let wp = $w.as_ptr();
        let ap = [
            $a[0].as_ptr(),
            $a[1].as_ptr(),
            $a[2].as_ptr(),
            $a[3].as_ptr(),
        ];
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in 0..nb {
            let $bw = wp.add(i * $wbytes);
            let (dw, qx): (f32, __m256i) = $unpack;
            let ax = _mm256_sign_epi8(qx, qx);
            // The 4 activation scales converted together, times the weight scale.
            let h0 = ap[0].add(i * 34).cast::<u16>().read_unaligned() as u64;
            let h1 = ap[1].add(i * 34).cast::<u16>().read_unaligned() as u64;
            let h2 = ap[2].add(i * 34).cast::<u16>().read_unaligned() as u64;
            let h3 = ap[3].add(i * 34).cast::<u16>().read_unaligned() as u64;
            let packed = h0 | (h1 << 16) | (h2 << 32) | (h3 << 48);
            let dd = _mm_mul_ps(
                _mm_cvtph_ps(_mm_cvtsi64_si128(packed as i64)),
                _mm_set1_ps(dw),
            );
            macro_rules! token {
                ($k:expr, $lane:expr) => {{
                    let sy = _mm256_sign_epi8(ld256(ap[$k].add(i * 34 + 2)), qx);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
                    let d = _mm256_broadcastss_ps(_mm_permute_ps::<$lane>(dd));
                    acc[$k] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[$k]);
                }};
            }
            token!(0, 0);
            token!(1, 1);
            token!(2, 2);
            token!(3, 3);
        }
        [
            hsum_ps(acc[0]),
            hsum_ps(acc[1]),
            hsum_ps(acc[2]),
            hsum_ps(acc[3]),
        ]
    }};
}
pub(crate) use dot4_q8_0_family;

/// Horizontal sum of 8 floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Horizontal sum of 4 floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn hsum_ps128(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The f16 at `p` (unaligned) as f32, with F16C.
///
/// # Safety
/// `p` must be readable for 2 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn ld_f16(p: *const u8) -> f32 {
    let h = p.cast::<u16>().read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// 32 bytes at `p`, unaligned.
///
/// # Safety
/// `p` must be readable for 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn ld256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p.cast())
}

/// 16 bytes at `p`, unaligned.
///
/// # Safety
/// `p` must be readable for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn ld128(p: *const u8) -> __m128i {
    _mm_loadu_si128(p.cast())
}

/// Sums of adjacent products of signed bytes x*y, as 8 i32 (ggml's mul_sum_i8_pairs; exact
/// unless both bytes of a pair are -128).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn mul_sum_i8_pairs(x: __m256i, y: __m256i) -> __m256i {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    let dot = _mm256_maddubs_epi16(ax, sy);
    _mm256_madd_epi16(dot, _mm256_set1_epi16(1))
}

/// 16 bytes of nibbles -> 32 bytes: the low nibbles first, then the high nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn nibbles_32(tmp: __m128i) -> __m256i {
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(tmp), tmp);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// 32 bits -> 32 bytes, 0xFF where the bit is set (bit i -> byte i).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn bits_32(x: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}
