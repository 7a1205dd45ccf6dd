//! Register-tiled prefill kernels (AVX2) for the weight types dotted with Q8_0 activations
//! (Q4_0, Q5_0, Q8_0).
//!
//! A prefill task owns a tile of weight rows. It unpacks their blocks once into signed int8
//! quants and f32 scales (a scratch buffer that stays in L1/L2), then walks the tokens in groups
//! of [`RN`] and the rows in groups of [`RM`]: for each block it loads `RM` weight blocks and
//! `RN` activation blocks and forms all `RM x RN` products in registers (`_mm256_maddubs_epi16`
//! on |w| and sign(w) * a, `_mm256_madd_epi16`, then one FMA by the product of the two scales),
//! so each unpacked weight block is loaded once per token group and each activation block once
//! per row group. The per-(row, token) arithmetic and its order are those of the 4-token
//! kernels (`dot4_q8_0_family`): 8 f32 lanes accumulated block by block, then one horizontal sum.

use std::arch::x86_64::*;

use super::simd::{bits_32, has_avx2, hsum_ps, ld128, ld256, ld_f16, nibbles_32};
use super::GgmlType;

/// Weight rows per register tile.
pub(super) const RM: usize = 2;
/// Tokens per register tile.
pub(super) const RN: usize = 4;

/// Bytes of one Q8_0 activation block.
const A_BLOCK: usize = 34;

/// Whether `ty` has a tiled prefill path on this CPU.
pub(super) fn supported(ty: GgmlType) -> bool {
    has_avx2() && matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0)
}

/// The unpacked weights of one task's rows: `q[(r * nb + i) * 32..][..32]` are block `i` of row
/// `r` as signed quants, `d[(r * nb + i) * 8..][..8]` its scale, broadcast (so the kernel
/// multiplies it with the activation scale as one vector product from memory).
#[derive(Default)]
pub(super) struct Scratch {
    q: Vec<i8>,
    d: Vec<f32>,
}

/// One task's share of a tiled matmul: the rows of `w` (whole rows of `wrb` bytes, `nb` blocks
/// of `ty` each) against all `n_tok` activation rows of `act` (Q8_0, `arb` bytes each; `ad` holds
/// their block scales as f32, `[n_tok * nb]`). Writes `out[t * ldo + r]` for each local row r.
///
/// # Safety
/// [`supported`]`(ty)` must be true; `w.len()` is a multiple of `wrb = nb * ty.block_bytes()`,
/// `act.len() >= n_tok * arb` with `arb = nb * 34`, `ad.len() >= n_tok * nb`, and `out` must be
/// valid for writes at `t * ldo + r` for every `t < n_tok` and local row `r`, with no other
/// thread touching those elements.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn run(
    ty: GgmlType,
    w: &[u8],
    wrb: usize,
    nb: usize,
    act: &[u8],
    arb: usize,
    ad: &[f32],
    n_tok: usize,
    out: *mut f32,
    ldo: usize,
    scratch: &mut Scratch,
) {
    let rows = w.len() / wrb;
    if scratch.q.len() < rows * nb * 32 {
        scratch.q.resize(rows * nb * 32, 0);
        scratch.d.resize(rows * nb * 8, 0.0);
    }
    unpack(ty, w, wrb, nb, &mut scratch.q, &mut scratch.d);
    let (q, d) = (scratch.q.as_ptr(), scratch.d.as_ptr());
    let (a, adp) = (act.as_ptr(), ad.as_ptr());
    let mut t0 = 0;
    while t0 < n_tok {
        let nt = (n_tok - t0).min(RN);
        let mut r0 = 0;
        while r0 < rows {
            let nr = (rows - r0).min(RM);
            let qp = q.add(r0 * nb * 32);
            let dp = d.add(r0 * nb * 8);
            let ap = a.add(t0 * arb);
            let adt = adp.add(t0 * nb);
            let op = out.add(t0 * ldo + r0);
            match (nr, nt) {
                (RM, RN) => tile::<RM, RN>(qp, dp, nb, ap, arb, adt, op, ldo),
                (1, RN) => tile::<1, RN>(qp, dp, nb, ap, arb, adt, op, ldo),
                (RM, 3) => tile::<RM, 3>(qp, dp, nb, ap, arb, adt, op, ldo),
                (RM, 2) => tile::<RM, 2>(qp, dp, nb, ap, arb, adt, op, ldo),
                (RM, 1) => tile::<RM, 1>(qp, dp, nb, ap, arb, adt, op, ldo),
                (1, 3) => tile::<1, 3>(qp, dp, nb, ap, arb, adt, op, ldo),
                (1, 2) => tile::<1, 2>(qp, dp, nb, ap, arb, adt, op, ldo),
                _ => {
                    // Any other tail shape (none with RM = 2, RN = 4): one product at a time.
                    for m in 0..nr {
                        for n in 0..nt {
                            tile::<1, 1>(
                                qp.add(m * nb * 32),
                                dp.add(m * nb * 8),
                                nb,
                                ap.add(n * arb),
                                arb,
                                adt.add(n * nb),
                                op.add(n * ldo + m),
                                ldo,
                            );
                        }
                    }
                }
            }
            r0 += nr;
        }
        t0 += nt;
    }
}

