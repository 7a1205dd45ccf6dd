//! Quantized matrix x vector(s): `y[b, r] = W[r, :] . x[b, :] (+ bias[r])` (`kernels/matvec.cu`).
//!
//! Quantized weights take the integer path ("mmvq"): x is quantized to Q8_1 (int8 in blocks of
//! 32 with a float scale) into pooled scratch, then one kernel dots each weight row with it using
//! 4-byte integer dot products. Float weights (F32, F16, BF16) take the float kernels.

use std::sync::atomic::{AtomicU32, Ordering};

use super::{check_len, dim, QMatrix};
use crate::backend::gpu::kernels::{
    self, MATVEC, MATVEC_PREFIX, MMVQ1X4_PREFIX, MMVQ1_PREFIX, MMVQ4_PREFIX, MMVQ8_PREFIX,
    MMVQF1X4_PREFIX, MMVQF1_PREFIX, MMVQF4_PREFIX, MMVQM2_PREFIX, MMVQM4_PREFIX, MMVQMD4_PREFIX,
    MMVQS4_PREFIX, MMVQT4_PREFIX, QUANTIZE_Q8_1,
};
use crate::backend::gpu::{GpuBuffer, GpuDevice, GpuKind, LaunchConfig};
use crate::quant::GgmlType;
use crate::{Error, Result};

#[repr(C)]
#[derive(Clone, Copy)]
struct MatvecParams {
    w: u64,
    x: u64,
    bias: u64,
    y: u64,
    row_bytes: u64,
    rows: u32,
    cols: u32,
    x_stride: u32,
    y_stride: u32,
    rows_per_warp: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct QuantizeParams {
    x: u64,
    xq: u64,
    xds: u64,
    total: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MmvqParams {
    w: u64,
    xq: u64,
    xds: u64,
    x: u64,
    bias: u64,
    y: u64,
    row_bytes: u64,
    rows: u32,
    cols: u32,
    n: u32,
    y_stride: u32,
    warps_per_row: u32,
    groups: u32,
    tile_stride: u32,
}

impl MmvqParams {
    /// One vector group and one warp per row; the callers set the rest.
    #[allow(clippy::too_many_arguments)]
    fn new(
        w: &QMatrix,
        (wp, row_bytes): (u64, usize),
        (xq, xds): (u64, u64),
        x: &GpuBuffer<f32>,
        bias: Option<&GpuBuffer<f32>>,
        y: &GpuBuffer<f32>,
        batch: usize,
    ) -> Result<Self> {
        Ok(MmvqParams {
            w: wp,
            xq,
            xds,
            x: x.ptr(),
            bias: bias.map_or(0, |b| b.ptr()),
            y: y.ptr(),
            row_bytes: row_bytes as u64,
            rows: dim("rows", w.rows)?,
            cols: dim("cols", w.cols)?,
            n: dim("batch", batch)?,
            y_stride: dim("rows", w.rows)?,
            warps_per_row: 1,
            groups: 0,
            tile_stride: 0,
        })
    }
}

/// Benchmark knobs for the integer path; [`Tuning::default`] is what production uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Use the float kernels (v3) for quantized weights too.
    pub float_path: bool,
    /// Warps per row (1, 2 or 4); 0 chooses by shape.
    pub warps_per_row: u32,
    /// With `warps_per_row == 0`: rows x warps per row is kept at or under this many warps.
    pub target_warps: u32,
    /// Quantize x inside the product kernel (each block into its shared memory) instead of in a
    /// separate launch: 0 never, 1 where a block's x bytes (f32) are at most its weight bytes,
    /// 2 wherever it fits; always only up to `fuse_rows` rows and 32 KiB of shared memory.
    pub fuse: u32,
    /// Largest row count fused.
    pub fuse_rows: u32,
    /// Over [`QUAD_MIN_BATCH`] vectors, take the quad kernel (else the 8-vector one).
    pub quad: bool,
    /// From `mma_min_batch` vectors, Q8_0 weights on CUDA sm_80+ take the tensor-core kernel
    /// (`mmvqm`, same float operations as the others): 0 never, 1 by shape (then also 8
    /// vectors on large matrices of short rows), 2 always 32 vectors per block (`mmvqm4`), 3
    /// always 16 (`mmvqm2`), 4 its dp4a twin (`mmvqd4`, a check), 5 always the 16-warp blocks
    /// of 32 vectors (`mmvqs4`), 6 the persistent x-stationary kernel with 64 vectors per block
    /// (`mmvqp8`) where it applies (else by shape), 7 the same with 32 (`mmvqp4`; by shape takes
    /// it from 17 vectors on rows of at most 1024 columns), 8 `mmvqp4`
    /// with one block per vector group (a check of its tile loop), 9 by shape without `mmvqp`
    /// (session 4's choice, for comparisons), 10 `mmvqp` with 32 vectors x 32 rows per block
    /// (`mmvqr8`) where it applies. `ROCMFORGE_MMA=N` overrides
    /// it process-wide.
    pub mma: u32,
    /// See [`Tuning::mma`].
    pub mma_min_batch: u32,
}

/// Batches above this many vectors may take the quad kernel ([`Tuning::quad`]).
pub const QUAD_MIN_BATCH: usize = 8;
/// Vectors per block of the quad kernel (`mmvqt<T, 4>`).
const QUAD_VECTORS: usize = 4;
/// Warps per block of the quad kernel (each WARP_SIZE / 4 rows).
const QUAD_WARPS: usize = 2;

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            float_path: false,
            warps_per_row: 0,
            target_warps: 4096,
            fuse: 1,
            fuse_rows: 16384,
            quad: true,
            mma: 1,
            mma_min_batch: 9,
        }
    }
}

