//! Q5_K: as Q4_K with a fifth bit per element in `qh`: element 64c + l takes bit 2c of qh[l],
//! element 64c + 32 + l bit 2c + 1. x = d * sc * q - dmin * m, q in [0, 31].

use super::q4_k::{quantize_k_scale_min, scale_min_k4, sub_dot};
use super::q8_k::BlockQ8K;
use super::{f16_to_f32, Block, QK_K};

/// ggml's `block_q5_K`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
// SAFETY: repr(C), byte arrays only.
unsafe impl Block for BlockQ5K {}

/// Quant of element `32 * j + i` (sub-block j in 0..8, i in 0..32).
#[inline(always)]
fn q5(b: &BlockQ5K, j: usize, i: usize) -> u8 {
    let c = j / 2;
    let low = (b.qs[32 * c + i] >> (4 * (j % 2))) & 0xF;
    let high = (b.qh[i] >> j) & 1;
    low | (high << 4)
}

pub(super) fn dequantize(src: &[BlockQ5K], dst: &mut [f32]) {
    for (b, y) in src.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let min = f16_to_f32(b.dmin);
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &b.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            for i in 0..32 {
                y[32 * j + i] = d1 * q5(b, j, i) as f32 - m1;
            }
        }
    }
}

/// quantize_row_q5_K_ref.
pub(super) fn quantize(src: &[f32], dst: &mut [BlockQ5K]) {
    for (x, b) in src.chunks_exact(QK_K).zip(dst.iter_mut()) {
        let (d, dmin, scales, l) = quantize_k_scale_min(x, 31, -0.5, 0.1, 15);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        b.qh = [0; 32];
        for c in 0..4 {
            for i in 0..32 {
                let l1 = l[64 * c + i];
                let l2 = l[64 * c + 32 + i];
                b.qh[i] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1));
                b.qs[32 * c + i] = (l1 & 0xF) | ((l2 & 0xF) << 4);
            }
        }
    }
}

pub(super) fn vec_dot_ref(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut s = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (mut sumi, mut summ) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &x.scales);
            let ya = &y.qs[32 * j..32 * j + 32];
            sumi += sc as i32 * sub_dot(ya, |i| q5(x, j, i) as i32);
            summ += m as i32 * ya.iter().map(|&v| v as i32).sum::<i32>();
        }
        s += y.d() * f16_to_f32(x.d) * sumi as f32 - y.d() * f16_to_f32(x.dmin) * summ as f32;
    }
    s
}