/// Unpacks every row of `w` into `q` / `d` (see [`Scratch`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack(ty: GgmlType, w: &[u8], wrb: usize, nb: usize, q: &mut [i8], d: &mut [f32]) {
    let rows = w.len() / wrb;
    let bb = ty.block_bytes();
    let (wp, qp, dp) = (w.as_ptr(), q.as_mut_ptr(), d.as_mut_ptr());
    for r in 0..rows {
        for i in 0..nb {
            let bw = wp.add(r * wrb + i * bb);
            let (s, qx) = match ty {
                GgmlType::Q4_0 => {
                    let q = nibbles_32(ld128(bw.add(2)));
                    (ld_f16(bw), _mm256_sub_epi8(q, _mm256_set1_epi8(8)))
                }
                GgmlType::Q5_0 => {
                    let qh = bw.add(2).cast::<u32>().read_unaligned();
                    let hi = _mm256_andnot_si256(bits_32(qh), _mm256_set1_epi8(0xF0u8 as i8));
                    (
                        ld_f16(bw),
                        _mm256_or_si256(nibbles_32(ld128(bw.add(6))), hi),
                    )
                }
                _ => (ld_f16(bw), ld256(bw.add(2))),
            };
            let k = r * nb + i;
            _mm256_storeu_si256(qp.add(k * 32).cast(), qx);
            _mm256_storeu_ps(dp.add(k * 8), _mm256_set1_ps(s));
        }
    }
}

/// `M` unpacked weight rows x `N` activation rows over all `nb` blocks; writes
/// `out[n * ldo + m]`.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const M: usize, const N: usize>(
    q: *const i8,
    d: *const f32,
    nb: usize,
    a: *const u8,
    arb: usize,
    ad: *const f32,
    out: *mut f32,
    ldo: usize,
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); N]; M];
    for i in 0..nb {
        // |w| in registers; w itself and the scales are re-read from the scratch (L1) by each
        // product, which keeps the M x N accumulators in registers.
        let mut ax = [_mm256_setzero_si256(); M];
        for m in 0..M {
            let qx = _mm256_loadu_si256(q.add((m * nb + i) * 32).cast());
            ax[m] = _mm256_sign_epi8(qx, qx);
        }
        for n in 0..N {
            let y = ld256(a.add(n * arb + i * A_BLOCK + 2));
            let da = _mm256_broadcast_ss(&*ad.add(n * nb + i));
            for m in 0..M {
                let qx = _mm256_loadu_si256(q.add((m * nb + i) * 32).cast());
                let sy = _mm256_sign_epi8(y, qx);
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax[m], sy), ones);
                let dd = _mm256_mul_ps(da, _mm256_loadu_ps(d.add((m * nb + i) * 8)));
                acc[m][n] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(p), acc[m][n]);
            }
        }
    }
    for m in 0..M {
        for n in 0..N {
            *out.add(n * ldo + m) = hsum_ps(acc[m][n]);
        }
    }
}