// Mirrors `Tuning::default()`.
static TUNE_FLOAT: AtomicU32 = AtomicU32::new(0);
static TUNE_WPR: AtomicU32 = AtomicU32::new(0);
static TUNE_TARGET: AtomicU32 = AtomicU32::new(4096);
static TUNE_FUSE: AtomicU32 = AtomicU32::new(1);
static TUNE_FUSE_ROWS: AtomicU32 = AtomicU32::new(16384);
static TUNE_QUAD: AtomicU32 = AtomicU32::new(1);
static TUNE_MMA: AtomicU32 = AtomicU32::new(1);
static TUNE_MMA_MIN: AtomicU32 = AtomicU32::new(9);

/// Sets the knobs of [`Tuning`] process-wide (benchmarks compare variants with it).
pub fn set_tuning(t: Tuning) {
    TUNE_FLOAT.store(t.float_path as u32, Ordering::Relaxed);
    TUNE_WPR.store(t.warps_per_row, Ordering::Relaxed);
    TUNE_TARGET.store(t.target_warps, Ordering::Relaxed);
    TUNE_FUSE.store(t.fuse, Ordering::Relaxed);
    TUNE_FUSE_ROWS.store(t.fuse_rows, Ordering::Relaxed);
    TUNE_QUAD.store(t.quad as u32, Ordering::Relaxed);
    TUNE_MMA.store(t.mma, Ordering::Relaxed);
    TUNE_MMA_MIN.store(t.mma_min_batch, Ordering::Relaxed);
}

/// The knobs in force.
pub fn tuning() -> Tuning {
    Tuning {
        float_path: TUNE_FLOAT.load(Ordering::Relaxed) != 0,
        warps_per_row: TUNE_WPR.load(Ordering::Relaxed),
        target_warps: TUNE_TARGET.load(Ordering::Relaxed),
        fuse: TUNE_FUSE.load(Ordering::Relaxed),
        fuse_rows: TUNE_FUSE_ROWS.load(Ordering::Relaxed),
        quad: TUNE_QUAD.load(Ordering::Relaxed) != 0,
        mma: TUNE_MMA.load(Ordering::Relaxed),
        mma_min_batch: TUNE_MMA_MIN.load(Ordering::Relaxed),
    }
}

