//! Quantized tensor formats, laid out exactly as GGUF files store them, and the CPU's
//! quantized matrix product.
//!
//! One file per block family: each holds the `#[repr(C)]` block with a size assert,
//! dequantization, quantization (ggml's `quantize_row_*_ref`), the scalar dot product against
//! the activation-side format (`vec_dot_ref`) and, on x86_64, its AVX2 kernel beside it.
//!
//! Public entry points:
//! - [`dequantize_row`] / [`quantize_row`]: one row, lengths checked.
//! - [`vec_dot_type`]: what activations are quantized to for a weight type (as ggml).
//! - [`vec_dot`] / [`vec_dot_ref`]: one weight row with one quantized activation row.
//! - [`matmul`]: `out[t, r] = W[r] . x[t]` for f32 activations; the CPU backend's linear layer.
//!
//! Kernels chosen at run time: AVX2+FMA+F16C for F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (Q8_1 and Q8_K weights: scalar)
//! (4-token prefill kernels for Q4_0, Q5_0, Q8_0, Q4_K, Q6_K; register-tiled prefill for Q4_0,
//! Q5_0, Q8_0 in `tile`); scalar elsewhere.

use crate::{Error, Result};

mod float;
mod matmul;
mod q2_k;
mod q3_k;
mod q4;
mod q4_k;
mod q5;
mod q5_k;
mod q6_k;
mod q8;
mod q8_k;
#[cfg(target_arch = "x86_64")]
mod simd;
#[cfg(target_arch = "x86_64")]
mod tile;

pub use matmul::matmul;

/// Elements in a k-quant super-block.
pub(crate) const QK_K: usize = 256;

/// A quant block made only of byte arrays: alignment 1, every bit pattern valid.
///
/// # Safety
/// Implementors must be `#[repr(C)]` structs whose fields are all `u8` arrays.
pub(crate) unsafe trait Block: Copy {}

/// Views `bytes` as blocks. The caller has checked `bytes.len()` is a multiple of the block size.
pub(crate) fn as_blocks<B: Block>(bytes: &[u8]) -> &[B] {
    let n = bytes.len() / std::mem::size_of::<B>();
    debug_assert_eq!(std::mem::align_of::<B>(), 1);
    // SAFETY: B is a repr(C) struct of u8 arrays (Block's contract): alignment 1, any bytes valid,
    // and n * size_of::<B>() <= bytes.len().
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), n) }
}

/// Views `bytes` as mutable blocks. The caller has checked the length.
pub(crate) fn as_blocks_mut<B: Block>(bytes: &mut [u8]) -> &mut [B] {
    let n = bytes.len() / std::mem::size_of::<B>();
    debug_assert_eq!(std::mem::align_of::<B>(), 1);
    // SAFETY: as in `as_blocks`; the borrow is unique.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), n) }
}

/// IEEE half (little-endian bytes) to f32.
#[inline(always)]
pub(crate) fn f16_to_f32(h: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(h).to_f32()
}

/// f32 to IEEE half bytes, round to nearest even (as ggml's GGML_FP32_TO_FP16).
#[inline(always)]
pub(crate) fn f32_to_f16(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// ggml's `nearest_int`: round half to even for |x| < 2^22 via the 1.5*2^23 trick.
#[inline(always)]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0f32;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// A ggml tensor type as stored in GGUF tensor infos. The discriminants are ggml's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2K = 10,
    Q3K = 11,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
    Q8K = 15,
    BF16 = 30,
}

/// Every type this crate knows, in id order.
pub const ALL_TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8K,
    GgmlType::BF16,
];

impl GgmlType {
    /// The type with ggml id `id`, or an error naming the id.
    pub fn from_id(id: u32) -> Result<Self> {
        ALL_TYPES
            .iter()
            .copied()
            .find(|t| *t as u32 == id)
            .ok_or_else(|| Error::Quant(format!("unknown ggml tensor type id {id}")))
    }

    /// ggml's name for the type (as llama.cpp prints it).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q3K => "Q3_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::Q8K => "Q8_K",
            GgmlType::BF16 => "BF16",
        }
    }

    /// Elements per block (1 for the float types).
    pub fn block_elems(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => 32,
            GgmlType::Q8_0 | GgmlType::Q8_1 => 32,
            GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K => 256,
            GgmlType::Q5K | GgmlType::Q6K | GgmlType::Q8K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q8_1 => 36,
            GgmlType::Q2K => 84,
            GgmlType::Q3K => 110,
            GgmlType::Q4K => 144,
            GgmlType::Q5K => 176,
            GgmlType::Q6K => 210,
            GgmlType::Q8K => 292,
        }
    }

    /// Bytes needed for `n` elements, or None when `n` is not a whole number of blocks
    /// or the size overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let be = self.block_elems() as u64;
        if !n.is_multiple_of(be) {
            return None;
        }
        (n / be).checked_mul(self.block_bytes() as u64)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn check_row(ty: GgmlType, bytes: usize, n: usize, what: &str) -> Result<()> {
    let need = ty.row_bytes(n as u64).ok_or_else(|| {
        Error::Quant(format!(
            "{ty}: {n} elements is not a whole number of {}-element blocks",
            ty.block_elems()
        ))
    })?;
    if bytes as u64 != need {
        return Err(Error::Quant(format!(
            "{ty}: {what} has {bytes} bytes but {n} elements need {need}"
        )));
    }
    Ok(())
}

