//! Quantized matrix x matrix for prompt processing and batched decode:
//! `Y[t, r] = X[t, :] . W[r, :] (+ bias[r])`.
//!
//! [`matmul`] picks the path: on CUDA with cuBLAS, from [`BLAS_MIN_TOKENS`] tokens on,
//! [`matmul_blas`] (the weight dequantized to f16 in bounded row chunks, X converted to f16,
//! `cublasGemmEx` with f32 accumulation into the f32 output); otherwise, and on HIP (rocBLAS is
//! not wired), [`matmul_tiled`], the portable tiled kernel of `kernels/matmul.cu`.

use super::elementwise::{elementwise, EltOp};
use super::{check_len, dim, QMatrix};
use crate::backend::gpu::kernels::{self, DEQUANT_F16_PREFIX, F32_TO_F16, MATMUL, MATMUL_PREFIX};
use crate::backend::gpu::{GpuBuffer, GpuDevice, LaunchConfig};
use crate::quant::GgmlType;
use crate::{Error, Result};

/// From this many tokens on, [`matmul`] uses cuBLAS where it can. Measured on the H100 (docs/
/// PERFORMANCE.md, "Prompt processing (cuBLAS)"): the tiled kernel was never faster at 5..512
/// tokens (it computes whole 64-token tiles: 23 ms per qwen2-0.5b Q8_0 forward pass at 5 tokens
/// against 3.2 ms for cuBLAS), so cuBLAS from the first token; `GpuBackend` sends 1..4 tokens to
/// `matvec` before this is reached.
pub const BLAS_MIN_TOKENS: usize = 1;

/// Bound of the f16 scratch that holds one chunk of dequantized weight rows (32 MiB): the
/// 151936x896 and 32000x4096 output matrices are dequantized in 9 and 8 chunks.
pub const BLAS_SCRATCH_BYTES: usize = 32 << 20;

/// Element type of A and B in a [`Gemm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmType {
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
    /// f32.
    F32,
}

/// One column-major GEMM `C[m, n] = A[k, m]^T B[k, n]`, C f32, accumulated in f32, on the
/// device's stream. With W row-major `[rows, cols]` and X `[tokens, cols]`, Y `[tokens, rows]` is
/// this with m = rows, n = tokens, k = cols, lda = ldb = cols, ldc = rows.
#[derive(Debug, Clone, Copy)]
pub struct Gemm {
    /// Type of A and B.
    pub ab_type: GemmType,
    /// Rows of C (weight rows).
    pub m: i32,
    /// Columns of C (tokens).
    pub n: i32,
    /// Reduction length.
    pub k: i32,
    /// Device address of A.
    pub a: u64,
    /// Leading dimension of A (elements).
    pub lda: i32,
    /// Device address of B.
    pub b: u64,
    /// Leading dimension of B (elements).
    pub ldb: i32,
    /// Device address of C (f32).
    pub c: u64,
    /// Leading dimension of C (elements).
    pub ldc: i32,
}

fn int(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Gpu(format!("gemm {what} = {v} exceeds i32")))
}

/// `Y[t, r] = sum_k X[t, k] W[r, k] (+ bias[r])`; X is `[tokens, cols]`, Y `[tokens, rows]`.
/// cuBLAS from [`BLAS_MIN_TOKENS`] tokens where available, else [`matmul_tiled`].
pub fn matmul(
    dev: &GpuDevice,
    w: &QMatrix,
    x: &GpuBuffer<f32>,
    bias: Option<&GpuBuffer<f32>>,
    y: &GpuBuffer<f32>,
    tokens: usize,
) -> Result<()> {
    if tokens >= BLAS_MIN_TOKENS && matmul_blas(dev, w, x, bias, y, tokens, BLAS_SCRATCH_BYTES)? {
        return Ok(());
    }
    matmul_tiled(dev, w, x, bias, y, tokens)
}