/// Weights per lane slice of the integer kernels (`Mmvq<T>::SE` in `matvec.cu`), or `None` for
/// types without an integer kernel.
fn mmvq_slice(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q4_0
        | GgmlType::Q4_1
        | GgmlType::Q5_0
        | GgmlType::Q5_1
        | GgmlType::Q8_0
        | GgmlType::Q4K
        | GgmlType::Q6K => Some(32),
        GgmlType::Q5K => Some(64),
        GgmlType::Q2K | GgmlType::Q3K => Some(128),
        _ => None,
    }
}

/// Warps per row: more for few, long rows (so the chip has work), while each lane keeps at least
/// two slices. Q6_K rows in a grid of at most `small_grid` rows take at least 2 (measured on the
/// H100, batch 1: 4096x11008 20.2 against 23.5 us, 4096x4096 9.1 against 9.4; Q4_K gained
/// nothing from it). Depends only on the shape and type, as batch invariance requires.
fn warps_per_row(t: Tuning, ty: GgmlType, rows: usize, slices: usize, small_grid: usize) -> u32 {
    if t.warps_per_row != 0 {
        return t.warps_per_row.clamp(1, 4).next_power_of_two();
    }
    let mut wpr = 1usize;
    while wpr < 4 && rows * wpr * 2 <= t.target_warps as usize && slices >= 64 * wpr {
        wpr *= 2;
    }
    if ty == GgmlType::Q6K && rows <= small_grid && slices >= 64 {
        wpr = wpr.max(2);
    }
    wpr as u32
}

/// Rows per block of the tensor-core kernel (`mmvqm`; its blocks are 4 warps).
const MMVQM_ROWS: usize = 16;

/// The CUDA compute capability as a number (`sm_90a` -> 90), 0 when the arch is not `sm_*`.
fn sm_version(dev: &GpuDevice) -> u32 {
    dev.info()
        .arch
        .strip_prefix("sm_")
        .and_then(|a| {
            a.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse::<u32>()
                .ok()
        })
        .unwrap_or(0)
}

/// [`Tuning::mma`], or `ROCMFORGE_MMA=N`, which overrides it process-wide (A/B runs of whole
/// programs).
fn mma_mode(t: Tuning) -> u32 {
    static ENV: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        std::env::var("ROCMFORGE_MMA")
            .ok()
            .and_then(|v| v.parse().ok())
    })
    .unwrap_or(t.mma)
}

/// The tensor-core kernel for this product, if it takes it: (kernel prefix, vectors per block,
/// warps per block).
fn mma_variant(
    dev: &GpuDevice,
    t: Tuning,
    w: &QMatrix,
    wpr: u32,
    batch: usize,
) -> Option<(&'static str, usize, usize)> {
    let info = dev.info();
    let sm = sm_version(dev);
    let mode = mma_mode(t);
    // By shape, 8 vectors (the 8-vector kernel's batch) take it only for large matrices of
    // short rows (H100, qwen2-0.5b shapes at 8 vectors: 9728x896 9.8 vs 17.4 us, 151936x896
    // 83 vs 197 us; 896x896 6.1 vs 5.5 us).
    let min_batch = if (mode == 1 || mode == 9) && w.rows >= 4096 && wpr == 1 {
        (t.mma_min_batch as usize).min(8)
    } else {
        t.mma_min_batch as usize
    };
    if mode == 0
        || batch < min_batch
        || w.ty != GgmlType::Q8_0
        || info.kind != GpuKind::Cuda
        || sm < 80
        || info.warp_size != 32
    {
        return None;
    }
    Some(match mode {
        2 => (MMVQM4_PREFIX, 32, 4),
        3 => (MMVQM2_PREFIX, 16, 4),
        4 => (MMVQMD4_PREFIX, 32, 4),
        5 => (MMVQS4_PREFIX, 32, 16),
        // by shape (H100, qwen2-0.5b Q8_0 shapes at 64 and 128 vectors): rows of 4 sub-warps
        // take them side by side (896x4864: 15.9 / 27.1 us against 25.0 / 32.4 with 16 vectors
        // per block), 32 vectors per block where that leaves 4 blocks per multiprocessor
        // (9728x896: 22.7 / 37.3 us against 27.9 / 48.5), else 16
        _ => {
            let wide = batch > 16
                && w.rows.div_ceil(MMVQM_ROWS) * batch.div_ceil(32)
                    >= 4 * info.multiprocessors as usize;
            if wpr == 4 {
                (MMVQS4_PREFIX, 32, 16)
            } else if wide {
                (MMVQM4_PREFIX, 32, 4)
            } else {
                (MMVQM2_PREFIX, 16, 4)
            }
        }
    })
}

