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