/// Dequantizes one row: `dst.len()` elements from `src`, which must be exactly
/// `ty.row_bytes(dst.len())` bytes.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    check_row(ty, src.len(), dst.len(), "source")?;
    match ty {
        GgmlType::F32 => float::dequantize_f32(src, dst),
        GgmlType::F16 => float::dequantize_f16(src, dst),
        GgmlType::BF16 => float::dequantize_bf16(src, dst),
        GgmlType::Q4_0 => q4::dequantize_q4_0(as_blocks(src), dst),
        GgmlType::Q4_1 => q4::dequantize_q4_1(as_blocks(src), dst),
        GgmlType::Q5_0 => q5::dequantize_q5_0(as_blocks(src), dst),
        GgmlType::Q5_1 => q5::dequantize_q5_1(as_blocks(src), dst),
        GgmlType::Q8_0 => q8::dequantize_q8_0(as_blocks(src), dst),
        GgmlType::Q8_1 => q8::dequantize_q8_1(as_blocks(src), dst),
        GgmlType::Q2K => q2_k::dequantize(as_blocks(src), dst),
        GgmlType::Q3K => q3_k::dequantize(as_blocks(src), dst),
        GgmlType::Q4K => q4_k::dequantize(as_blocks(src), dst),
        GgmlType::Q5K => q5_k::dequantize(as_blocks(src), dst),
        GgmlType::Q6K => q6_k::dequantize(as_blocks(src), dst),
        GgmlType::Q8K => q8_k::dequantize(as_blocks(src), dst),
    }
    Ok(())
}

/// Quantizes one row with ggml's reference quantizer (`quantize_row_*_ref`): `src.len()`
/// elements into `dst`, which must be exactly `ty.row_bytes(src.len())` bytes.
/// Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q4_K, Q5_K, Q6_K, Q8_K.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    check_row(ty, dst.len(), src.len(), "destination")?;
    match ty {
        GgmlType::F32 => float::quantize_f32(src, dst),
        GgmlType::F16 => float::quantize_f16(src, dst),
        GgmlType::BF16 => float::quantize_bf16(src, dst),
        GgmlType::Q4_0 => q4::quantize_q4_0(src, as_blocks_mut(dst)),
        GgmlType::Q4_1 => q4::quantize_q4_1(src, as_blocks_mut(dst)),
        GgmlType::Q5_0 => q5::quantize_q5_0(src, as_blocks_mut(dst)),
        GgmlType::Q5_1 => q5::quantize_q5_1(src, as_blocks_mut(dst)),
        GgmlType::Q8_0 => q8::quantize_q8_0(src, as_blocks_mut(dst)),
        GgmlType::Q8_1 => q8::quantize_q8_1(src, as_blocks_mut(dst)),
        GgmlType::Q4K => q4_k::quantize(src, as_blocks_mut(dst)),
        GgmlType::Q5K => q5_k::quantize(src, as_blocks_mut(dst)),
        GgmlType::Q6K => q6_k::quantize(src, as_blocks_mut(dst)),
        GgmlType::Q8K => q8_k::quantize(src, as_blocks_mut(dst)),
        GgmlType::Q2K | GgmlType::Q3K => {
            return Err(Error::Quant(format!(
                "quantization to {ty} is not supported"
            )))
        }
    }
    Ok(())
}

/// Quantizes one activation row for a dot product, as ggml-cpu's `from_float` does on this
/// machine: Q8_0 and Q8_1 round like its SIMD quantizers (see `q8::quantize_q8_0_act`), other
/// types as [`quantize_row`]. Matches llama.cpp's CPU products exactly; weights keep
/// [`quantize_row`] (the reference rounding the gguf package reproduces).
pub fn quantize_act_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    match ty {
        GgmlType::Q8_0 => {
            check_row(ty, dst.len(), src.len(), "destination")?;
            q8::quantize_q8_0_act(src, as_blocks_mut(dst));
            Ok(())
        }
        GgmlType::Q8_1 => {
            check_row(ty, dst.len(), src.len(), "destination")?;
            q8::quantize_q8_1_act(src, as_blocks_mut(dst));
            Ok(())
        }
        _ => quantize_row(ty, src, dst),
    }
}