/// Persistent x-stationary tensor-core kernels (`mmvqp` in matvec.cu): 8 warps and 64 vectors
/// x 16 rows per block, 4 warps and 32 x 16, or 8 warps and 32 x 32.
const MMVQP8_PREFIX: &str = "mmvqp8";
const MMVQP4_PREFIX: &str = "mmvqp4";
const MMVQR8_PREFIX: &str = "mmvqr8";
/// By shape ([`Tuning::mma`] 1), `mmvqp` takes products of more vectors than this.
const MMVQP_MIN_BATCH: usize = 16;

/// How `mmvqp` runs a product: kernel, vector subgroups of 32 and row subgroups of 16 per block
/// (`vg * rg` is 1 or 2), dynamic shared memory, blocks per vector group (row tiles between two
/// tiles of one block).
struct MmvqpPlan {
    prefix: &'static str,
    vg: usize,
    rg: usize,
    smem: usize,
    tile_stride: usize,
}

/// Dynamic shared memory of `mmvqp` (as the kernel lays it out): the block's vectors' Q8_1
/// values (rows padded to 8 mod 32 words) and scales, two 16-row weight tiles, the cross-warp
/// sums.
fn mmvqp_smem(vg: usize, rg: usize, cols: usize, row_bytes: usize) -> usize {
    let vb = 32 * vg;
    let xp = cols.next_multiple_of(128) + 32;
    vb * xp + cols / 32 * vb * 4 + 2 * 16 * rg * row_bytes + vg * rg * 4 * 16 * 32 * 4
}

/// `mmvqp` for this product, if it takes it (`mma_variant` already chose the tensor-core kernel
/// family; by shape from 17 vectors, or forced by modes 6-8): Q8_0
/// rows of one sub-warp and at most 32 slices, weights 16-byte aligned, and the shared memory
/// fits the chip (per block and per multiprocessor, by compute capability).
fn mmvqp_plan(
    dev: &GpuDevice,
    t: Tuning,
    w: &QMatrix,
    wpr: u32,
    batch: usize,
    wp: u64,
    row_bytes: usize,
) -> Option<MmvqpPlan> {
    let mode = mma_mode(t);
    let (prefix, vg, rg) = match mode {
        // by shape: from 17 vectors (H100, qwen2-0.5b Q8_0 shapes, `mmvqp4` against `mmvqm*`:
        // 9728x896 at 16 / 32 / 64 / 128 vectors 17.1 / 12.3 / 16.2 / 25.1 us against 10.1 /
        // 16.7 / 22.5 / 37.3; 151936x896 85.5 / 79.6 / 147 / 281 against 89.7 / 125 / 238 /
        // 472; 896x896 and 1152x896 within 0.5 us either way; 64 vectors per block never better)
        1 if batch > MMVQP_MIN_BATCH => (MMVQP4_PREFIX, 1, 1),
        6 => (MMVQP8_PREFIX, 2, 1),
        7 | 8 => (MMVQP4_PREFIX, 1, 1),
        10 => (MMVQR8_PREFIX, 1, 2),
        _ => return None,
    };
    if w.ty != GgmlType::Q8_0 || wpr != 1 || w.cols > 32 * 32 || !wp.is_multiple_of(16) {
        return None;
    }
    // Shared memory per block (opt-in maximum) and per multiprocessor.
    let (per_block, per_sm) = match sm_version(dev) {
        90 | 100 | 103 => (227 * 1024, 228 * 1024),
        80 | 87 => (163 * 1024, 164 * 1024),
        _ => (99 * 1024, 100 * 1024),
    };
    let smem = mmvqp_smem(vg, rg, w.cols, row_bytes);
    if smem > per_block {
        return None;
    }
    // resident blocks per multiprocessor: shared memory (1 KiB reserved per block) and the
    // kernels' launch bounds (256 threads x 2, 128 x 3)
    let resident = (per_sm / (smem + 1024)).clamp(1, if vg * rg == 2 { 2 } else { 3 });
    let slots = resident * (dev.info().multiprocessors as usize).max(1);
    let groups = batch.div_ceil(32 * vg);
    let tiles = w.rows.div_ceil(16 * rg);
    let tile_stride = if mode == 8 {
        1
    } else {
        // as many blocks as fit at once, every block the same number of tiles
        let ts = (slots / groups).clamp(1, tiles);
        tiles.div_ceil(tiles.div_ceil(ts))
    };
    Some(MmvqpPlan {
        prefix,
        vg,
        rg,
        smem,
        tile_stride,
    })
}

