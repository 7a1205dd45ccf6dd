//! Q8_K: the activation format for the k-quants. 256 int8 quants, an f32 scale and the sums
//! of each group of 16 quants (`bsums`, used to apply the k-quants' minimums cheaply).

use super::{nearest_int, Block, QK_K};

/// ggml's `block_q8_K` (f32 `d`, `int16 bsums[16]`, stored little-endian).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: [u8; 4],
    pub qs: [i8; QK_K],
    pub bsums: [u8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);
// SAFETY: repr(C), byte arrays only.
unsafe impl Block for BlockQ8K {}

impl BlockQ8K {
    #[inline(always)]
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }
}

pub(super) fn dequantize(src: &[BlockQ8K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = b.d();
        for (y, q) in y.iter_mut().zip(b.qs) {
            *y = d * q as f32;
        }
    }
}

/// quantize_row_q8_K_ref: scale from the signed largest-magnitude element, q in [-127, 127].
pub(super) fn quantize(src: &[f32], dst: &mut [BlockQ8K]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let max = super::q4::signed_absmax(x);
        if max == 0.0 {
            *b = BlockQ8K {
                d: [0; 4],
                qs: [0; QK_K],
                bsums: [0; 32],
            };
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for j in 0..16 {
            let s: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum();
            b.bsums[2 * j..2 * j + 2].copy_from_slice(&(s as i16).to_le_bytes());
        }
        b.d = (1.0 / iscale).to_le_bytes();
    }
}

pub(super) fn vec_dot_ref(w: &[BlockQ8K], a: &[BlockQ8K]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi: i32 =
            x.qs.iter()
                .zip(y.qs)
                .map(|(&p, q)| p as i32 * q as i32)
                .sum();
        s += x.d() * y.d() * sumi as f32;
    }
    s
}
