//! Row-wise softmax (sums in f64 as ggml does).

use super::CpuTensor;

/// Softmax of `row` in place.
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Softmax of each row of `x` in place.
pub fn softmax_rows(x: &mut CpuTensor) {
    let cols = x.cols.max(1);
    x.data.chunks_mut(cols).for_each(softmax);
}

#[cfg(test)]
mod tests {
    #[test]
    fn softmax_sums_to_one() {
        let mut r = vec![1.0, 2.0, 3.0, -1000.0];
        super::softmax(&mut r);
        let s: f32 = r.iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert!((r[2] / r[1] - 1f32.exp()).abs() < 1e-4);
        assert_eq!(r[3], 0.0);
    }
}
