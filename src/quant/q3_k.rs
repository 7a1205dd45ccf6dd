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