/// The type activations are quantized to before a dot product with weights of type `ty`
/// (ggml's `vec_dot_type`). For float weights the activation stays f32.
pub fn vec_dot_type(ty: GgmlType) -> GgmlType {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => GgmlType::F32,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => GgmlType::Q8_1,
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K => GgmlType::Q8K,
        GgmlType::Q5K | GgmlType::Q6K | GgmlType::Q8K => GgmlType::Q8K,
    }
}

/// A dot-product kernel over `n` elements; lengths already checked.
pub(crate) type DotFn = fn(&[u8], &[u8], usize) -> f32;

fn dot_lengths_ok(ty: GgmlType, w: &[u8], act: &[u8], n: usize) -> bool {
    let wb = ty.row_bytes(n as u64);
    let ab = vec_dot_type(ty).row_bytes(n as u64);
    matches!((wb, ab), (Some(wb), Some(ab)) if w.len() as u64 == wb && act.len() as u64 == ab)
}

/// The plain scalar kernel for `ty`.
pub(crate) fn ref_kernel(ty: GgmlType) -> DotFn {
    match ty {
        GgmlType::F32 => float::vec_dot_f32_ref,
        GgmlType::F16 => float::vec_dot_f16_ref,
        GgmlType::BF16 => float::vec_dot_bf16_ref,
        GgmlType::Q4_0 => |w, a, _| q4::vec_dot_q4_0_ref(as_blocks(w), as_blocks(a)),
        GgmlType::Q4_1 => |w, a, _| q4::vec_dot_q4_1_ref(as_blocks(w), as_blocks(a)),
        GgmlType::Q5_0 => |w, a, _| q5::vec_dot_q5_0_ref(as_blocks(w), as_blocks(a)),
        GgmlType::Q5_1 => |w, a, _| q5::vec_dot_q5_1_ref(as_blocks(w), as_blocks(a)),
        GgmlType::Q8_0 => |w, a, _| q8::vec_dot_q8_0_ref(as_blocks(w), as_blocks(a)),
        GgmlType::Q8_1 => |w, a, _| q8::vec_dot_q8_1_ref(as_blocks(w), as_blocks(a)),
        GgmlType::Q2K => |w, a, _| q2_k::vec_dot_ref(as_blocks(w), as_blocks(a)),
        GgmlType::Q3K => |w, a, _| q3_k::vec_dot_ref(as_blocks(w), as_blocks(a)),
        GgmlType::Q4K => |w, a, _| q4_k::vec_dot_ref(as_blocks(w), as_blocks(a)),
        GgmlType::Q5K => |w, a, _| q5_k::vec_dot_ref(as_blocks(w), as_blocks(a)),
        GgmlType::Q6K => |w, a, _| q6_k::vec_dot_ref(as_blocks(w), as_blocks(a)),
        GgmlType::Q8K => |w, a, _| q8_k::vec_dot_ref(as_blocks(w), as_blocks(a)),
    }
}

/// A kernel dotting one weight row with 4 activation rows at once (prefill).
pub(crate) type Dot4Fn = fn(&[u8], [&[u8]; 4], usize) -> [f32; 4];

/// The 4-token kernel for `ty` where one exists on this CPU.
pub(crate) fn best_kernel_x4(ty: GgmlType) -> Option<Dot4Fn> {
    #[cfg(target_arch = "x86_64")]
    return simd::kernel_x4(ty);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

/// The fastest kernel for `ty` on this CPU (AVX2+FMA+F16C where detected, scalar otherwise).
pub(crate) fn best_kernel(ty: GgmlType) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = simd::kernel(ty) {
        return k;
    }
    ref_kernel(ty)
}

/// Dot product of one weight row `w` (type `ty`, `n` elements) with one activation row `act`
/// already quantized to [`vec_dot_type`]`(ty)` (for f32 activations: the f32 bytes), using the
/// fastest kernel this CPU supports. Returns NaN when a length does not match `n`.
pub fn vec_dot(ty: GgmlType, w: &[u8], act: &[u8], n: usize) -> f32 {
    if !dot_lengths_ok(ty, w, act, n) {
        return f32::NAN;
    }
    best_kernel(ty)(w, act, n)
}

/// The plain scalar reference for [`vec_dot`]: same inputs, same result up to float summation
/// order. Returns NaN when a length does not match `n`.
pub fn vec_dot_ref(ty: GgmlType, w: &[u8], act: &[u8], n: usize) -> f32 {
    if !dot_lengths_ok(ty, w, act, n) {
        return f32::NAN;
    }
    ref_kernel(ty)(w, act, n)
}

#[cfg(test)]
mod tests;