/// Quantizes `batch` vectors of `cols` floats to Q8_1 in pooled scratch: (scratch, xq, xds).
fn quantize_x(
    dev: &GpuDevice,
    x: &GpuBuffer<f32>,
    batch: usize,
    cols: usize,
) -> Result<(GpuBuffer<u8>, u64, u64)> {
    let total = batch * cols;
    // xq: total int8 values; xds: total / 32 (d, d * sum) pairs after it (total % 32 == 0).
    let scratch = dev.alloc_pooled::<u8>(total + total / 32 * 8)?;
    let q = dev.kernel(&MATVEC, QUANTIZE_Q8_1)?;
    let blocks = (total / 4).div_ceil(256);
    let cfg = LaunchConfig {
        grid: (dim("quantize blocks", blocks)?, 1, 1),
        block: (256, 1, 1),
        shared_mem: 0,
    };
    let xq = scratch.ptr();
    let xds = xq + total as u64;
    let qp = QuantizeParams {
        x: x.ptr(),
        xq,
        xds,
        total: dim("quantize elements", total)?,
    };
    // SAFETY: x holds `total` floats (checked by the caller), scratch `total + total / 8`
    // bytes; params mirror the kernel struct.
    unsafe { dev.launch_params(&q, cfg, &qp)? };
    Ok((scratch, xq, xds))
}

/// Runs `mmvqp` as planned (shapes checked by [`matvec`]).
#[allow(clippy::too_many_arguments)]
fn mmvqp(
    dev: &GpuDevice,
    w: &QMatrix,
    wp: u64,
    row_bytes: usize,
    x: &GpuBuffer<f32>,
    bias: Option<&GpuBuffer<f32>>,
    y: &GpuBuffer<f32>,
    batch: usize,
    plan: MmvqpPlan,
    pre: Option<(u64, u64)>,
) -> Result<()> {
    let (scratch, xq, xds) = match pre {
        Some((xq, xds)) => (None, xq, xds),
        None => {
            let (s, xq, xds) = quantize_x(dev, x, batch, w.cols)?;
            (Some(s), xq, xds)
        }
    };
    let k = dev.kernel(&MATVEC, &format!("{}_q8_0", plan.prefix))?;
    let groups = batch.div_ceil(32 * plan.vg);
    let p = MmvqParams {
        groups: dim("groups", groups)?,
        tile_stride: dim("tile stride", plan.tile_stride)?,
        ..MmvqParams::new(w, (wp, row_bytes), (xq, xds), x, bias, y, batch)?
    };
    let cfg = LaunchConfig {
        grid: (dim("blocks", plan.tile_stride * groups)?, 1, 1),
        block: (dim("threads", 128 * plan.vg * plan.rg)?, 1, 1),
        shared_mem: dim("shared memory", plan.smem)?,
    };
    // SAFETY: matrix, x, y and bias extents checked by the caller; the weights are 16-byte
    // aligned (checked by the plan) and the kernel reads whole rows only (16 * row_bytes is a
    // multiple of 16; a ragged last tile's tail is read in 2-byte loads); scratch and shared
    // memory sized above; params mirror the kernel struct. The scratch goes back to the pool
    // after the launch is queued (later users are ordered after this kernel on the stream).
    let r = unsafe { dev.launch_params(&k, cfg, &p) };
    drop(scratch);
    r
}

