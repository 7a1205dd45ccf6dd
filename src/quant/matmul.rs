//! The CPU's quantized matrix product: every linear layer of CPU inference goes through here.
//!
//! Each activation row is quantized once to the weight type's `vec_dot_type` (into a reused
//! thread-local buffer), then the rows of W are split over rayon's threads. With several tokens
//! each task walks its tile of weight rows once per block of tokens, so a weight row is read
//! from memory once and reused from cache for every token.

use std::cell::RefCell;

use rayon::prelude::*;

use super::{best_kernel, best_kernel_x4, quantize_act_row, vec_dot_type, DotFn, GgmlType};
use crate::{Error, Result};

thread_local! {
    /// Quantized activations of the current call, reused across calls on this thread.
    static ACT_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Tokens whose dot products with one weight row are taken while the row is in L1 (the
/// 4-token kernels take exactly this many).
const TOK_BLOCK: usize = 4;

/// Weight rows per prefill task.
const TILE: usize = 32;

/// Weight rows per task of the register-tiled prefill (`super::tile`): their unpacked blocks
/// (64 bytes per 32 weights) stay in L1 for rows of up to ~1000 elements.
#[cfg(target_arch = "x86_64")]
const TILED_ROWS: usize = 16;

/// Decode streams the weights from memory: rows are prefetched this many rows ahead so the
/// loads overlap the arithmetic (the hardware prefetcher alone leaves them mostly serial).
const PREFETCH_ROWS: usize = 4;

/// Prefetches `w[start..start + len]` (clipped to `w`) into the cache, one touch per line.
#[inline(always)]
fn prefetch(w: &[u8], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let end = (start + len).min(w.len());
        let mut o = start;
        while o < end {
            // SAFETY: o < w.len(), so the address is inside `w`; prefetch never faults anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().add(o).cast()) };
            o += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (w, start, len);
}

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint indices (distinct rows r) and the buffer outlives the scope.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// `out[t * n_rows + r] = dot(W row r, x row t)`.
///
/// `w` holds `n_rows` rows of `n_cols` elements of type `ty` (`ty.row_bytes(n_cols)` bytes each);
/// `x` is `[n_tok, n_cols]` row-major f32 and `out` is `[n_tok, n_rows]`. Shapes that do not fit
/// are errors naming the sizes.
pub fn matmul(
    ty: GgmlType,
    w: &[u8],
    n_rows: usize,
    n_cols: usize,
    x: &[f32],
    out: &mut [f32],
) -> Result<()> {
    if n_cols == 0 || n_rows == 0 {
        return Err(Error::Quant(format!(
            "matmul {ty}: empty weight shape [{n_rows} x {n_cols}]"
        )));
    }
    let wrb = ty.row_bytes(n_cols as u64).ok_or_else(|| {
        Error::Quant(format!(
            "matmul {ty}: n_cols {n_cols} is not a multiple of the block size {}",
            ty.block_elems()
        ))
    })? as usize;
    if Some(w.len()) != wrb.checked_mul(n_rows) {
        return Err(Error::Quant(format!(
            "matmul {ty}: weights have {} bytes, [{n_rows} x {n_cols}] needs {n_rows} x {wrb}",
            w.len()
        )));
    }
    if !x.len().is_multiple_of(n_cols) {
        return Err(Error::Quant(format!(
            "matmul {ty}: input has {} elements, not a multiple of n_cols {n_cols}",
            x.len()
        )));
    }
    let n_tok = x.len() / n_cols;
    if Some(out.len()) != n_tok.checked_mul(n_rows) {
        return Err(Error::Quant(format!(
            "matmul {ty}: output has {} elements, expected n_tok {n_tok} x n_rows {n_rows}",
            out.len()
        )));
    }
    let at = vec_dot_type(ty);
    let kernel = best_kernel(ty);
    let shape = Shape {
        ty,
        n_rows,
        n_cols,
        n_tok,
        wrb,
    };
    if at == GgmlType::F32 {
        let act = f32_bytes(x);
        compute(kernel, w, act, act.len() / n_tok, shape, out);
        return Ok(());
    }
    let arb = at.row_bytes(n_cols as u64).unwrap_or(0) as usize;
    ACT_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => run_quantized(kernel, at, w, x, arb, shape, out, &mut buf),
        // Re-entered on this thread (a matmul inside a rayon task of a matmul): own buffer.
        Err(_) => run_quantized(kernel, at, w, x, arb, shape, out, &mut Vec::new()),
    })
}

#[derive(Clone, Copy)]
struct Shape {
    ty: GgmlType,
    n_rows: usize,
    n_cols: usize,
    n_tok: usize,
    /// Weight row bytes.
    wrb: usize,
}

fn f32_bytes(x: &[f32]) -> &[u8] {
    // SAFETY: any f32 is 4 valid bytes; u8 has alignment 1; the length is in bounds.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), std::mem::size_of_val(x)) }
}

#[allow(clippy::too_many_arguments)]
fn run_quantized(
    kernel: DotFn,
    at: GgmlType,
    w: &[u8],
    x: &[f32],
    arb: usize,
    s: Shape,
    out: &mut [f32],
    buf: &mut Vec<u8>,
) -> Result<()> {
    let need = arb * s.n_tok;
    if buf.len() < need {
        buf.resize(need, 0);
    }
    let act = &mut buf[..need];
    if s.n_tok >= 8 {
        act.par_chunks_mut(arb)
            .zip(x.par_chunks(s.n_cols))
            .try_for_each(|(a, xr)| quantize_act_row(at, xr, a))?;
    } else {
        for (a, xr) in act.chunks_mut(arb).zip(x.chunks(s.n_cols)) {
            quantize_act_row(at, xr, a)?;
        }
    }
    compute(kernel, w, act, arb, s, out);
    Ok(())
}

fn compute(kernel: DotFn, w: &[u8], act: &[u8], arb: usize, s: Shape, out: &mut [f32]) {
    let threads = rayon::current_num_threads().max(1);
    let n = s.n_cols;
    if s.n_tok == 1 {
        // Decode: rows in chunks, several per thread for balance.
        let chunk = s.n_rows.div_ceil(threads * 8).max(16);
        if s.n_rows <= chunk {
            for (r, o) in out.iter_mut().enumerate() {
                *o = kernel(&w[r * s.wrb..(r + 1) * s.wrb], act, n);
            }
            return;
        }
        out.par_chunks_mut(chunk).enumerate().for_each(|(ci, o)| {
            let r0 = ci * chunk;
            for (i, o) in o.iter_mut().enumerate() {
                let r = r0 + i;
                prefetch(w, (r + PREFETCH_ROWS) * s.wrb, s.wrb);
                *o = kernel(&w[r * s.wrb..(r + 1) * s.wrb], act, n);
            }
        });
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if s.n_tok >= TOK_BLOCK && super::tile::supported(s.ty) {
        compute_tiled(w, act, arb, s, out);
        return;
    }
    // Prefill: tiles of TILE rows x all tokens; within a tile, blocks of TOK_BLOCK tokens so
    // each weight row is dotted with several activation rows while it sits in L1. Results are
    // gathered per tile and written as contiguous runs (no false sharing between tasks).
    let dot4 = best_kernel_x4(s.ty);
    let n_tiles = s.n_rows.div_ceil(TILE);
    let ptr = OutPtr(out.as_mut_ptr());
    let work = |ti: usize| {
        let p = ptr;
        let r0 = ti * TILE;
        let r1 = (r0 + TILE).min(s.n_rows);
        let mut res = [[0f32; TILE]; TOK_BLOCK];
        let mut t0 = 0;
        while t0 < s.n_tok {
            let t1 = (t0 + TOK_BLOCK).min(s.n_tok);
            for r in r0..r1 {
                if t0 == 0 {
                    // First pass over the tile: its rows come from memory (later token blocks
                    // find them in cache).
                    prefetch(w, (r + PREFETCH_ROWS) * s.wrb, s.wrb);
                }
                let wr = &w[r * s.wrb..(r + 1) * s.wrb];
                match dot4 {
                    Some(dot4) if t1 - t0 == TOK_BLOCK => {
                        let a = |k: usize| &act[(t0 + k) * arb..(t0 + k + 1) * arb];
                        let v = dot4(wr, [a(0), a(1), a(2), a(3)], n);
                        for k in 0..TOK_BLOCK {
                            res[k][r - r0] = v[k];
                        }
                    }
                    _ => {
                        for t in t0..t1 {
                            res[t - t0][r - r0] = kernel(wr, &act[t * arb..(t + 1) * arb], n);
                        }
                    }
                }
            }
            for t in t0..t1 {
                let src = &res[t - t0][..r1 - r0];
                // SAFETY: t < n_tok and r0 + len <= n_rows, so the run is inside `out`
                // (len n_tok * n_rows, checked by the caller); rows r0..r1 belong to this task
                // alone, so no other task writes these elements.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        p.0.add(t * s.n_rows + r0),
                        src.len(),
                    )
                };
            }
            t0 = t1;
        }
    };
    if n_tiles == 1 || threads == 1 {
        (0..n_tiles).for_each(work);
    } else {
        (0..n_tiles).into_par_iter().for_each(work);
    }
}

