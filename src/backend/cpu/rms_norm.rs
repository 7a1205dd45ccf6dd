//! RMS norm times a weight, over groups of `w.cols` elements of each row.

use rayon::prelude::*;

use super::CpuTensor;
use crate::{Error, Result};

/// Normalizes one group: `x * w / sqrt(mean(x²) + eps)` (sum of squares in f64, as ggml).
#[inline]
pub fn rms_norm_group(x: &mut [f32], w: &[f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, g) in x.iter_mut().zip(w) {
        *v = (*v * scale) * g;
    }
}

/// In place over every group of `w.cols` consecutive elements of `x`.
pub fn rms_norm_in_place(x: &mut CpuTensor, w: &CpuTensor, eps: f32) -> Result<()> {
    let d = w.cols;
    if w.rows != 1 || d == 0 || !x.cols.is_multiple_of(d) {
        return Err(Error::InvalidInput(format!(
            "rms_norm: weight [{}, {d}] for rows of {}",
            w.rows, x.cols
        )));
    }
    if x.data.len() >= 1 << 16 {
        x.data
            .par_chunks_mut(d)
            .for_each(|g| rms_norm_group(g, &w.data, eps));
    } else {
        x.data
            .chunks_mut(d)
            .for_each(|g| rms_norm_group(g, &w.data, eps));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_head_groups() {
        let mut x = CpuTensor {
            data: vec![3.0, 4.0, 1.0, 1.0],
            rows: 1,
            cols: 4,
        };
        let w = CpuTensor {
            data: vec![1.0, 2.0],
            rows: 1,
            cols: 2,
        };
        rms_norm_in_place(&mut x, &w, 0.0).unwrap();
        let r = (12.5f32).sqrt();
        let want = [3.0 / r, 8.0 / r, 1.0, 2.0];
        for (a, b) in x.data.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
    }
}