/// The integer path: quantize x to Q8_1 in pooled scratch (or take `pre`, x already quantized
/// by [`quantize_x`]), then dot. Shapes already checked by [`matvec`].
fn mmvq(
    dev: &GpuDevice,
    w: &QMatrix,
    x: &GpuBuffer<f32>,
    bias: Option<&GpuBuffer<f32>>,
    y: &GpuBuffer<f32>,
    batch: usize,
    pre: Option<(u64, u64)>,
) -> Result<()> {
    let (wp, row_bytes) = w.checked("matvec")?;
    let t = tuning();
    let se = mmvq_slice(w.ty).unwrap_or(32);
    let suffix = kernels::type_suffix(w.ty).unwrap_or("?");
    let warp = dev.info().warp_size as usize;
    // Rows that fill at most one wave of 32 warps per multiprocessor.
    let small_grid = 32 * (dev.info().multiprocessors as usize).max(1);
    let wpr = warps_per_row(t, w.ty, w.rows, w.cols / se, small_grid) as usize;
    let mma = mma_variant(dev, t, w, wpr as u32, batch);
    if mma.is_some() {
        if let Some(plan) = mmvqp_plan(dev, t, w, wpr as u32, batch, wp, row_bytes) {
            return mmvqp(dev, w, wp, row_bytes, x, bias, y, batch, plan, pre);
        }
    }
    // Over 8 vectors without tensor cores: the quad kernel (same float operations, `mmvqt` in
    // matvec.cu), which needs x pre-quantized and holds WARP_SIZE rows per block.
    let quads = mma.is_none() && batch > QUAD_MIN_BATCH && t.quad;
    // Vectors per block: more share each weight load, but registers bound it; a vector's result
    // is the same whichever (see the kernel), so this is free to follow the batch.
    // (16 measured slower than 8 on the H100: qwen2-0.5b Q8_0 pp512 10.3k vs 12.2k t/s)
    // Measured on the H100 (qwen2-0.5b Q8_0, batch-invariant pp512 / 64 sequences decoding):
    // quad kernel with 4 vectors and 2 warps per block 19.3k / 10.2k t/s; 8 and 4 warps 17.5k /
    // 8.3k.
    let nb = match mma {
        Some((_, v, _)) => v,
        None if quads => QUAD_VECTORS,
        None => match batch {
            1 => 1,
            2..=4 => 4,
            _ => 8,
        },
    };
    // One vector, one warp per row, a small grid and at least 4 slices per lane: the `x4`
    // kernels keep 4 slices' loads in flight per lane instead of 2 (H100, batch 1: Q4_K
    // 4096x4096 6.3 -> 5.5 us, 4096x11008 15.6 -> 13.1; larger grids lost 2-3%).
    let long = batch == 1 && wpr == 1 && w.rows <= small_grid && w.cols / se >= 4 * warp;
    // Warps and rows per block.
    let (warps, block_rows) = match mma {
        Some((_, _, warps)) => (warps, MMVQM_ROWS),
        None if quads => (QUAD_WARPS, QUAD_WARPS * warp / 4),
        None => (4, 4 / wpr),
    };
    // Fused (plain kernels of up to 4 vectors): each block quantizes its vectors into shared
    // memory.
    let smem = nb.min(batch) * w.cols * 5 / 4;
    let fuse = pre.is_none()
        && mma.is_none()
        && !quads
        && nb <= 4
        && match t.fuse {
            0 => false,
            1 => 4 * w.cols * nb.min(batch) <= row_bytes * block_rows,
            _ => true,
        }
        && w.rows <= t.fuse_rows as usize
        && smem <= 32 * 1024;
    let (scratch, xq, xds, shared_mem) = if fuse {
        (None, 0, 0, dim("shared memory", smem)?)
    } else if let Some((xq, xds)) = pre {
        (None, xq, xds, 0)
    } else {
        let (scratch, xq, xds) = quantize_x(dev, x, batch, w.cols)?;
        (Some(scratch), xq, xds, 0)
    };
    let prefix = match (mma, fuse, nb) {
        (Some((prefix, _, _)), _, _) => prefix,
        _ if quads => MMVQT4_PREFIX,
        (_, false, 1) if long => MMVQ1X4_PREFIX,
        (_, true, 1) if long => MMVQF1X4_PREFIX,
        (_, false, 1) => MMVQ1_PREFIX,
        (_, false, 4) => MMVQ4_PREFIX,
        (_, false, _) => MMVQ8_PREFIX,
        (_, true, 1) => MMVQF1_PREFIX,
        (_, true, _) => MMVQF4_PREFIX,
    };
    let k = dev.kernel(&MATVEC, &format!("{prefix}_{suffix}"))?;
    let mut p = MmvqParams {
        warps_per_row: wpr as u32,
        ..MmvqParams::new(w, (wp, row_bytes), (xq, xds), x, bias, y, batch)?
    };
    let row_blocks = w.rows.div_ceil(block_rows);
    let groups = batch.div_ceil(nb);
    // Several groups: a 1-D grid with the groups of a row block side by side, so that the
    // weights come from L2 after the first group (a whole matrix between two reads of it would
    // not fit in L2 for an output layer).
    let grid = if groups > 1 {
        p.groups = groups as u32;
        (dim("blocks", row_blocks * groups)?, 1, 1)
    } else {
        (dim("blocks", row_blocks)?, 1, 1)
    };
    let cfg = LaunchConfig {
        grid,
        block: (dim("threads", warps * warp)?, 1, 1),
        shared_mem,
    };
    // SAFETY: matrix, x, y and bias extents checked by the caller, scratch and shared memory
    // sized above; params mirror the kernel struct. The scratch goes back to the pool after the
    // launch is queued: later users of it are ordered after this kernel on the stream.
    let r = unsafe { dev.launch_params(&k, cfg, &p) };
    drop(scratch);
    r
}