/// Prefill for the types of `super::tile` (AVX2, Q8_0 activations): tasks of [`TILED_ROWS`] weight
/// rows, each unpacking its rows once and running the register-tiled kernel over all tokens.
#[cfg(target_arch = "x86_64")]
fn compute_tiled(w: &[u8], act: &[u8], arb: usize, s: Shape, out: &mut [f32]) {
    let nb = s.n_cols / 32;
    // The activation block scales as f32, [n_tok * nb].
    let ad: Vec<f32> = (0..s.n_tok * nb)
        .map(|k| {
            let o = (k / nb) * arb + (k % nb) * 34;
            super::f16_to_f32([act[o], act[o + 1]])
        })
        .collect();
    let n_tiles = s.n_rows.div_ceil(TILED_ROWS);
    let ptr = OutPtr(out.as_mut_ptr());
    let work = |scratch: &mut super::tile::Scratch, ti: usize| {
        let p = ptr;
        let r0 = ti * TILED_ROWS;
        let r1 = (r0 + TILED_ROWS).min(s.n_rows);
        // SAFETY: `supported(ty)` was checked by the caller; the tile holds whole rows of `wrb`
        // bytes with nb blocks each, act holds n_tok rows of arb = nb * 34 bytes and ad n_tok * nb
        // scales; out has n_tok * n_rows elements (checked by `matmul`) and this task alone
        // writes the elements of rows r0..r1.
        unsafe {
            super::tile::run(
                s.ty,
                &w[r0 * s.wrb..r1 * s.wrb],
                s.wrb,
                nb,
                act,
                arb,
                &ad,
                s.n_tok,
                p.0.add(r0),
                s.n_rows,
                scratch,
            )
        };
    };
    if n_tiles == 1 || rayon::current_num_threads() <= 1 {
        let mut scratch = super::tile::Scratch::default();
        (0..n_tiles).for_each(|ti| work(&mut scratch, ti));
    } else {
        (0..n_tiles)
            .into_par_iter()
            .for_each_init(super::tile::Scratch::default, work);
    }
}
