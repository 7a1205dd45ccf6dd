//! Rotary position embedding, normal (adjacent pairs) and NeoX (split halves), computed as
//! ggml's rope cache does: `theta = pos * base^(-2i/n_rot)` by repeated f32 multiplication.

use super::CpuTensor;
use crate::backend::{RopeKind, RopeParams};
use crate::{Error, Result};

/// `(cos, sin)` for each rotated pair at position `pos`.
fn cache(pos: u32, p: &RopeParams, out: &mut Vec<(f32, f32)>) {
    out.clear();
    let theta_scale = p.freq_base.powf(-2.0 / p.n_rot as f32);
    let mut theta = pos as f32;
    for i in 0..p.n_rot / 2 {
        let ff = p.freq_factors.as_ref().map_or(1.0, |f| f[i]);
        let t = p.freq_scale * (theta / ff);
        out.push((t.cos(), t.sin()));
        theta *= theta_scale;
    }
}

/// Rotates `x [n, n_heads * head_dim]` in place.
pub fn rope(x: &mut CpuTensor, positions: &[u32], p: &RopeParams) -> Result<()> {
    if x.cols != p.n_heads * p.head_dim || positions.len() != x.rows {
        return Err(Error::InvalidInput(format!(
            "rope: tensor [{}, {}] for {} heads of {} and {} positions",
            x.rows,
            x.cols,
            p.n_heads,
            p.head_dim,
            positions.len()
        )));
    }
    if p.n_rot > p.head_dim || !p.n_rot.is_multiple_of(2) {
        return Err(Error::InvalidInput(format!(
            "rope: n_rot {} for head_dim {}",
            p.n_rot, p.head_dim
        )));
    }
    if let Some(f) = &p.freq_factors {
        if f.len() < p.n_rot / 2 {
            return Err(Error::InvalidInput(format!(
                "rope: {} frequency factors for n_rot {}",
                f.len(),
                p.n_rot
            )));
        }
    }
    let mut cs = Vec::with_capacity(p.n_rot / 2);
    for (row, &pos) in x.data.chunks_mut(x.cols.max(1)).zip(positions) {
        cache(pos, p, &mut cs);
        for head in row.chunks_mut(p.head_dim) {
            match p.kind {
                RopeKind::Normal => {
                    for (i, &(c, s)) in cs.iter().enumerate() {
                        let (a, b) = (head[2 * i], head[2 * i + 1]);
                        head[2 * i] = a * c - b * s;
                        head[2 * i + 1] = a * s + b * c;
                    }
                }
                RopeKind::Neox => {
                    let half = p.n_rot / 2;
                    for (i, &(c, s)) in cs.iter().enumerate() {
                        let (a, b) = (head[i], head[i + half]);
                        head[i] = a * c - b * s;
                        head[i + half] = a * s + b * c;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kind: RopeKind) -> RopeParams {
        RopeParams {
            kind,
            n_heads: 1,
            head_dim: 4,
            n_rot: 4,
            freq_base: 10000.0,
            freq_scale: 1.0,
            freq_factors: None,
        }
    }

    #[test]
    fn rotation_keeps_norms_and_position_zero_is_identity() {
        for kind in [RopeKind::Normal, RopeKind::Neox] {
            let mut x = CpuTensor {
                data: vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0],
                rows: 2,
                cols: 4,
            };
            rope(&mut x, &[0, 7], &params(kind)).unwrap();
            assert_eq!(&x.data[..4], &[1.0, 2.0, 3.0, 4.0]);
            let n: f32 = x.data[4..].iter().map(|v| v * v).sum();
            assert!((n - 30.0).abs() < 1e-4);
        }
        // normal: first pair rotates by angle pos
        let mut x = CpuTensor {
            data: vec![1.0, 0.0, 0.0, 0.0],
            rows: 1,
            cols: 4,
        };
        rope(&mut x, &[2], &params(RopeKind::Normal)).unwrap();
        assert!((x.data[0] - 2f32.cos()).abs() < 1e-6 && (x.data[1] - 2f32.sin()).abs() < 1e-6);
        // neox: pair (0, 2)
        let mut x = CpuTensor {
            data: vec![1.0, 0.0, 0.0, 0.0],
            rows: 1,
            cols: 4,
        };
        rope(&mut x, &[2], &params(RopeKind::Neox)).unwrap();
        assert!((x.data[0] - 2f32.cos()).abs() < 1e-6 && (x.data[2] - 2f32.sin()).abs() < 1e-6);
    }
}