/// One product of [`matvec_shared_x`]: matrix, bias, output.
pub type Product<'a> = (
    &'a QMatrix<'a>,
    Option<&'a GpuBuffer<f32>>,
    &'a GpuBuffer<f32>,
);

/// Several products of one x (`[batch, cols]`), each `(w, bias, y)` as in [`matvec`]: x is
/// rounded to Q8_1 once for all of them where every matrix takes the integer path (separate
/// Q, K and V projections whose types differ, so that they cannot be stacked), else each runs
/// through [`matvec`]. The same results as separate calls: every integer kernel sees the same
/// Q8_1 x.
pub fn matvec_shared_x(
    dev: &GpuDevice,
    products: &[Product<'_>],
    x: &GpuBuffer<f32>,
    batch: usize,
) -> Result<()> {
    let t = tuning();
    let Some(cols) = products.first().map(|p| p.0.cols) else {
        return Ok(());
    };
    let shared = products.len() > 1
        && !t.float_path
        && (1..=65535).contains(&batch)
        && products
            .iter()
            .all(|(w, _, _)| w.cols == cols && w.rows > 0 && mmvq_slice(w.ty).is_some());
    if !shared {
        for &(w, bias, y) in products {
            matvec(dev, w, x, bias, y, batch)?;
        }
        return Ok(());
    }
    for &(w, bias, y) in products {
        w.checked("matvec")?;
        check_len("matvec y", y, batch * w.rows)?;
        if let Some(b) = bias {
            check_len("matvec bias", b, w.rows)?;
        }
    }
    check_len("matvec x", x, batch * cols)?;
    let (scratch, xq, xds) = quantize_x(dev, x, batch, cols)?;
    for &(w, bias, y) in products {
        mmvq(dev, w, x, bias, y, batch, Some((xq, xds)))?;
    }
    // The scratch returns to the pool after every product is queued (ordered after them).
    drop(scratch);
    Ok(())
}

/// `y[b, r] = sum_k W[r, k] x[b, k] (+ bias[r])` for `b < batch`; x is `[batch, cols]`, y is
/// `[batch, rows]`. Each weight is read once per 4 to 8 vectors (once in all for `batch <= 4`);
/// for speed with many vectors use [`super::matmul::matmul`]. Batch-invariant: a vector's result
/// is bit for bit the same whatever batch it is in (every kernel variant does the same float
/// operations per output; see `mmvq` and `mmvqt` in matvec.cu). Quantized weights see x rounded to Q8_1 (8-bit,
/// blocks of 32): the result is exact for that x up to f32 rounding, so its error against the
/// float product is at most `sum_k |w_k| amax_k / 254` (amax_k: the largest |x| of k's block).
pub fn matvec(
    dev: &GpuDevice,
    w: &QMatrix,
    x: &GpuBuffer<f32>,
    bias: Option<&GpuBuffer<f32>>,
    y: &GpuBuffer<f32>,
    batch: usize,
) -> Result<()> {
    let (wp, row_bytes) = w.checked("matvec")?;
    check_len("matvec x", x, batch * w.cols)?;
    check_len("matvec y", y, batch * w.rows)?;
    if let Some(b) = bias {
        check_len("matvec bias", b, w.rows)?;
    }
    if batch == 0 || w.rows == 0 {
        return Ok(());
    }
    if batch > 65535 {
        return Err(Error::Gpu(format!("matvec batch {batch} exceeds 65535")));
    }
    let t = tuning();
    if mmvq_slice(w.ty).is_some() && !t.float_path {
        return mmvq(dev, w, x, bias, y, batch, None);
    }
    let name = if w.chunked() {
        format!(
            "{MATVEC_PREFIX}_{}",
            kernels::type_suffix(w.ty).unwrap_or("?")
        )
    } else {
        match w.ty {
            GgmlType::F32 => kernels::MATVEC_SCALAR_F32.to_string(),
            GgmlType::F16 => kernels::MATVEC_SCALAR_F16.to_string(),
            GgmlType::BF16 => kernels::MATVEC_SCALAR_BF16.to_string(),
            _ => {
                return Err(Error::Gpu(format!(
                    "matvec: {} with {} columns",
                    w.ty, w.cols
                )))
            }
        }
    };
    let k = dev.kernel(&MATVEC, &name)?;
    let warp = dev.info().warp_size as usize;
    // A warp computes MV_ROWS (4) rows in the chunked kernel, 1 in the element kernel. Small
    // matrices get blocks of 4 warps so that the rows spread over more multiprocessors.
    // Measured on the H100: 4 rows per warp cut 4096x4096 Q4_K from 19.9 to 14.7 us but doubled
    // 896x896 Q8_0 (2.9 -> 5.2 us, too few warps); so 4 from 4096 rows up.
    let rows_per_warp = if w.chunked() && w.rows >= 4096 { 4 } else { 1 };
    let mps = (dev.info().multiprocessors as usize).max(1);
    let threads = if w.rows / (rows_per_warp * 256 / warp) < 2 * mps {
        128
    } else {
        256
    };
    let rows_per_block = rows_per_warp * threads / warp;
    let p = MatvecParams {
        w: wp,
        x: x.ptr(),
        bias: bias.map_or(0, |b| b.ptr()),
        y: y.ptr(),
        row_bytes: row_bytes as u64,
        rows: dim("rows", w.rows)?,
        cols: dim("cols", w.cols)?,
        x_stride: dim("cols", w.cols)?,
        y_stride: dim("rows", w.rows)?,
        rows_per_warp: rows_per_warp as u32,
    };
    let cfg = LaunchConfig {
        grid: (
            dim("blocks", w.rows.div_ceil(rows_per_block))?,
            batch as u32,
            1,
        ),
        block: (threads as u32, 1, 1),
        shared_mem: 0,
    };
    // SAFETY: matrix, x, y and bias extents checked above; params mirror the kernel struct.
    unsafe { dev.launch_params(&k, cfg, &p) }
}
