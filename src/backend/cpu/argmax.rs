//! Row-wise argmax.

use super::CpuTensor;

/// Index of the largest element of each row (first on ties; NaN never wins).
pub fn argmax_rows(x: &CpuTensor) -> Vec<u32> {
    x.data
        .chunks(x.cols.max(1))
        .map(|row| {
            let mut best = 0usize;
            let mut bv = f32::NEG_INFINITY;
            for (i, &v) in row.iter().enumerate() {
                if v > bv {
                    bv = v;
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}
