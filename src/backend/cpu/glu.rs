//! Gated linear units: `act(gate) * up` with SiLU or GELU (tanh approximation).

use std::sync::OnceLock;

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::CpuTensor;
use crate::backend::GluKind;
use crate::{Error, Result};

const GELU_COEF_A: f32 = 0.044715;
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// GELU, tanh approximation, in f32 (ggml's `ggml_gelu_f32`).
pub fn gelu_ref(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// ggml's CPU GELU: the input rounded to f16 looks up an f16 table of `gelu_ref`
/// (`GGML_GELU_FP16`), with the tails |x| >= 10 passed through / zeroed.
fn gelu_table() -> &'static [f16] {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|i| f16::from_f32(gelu_ref(f16::from_bits(i).to_f32())))
            .collect()
    })
}

/// [`gelu_table`] as f32.
fn gelu_table_f32() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| gelu_table().iter().map(|h| h.to_f32()).collect())
}

#[cfg(test)]
#[inline]
fn gelu(table: &[f16], x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        table[f16::from_f32(x).to_bits() as usize].to_f32()
    }
}

#[inline]
fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `act(gate) * up`.
pub fn glu(gate: &CpuTensor, up: &CpuTensor, kind: GluKind) -> Result<CpuTensor> {
    if gate.rows != up.rows || gate.cols != up.cols {
        return Err(Error::InvalidInput(format!(
            "glu: gate [{}, {}] vs up [{}, {}]",
            gate.rows, gate.cols, up.rows, up.cols
        )));
    }
    let mut out = vec![0f32; gate.data.len()];
    const CHUNK: usize = 4096;
    match kind {
        GluKind::SwiGlu => out
            .par_chunks_mut(CHUNK)
            .zip(gate.data.par_chunks(CHUNK).zip(up.data.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| {
                for i in 0..o.len() {
                    o[i] = silu(g[i]) * u[i];
                }
            }),
        GluKind::GeGlu => {
            // As `gelu`, with the f16 rounding of a whole chunk done at once (F16C where the
            // CPU has it) and the table read as f32.
            let table = gelu_table_f32();
            out.par_chunks_mut(CHUNK)
                .zip(gate.data.par_chunks(CHUNK).zip(up.data.par_chunks(CHUNK)))
                .for_each_init(
                    || vec![f16::ZERO; CHUNK],
                    |h, (o, (g, u))| {
                        let h = &mut h[..g.len()];
                        h.convert_from_f32_slice(g);
                        for i in 0..o.len() {
                            let x = g[i];
                            let a = if x <= -10.0 {
                                0.0
                            } else if x >= 10.0 {
                                x
                            } else {
                                table[h[i].to_bits() as usize]
                            };
                            o[i] = a * u[i];
                        }
                    },
                )
        }
    }
    Ok(CpuTensor {
        data: out,
        rows: gate.rows,
        cols: gate.cols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_table_close_to_exact_gelu() {
        let t = gelu_table();
        for i in -2000..2000 {
            let x = i as f32 * 0.005;
            // exact erf-free reference: tanh approximation in f64
            let xd = x as f64;
            let r =
                0.5 * xd * (1.0 + (0.7978845608028654 * xd * (1.0 + 0.044715 * xd * xd)).tanh());
            assert!(
                (gelu(t, x) as f64 - r).abs() < 2e-3 * (1.0 + r.abs()),
                "x={x}"
            );
        }
        assert_eq!(gelu(t, -11.0), 0.0);
        assert_eq!(gelu(t, 12.0), 12.0);
    }

    #[test]
    fn geglu_matches_gelu_per_element() {
        let n = 5000;
        let g: Vec<f32> = (0..n)
            .map(|i| (i as f32 - 2500.0) * 0.0053 + 0.001)
            .collect();
        let u: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let gt = CpuTensor {
            data: g.clone(),
            rows: 2,
            cols: n / 2,
        };
        let ut = CpuTensor {
            data: u.clone(),
            rows: 2,
            cols: n / 2,
        };
        let o = glu(&gt, &ut, GluKind::GeGlu).unwrap();
        let t = gelu_table();
        for i in 0..n {
            assert_eq!(o.data[i], gelu(t, g[i]) * u[i], "x={}", g[i]);
        }
    }

    #[test]
    fn swiglu_values() {
        let g = CpuTensor {
            data: vec![0.0, 1.0, -2.0],
            rows: 1,
            cols: 3,
        };
        let u = CpuTensor {
            data: vec![5.0, 2.0, 1.0],
            rows: 1,
            cols: 3,
        };
        let o = glu(&g, &u, GluKind::SwiGlu).unwrap();
        let want = [0.0, 2.0 / (1.0 + (-1f32).exp()), -2.0 / (1.0 + 2f32.exp())];
        for (a, b) in o.data.iter().zip(want) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