/// [`matmul`] through cuBLAS, dequantizing at most `scratch_bytes` of f16 weight rows at a time
/// (at least one row). `Ok(false)`, having done nothing, where the device has no BLAS (HIP, no
/// libcublas) or the matrix does not suit it (a quantized or BF16 matrix whose columns are not a
/// multiple of 32, zero columns). Results: f16 rounding of X and of the weights (F32 matrices:
/// f32), f32 accumulation.
pub fn matmul_blas(
    dev: &GpuDevice,
    w: &QMatrix,
    x: &GpuBuffer<f32>,
    bias: Option<&GpuBuffer<f32>>,
    y: &GpuBuffer<f32>,
    tokens: usize,
    scratch_bytes: usize,
) -> Result<bool> {
    let (wp, row_bytes) = w.checked("matmul")?;
    check_len("matmul x", x, tokens * w.cols)?;
    check_len("matmul y", y, tokens * w.rows)?;
    if let Some(b) = bias {
        check_len("matmul bias", b, w.rows)?;
    }
    let direct = matches!(w.ty, GgmlType::F32 | GgmlType::F16);
    if w.cols == 0 || !(direct || w.chunked()) || !blas_available(dev)? {
        return Ok(false);
    }
    if tokens == 0 || w.rows == 0 {
        return Ok(true);
    }
    let (m, n, k) = (
        int("rows", w.rows)?,
        int("tokens", tokens)?,
        int("cols", w.cols)?,
    );
    if w.ty == GgmlType::F32 {
        let g = Gemm {
            ab_type: GemmType::F32,
            m,
            n,
            k,
            a: wp,
            lda: k,
            b: x.ptr(),
            ldb: k,
            c: y.ptr(),
            ldc: m,
        };
        // SAFETY: W, X and Y extents checked above.
        unsafe { gemm(dev, &g)? };
    } else {
        let xh = dev.alloc_pooled::<u16>(tokens * w.cols)?;
        f32_to_f16(dev, x.ptr(), xh.ptr(), tokens * w.cols)?;
        let base = Gemm {
            ab_type: GemmType::F16,
            m,
            n,
            k,
            a: wp,
            lda: k,
            b: xh.ptr(),
            ldb: k,
            c: y.ptr(),
            ldc: m,
        };
        if w.ty == GgmlType::F16 {
            // SAFETY: W (f16 rows of cols), X16 and Y extents checked above.
            unsafe { gemm(dev, &base)? };
        } else {
            let chunk = chunk_rows(w.rows, w.cols, scratch_bytes);
            let scratch = dev.alloc_pooled::<u16>(chunk * w.cols)?;
            let mut r0 = 0;
            while r0 < w.rows {
                let rc = chunk.min(w.rows - r0);
                dequant_rows(
                    dev,
                    w.ty,
                    wp + (r0 * row_bytes) as u64,
                    row_bytes,
                    rc,
                    w.cols,
                    scratch.ptr(),
                )?;
                let g = Gemm {
                    m: int("rows", rc)?,
                    a: scratch.ptr(),
                    c: y.ptr_at(r0)?,
                    ..base
                };
                // SAFETY: the scratch holds rc dequantized rows; Y's columns r0..r0+rc of
                // every token row lie inside Y (ldc = rows).
                unsafe { gemm(dev, &g)? };
                r0 += rc;
            }
        }
    }
    if let Some(b) = bias {
        elementwise(dev, y, tokens * w.rows, EltOp::AddBias(b, w.rows))?;
    }
    Ok(true)
}

/// Rows per dequantization chunk of a `rows x cols` matrix within `scratch_bytes` of f16: the
/// fewest chunks that fit, of equal size (a multiple of 64 where that fits), so that no chunk is
/// a thin remainder (a 384-row tail GEMM costs nearly what a full chunk does).
fn chunk_rows(rows: usize, cols: usize, scratch_bytes: usize) -> usize {
    let fit = (scratch_bytes / (2 * cols)).max(1);
    let chunks = rows.div_ceil(fit).max(1);
    let even = rows.div_ceil(chunks);
    let rounded = even.next_multiple_of(64);
    if rounded <= fit {
        rounded.min(rows)
    } else {
        even
    }
}

/// One cuBLAS product, which must run (the probe accepted), stamped for the step profile.
///
/// # Safety
/// As [`Driver::gemm`](super::super::Driver::gemm).
unsafe fn gemm(dev: &GpuDevice, g: &Gemm) -> Result<()> {
    require(dev.inner.driver.gemm(g)?)?;
    dev.profile_mark(&format!("cublas {}x{}x{}", g.m, g.n, g.k))
}

/// A GEMM refused after the probe accepted: the handle went away (not expected).
fn require(done: bool) -> Result<()> {
    if done {
        Ok(())
    } else {
        Err(Error::Gpu(
            "cuBLAS became unavailable during a matmul".into(),
        ))
    }
}

/// Whether the device has a BLAS (creates the cuBLAS handle on the first call: an empty GEMM).
fn blas_available(dev: &GpuDevice) -> Result<bool> {
    let g = Gemm {
        ab_type: GemmType::F16,
        m: 0,
        n: 0,
        k: 0,
        a: 0,
        lda: 1,
        b: 0,
        ldb: 1,
        c: 0,
        ldc: 1,
    };
    // SAFETY: an empty product touches no memory.
    unsafe { dev.inner.driver.gemm(&g) }
}

fn f32_to_f16(dev: &GpuDevice, x: u64, y: u64, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let k = dev.kernel(&MATMUL, F32_TO_F16)?;
    let (mut xp, mut yp, mut np) = (x, y, n as u64);
    let blocks = dim("blocks", n.div_ceil(256).min(8192))?;
    // SAFETY: the kernel takes (const float*, u16*, u64); both buffers hold n elements.
    unsafe {
        dev.launch(
            &k,
            LaunchConfig::linear(blocks, 256),
            &mut [
                &mut xp as *mut u64 as *mut std::ffi::c_void,
                &mut yp as *mut u64 as *mut std::ffi::c_void,
                &mut np as *mut u64 as *mut std::ffi::c_void,
            ],
        )
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MatmulParams {
    w: u64,
    x: u64,
    bias: u64,
    y: u64,
    row_bytes: u64,
    rows: u32,
    cols: u32,
    tokens: u32,
    y_stride: u32,
}

/// [`matmul`] through the portable tiled kernel (64x64 output tiles, f32 arithmetic). Falls back
/// to [`super::matvec::matvec`] for float matrices whose columns are not a multiple of 32.
pub fn matmul_tiled(
    dev: &GpuDevice,
    w: &QMatrix,
    x: &GpuBuffer<f32>,
    bias: Option<&GpuBuffer<f32>>,
    y: &GpuBuffer<f32>,
    tokens: usize,
) -> Result<()> {
    let (wp, row_bytes) = w.checked("matmul")?;
    if !w.chunked() {
        return super::matvec::matvec(dev, w, x, bias, y, tokens);
    }
    check_len("matmul x", x, tokens * w.cols)?;
    check_len("matmul y", y, tokens * w.rows)?;
    if let Some(b) = bias {
        check_len("matmul bias", b, w.rows)?;
    }
    if tokens == 0 || w.rows == 0 {
        return Ok(());
    }
    let name = format!(
        "{MATMUL_PREFIX}_{}",
        kernels::type_suffix(w.ty).unwrap_or("?")
    );
    let k = dev.kernel(&MATMUL, &name)?;
    let p = MatmulParams {
        w: wp,
        x: x.ptr(),
        bias: bias.map_or(0, |b| b.ptr()),
        y: y.ptr(),
        row_bytes: row_bytes as u64,
        rows: dim("rows", w.rows)?,
        cols: dim("cols", w.cols)?,
        tokens: dim("tokens", tokens)?,
        y_stride: dim("rows", w.rows)?,
    };
    let gy = tokens.div_ceil(64);
    if gy > 65535 {
        return Err(Error::Gpu(format!("matmul of {tokens} tokens: too many")));
    }
    let cfg = LaunchConfig {
        grid: (dim("blocks", w.rows.div_ceil(64))?, gy as u32, 1),
        block: (256, 1, 1),
        shared_mem: 0,
    };
    // SAFETY: extents checked above; params mirror the kernel struct.
    unsafe { dev.launch_params(&k, cfg, &p) }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DequantParams {
    w: u64,
    out: u64,
    row_bytes: u64,
    rows: u32,
    cols: u32,
}

/// Dequantizes `rows` rows of `cols` (a multiple of 32) at device address `w` to f16 at `out`.
fn dequant_rows(
    dev: &GpuDevice,
    ty: GgmlType,
    w: u64,
    row_bytes: usize,
    rows: usize,
    cols: usize,
    out: u64,
) -> Result<()> {
    let chunks = rows * cols / 32;
    if chunks == 0 {
        return Ok(());
    }
    let name = format!(
        "{DEQUANT_F16_PREFIX}_{}",
        kernels::type_suffix(ty).unwrap_or("?")
    );
    let k = dev.kernel(&MATMUL, &name)?;
    let p = DequantParams {
        w,
        out,
        row_bytes: row_bytes as u64,
        rows: dim("rows", rows)?,
        cols: dim("cols", cols)?,
    };
    // SAFETY: callers pass ranges of `rows` rows in and `rows * cols` f16 out.
    unsafe {
        dev.launch_params(
            &k,
            LaunchConfig::linear(dim("blocks", chunks.div_ceil(256))?, 256),
            &p,
        )
    }
}

/// Dequantizes the whole matrix to F16 into `out` (`[rows, cols]`, bit patterns of f16).
pub fn dequantize_f16(dev: &GpuDevice, w: &QMatrix, out: &GpuBuffer<half::f16>) -> Result<()> {
    let (wp, row_bytes) = w.checked("dequantize")?;
    if !w.chunked() {
        return Err(Error::Gpu(format!(
            "dequantize: {} columns is not a multiple of 32",
            w.cols
        )));
    }
    check_len("dequantize out", out, w.rows * w.cols)?;
    dequant_rows(dev, w.ty, wp, row_bytes, w.rows, w.cols, out.ptr())
}

#[cfg(test)]
mod tests {
    use super::chunk_rows;

    #[test]
    fn chunks_are_even_within_the_bound_and_fewest() {
        for (rows, cols, bytes) in [
            (9728, 896, 16 << 20),
            (9728, 896, 32 << 20),
            (896, 4864, 16 << 20),
            (151_936, 896, 32 << 20),
            (22_016, 4096, 32 << 20),
            (4096, 11_008, 32 << 20),
            (1000, 64, 2 * 37 * 64),
            (5, 1 << 20, 1024),
        ] {
            let c = chunk_rows(rows, cols, bytes);
            let fit = (bytes / (2 * cols)).max(1);
            let n = rows.div_ceil(c);
            assert!(
                c >= 1 && c <= fit,
                "{rows}x{cols}: chunk {c} over fit {fit}"
            );
            assert_eq!(
                n,
                rows.div_ceil(fit),
                "{rows}x{cols}: {n} chunks, not the fewest"
            );
            // No thin remainder: the last chunk is short of the others by at most the rounding
            // to 64 rows of each.
            let last = rows - (n - 1) * c;
            assert!(
                last + 64 * n >= c,
                "{rows}x{cols}: last chunk {last} of {c}"
            );
        }
        assert_eq!(chunk_rows(9728, 896, 16 << 20), 4864);
        assert_eq!(chunk_rows(9728, 896, 32 << 20), 9728);
    }
}
