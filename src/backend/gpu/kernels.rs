//! The kernel sources, embedded, and the kernel names shared with them.
//!
//! Each `kernels/<family>.cu` starts with `#include "compat.h"`; [`KernelSource::full_source`]
//! splices the header in, so NVRTC and hiprtc need no include paths.

use crate::quant::GgmlType;

/// The compat header every kernel file includes.
pub const COMPAT_H: &str = include_str!("../../../kernels/compat.h");
/// The quantized block formats, shared by matvec, matmul and embedding.
pub const QUANTS_H: &str = include_str!("../../../kernels/quants.h");

/// One kernel file: its family name and source text.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// Family name, also the module's cache name (`rms_norm`).
    pub name: &'static str,
    /// The file's text as written.
    pub source: &'static str,
    /// The kernel names the file defines.
    pub kernels: &'static [&'static str],
}

impl KernelSource {
    /// The source with `compat.h` spliced in.
    pub fn full_source(&self) -> String {
        let mut s = self.source.to_string();
        for (inc, text) in [
            ("#include \"quants.h\"", QUANTS_H),
            ("#include \"compat.h\"", COMPAT_H),
        ] {
            if let Some(i) = s.find(inc) {
                s.replace_range(i..i + inc.len(), text);
                s = s.replace(inc, "");
            }
        }
        s.replace("#pragma once", "")
    }
}

/// Options every compilation gets (besides the architecture).
pub fn compile_options(warp_size: u32) -> Vec<String> {
    vec![format!("-DWARP_SIZE={warp_size}")]
}

macro_rules! kernel_file {
    ($konst:ident, $file:literal, [$($kname:ident = $kstr:literal),* $(,)?]) => {
        $(#[doc = concat!("Kernel `", $kstr, "` of `kernels/", $file, ".cu`.")]
        pub const $kname: &str = $kstr;)*
        #[doc = concat!("`kernels/", $file, ".cu`.")]
        pub const $konst: KernelSource = KernelSource {
            name: $file,
            source: include_str!(concat!("../../../kernels/", $file, ".cu")),
            kernels: &[$($kstr),*],
        };
    };
}

kernel_file!(
    GLU,
    "glu",
    [SWIGLU_F32 = "swiglu_f32", GEGLU_F32 = "geglu_f32"]
);
kernel_file!(
    RMS_NORM,
    "rms_norm",
    [
        RMS_NORM_F32 = "rms_norm_f32",
        RMS_NORM_F32_R8 = "rms_norm_f32_r8"
    ]
);
kernel_file!(
    ROPE,
    "rope",
    [
        ROPE_F32 = "rope_f32",
        QKV_ROPE_STORE_F32 = "qkv_rope_store_f32"
    ]
);
kernel_file!(SOFTMAX, "softmax", [SOFTMAX_F32 = "softmax_f32"]);
kernel_file!(ARGMAX, "argmax", [ARGMAX_F32 = "argmax_f32"]);
kernel_file!(
    ATTENTION,
    "attention",
    [
        ATTENTION_F16KV = "attention_f16kv",
        ATTENTION_COMBINE = "attention_combine",
        ATTENTION_VEC_D64 = "attention_vec_d64",
        ATTENTION_VEC_D128 = "attention_vec_d128",
        ATTENTION_VEC_D256 = "attention_vec_d256",
        ATTENTION_TILED_D64 = "attention_tiled_d64",
        ATTENTION_TILED_D128 = "attention_tiled_d128",
        ATTENTION_TILED_D256 = "attention_tiled_d256",
        KV_WRITE_F16 = "kv_write_f16",
        KV_STORE_F16 = "kv_store_f16",
        WEIGHTED_V_F16KV = "weighted_v_f16kv",
    ]
);
kernel_file!(
    MATVEC,
    "matvec",
    [
        MATVEC_SCALAR_F32 = "matvec_scalar_f32",
        MATVEC_SCALAR_F16 = "matvec_scalar_f16",
        MATVEC_SCALAR_BF16 = "matvec_scalar_bf16",
        QUANTIZE_Q8_1 = "quantize_q8_1",
    ]
);
kernel_file!(MATMUL, "matmul", [F32_TO_F16 = "f32_to_f16"]);
kernel_file!(
    ELEMENTWISE,
    "elementwise",
    [
        ADD_F32 = "add_f32",
        ADD_BIAS_F32 = "add_bias_f32",
        SCALE_F32 = "scale_f32",
        SOFTCAP_F32 = "softcap_f32",
        GET_ROWS_F32 = "get_rows_f32",
    ]
);
kernel_file!(PROFILE, "profile", [PROFILE_STAMP = "profile_stamp"]);
kernel_file!(
    EMBEDDING,
    "embedding",
    [
        EMBEDDING_SCALAR_F32 = "embedding_scalar_f32",
        EMBEDDING_SCALAR_F16 = "embedding_scalar_f16",
    ]
);

/// Prefixes of the kernels instantiated once per tensor type (`matvec_q4_k`), by
/// `RF_FOR_EACH_TYPE` in `quants.h`.
pub const MATVEC_PREFIX: &str = "matvec";
/// Integer-dot matrix-vector kernels of `matvec.cu`, one vector (`mmvq1_q4_k`) or up to 4.
pub const MMVQ1_PREFIX: &str = "mmvq1";
/// See [`MMVQ1_PREFIX`].
pub const MMVQ4_PREFIX: &str = "mmvq4";
/// See [`MMVQ1_PREFIX`]; these quantize x themselves (`mmvqf1_q8_0`).
pub const MMVQF1_PREFIX: &str = "mmvqf1";
/// See [`MMVQF1_PREFIX`].
pub const MMVQF4_PREFIX: &str = "mmvqf4";
/// See [`MMVQ1_PREFIX`]; up to 8 vectors per block (`mmvq8_q8_0`), for many vectors.
pub const MMVQ8_PREFIX: &str = "mmvq8";
/// See [`MMVQ8_PREFIX`]; a quad of lanes per row and 4 vectors per block, for many vectors
/// (`mmvqt4_q8_0`).
pub const MMVQT4_PREFIX: &str = "mmvqt4";
/// See [`MMVQ1_PREFIX`]; 4 slices per lane at a time, for long rows in a small grid.
pub const MMVQ1X4_PREFIX: &str = "mmvq1x4";
/// See [`MMVQ1X4_PREFIX`] and [`MMVQF1_PREFIX`].
pub const MMVQF1X4_PREFIX: &str = "mmvqf1x4";
/// Tensor-core kernel for many vectors, 32 per block (`mmvqm4_q8_0`; Q8_0 only).
pub const MMVQM4_PREFIX: &str = "mmvqm4";
/// See [`MMVQM4_PREFIX`]; 16 vectors per block.
pub const MMVQM2_PREFIX: &str = "mmvqm2";
/// See [`MMVQM4_PREFIX`]; the 4 sub-warps of long rows side by side, 16 warps per block.
pub const MMVQS4_PREFIX: &str = "mmvqs4";
/// See [`MMVQM4_PREFIX`]; the same with dp4a instead of MMA (a check).
pub const MMVQMD4_PREFIX: &str = "mmvqd4";
/// See [`MATVEC_PREFIX`].
pub const MATMUL_PREFIX: &str = "matmul";
/// See [`MATVEC_PREFIX`].
pub const DEQUANT_F16_PREFIX: &str = "dequant_f16";
/// See [`MATVEC_PREFIX`].
pub const EMBEDDING_PREFIX: &str = "embedding";

/// The kernel-name suffix of a tensor type (`q4_k`), or `None` for types without kernels.
pub fn type_suffix(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::F32 => "f32",
        GgmlType::F16 => "f16",
        GgmlType::BF16 => "bf16",
        GgmlType::Q4_0 => "q4_0",
        GgmlType::Q4_1 => "q4_1",
        GgmlType::Q5_0 => "q5_0",
        GgmlType::Q5_1 => "q5_1",
        GgmlType::Q8_0 => "q8_0",
        GgmlType::Q2K => "q2_k",
        GgmlType::Q3K => "q3_k",
        GgmlType::Q4K => "q4_k",
        GgmlType::Q5K => "q5_k",
        GgmlType::Q6K => "q6_k",
        _ => return None,
    })
}

/// The types with GPU kernels.
pub const GPU_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// Every kernel file, for CI compilation checks.
pub const ALL: &[KernelSource] = &[
    GLU,
    RMS_NORM,
    ROPE,
    SOFTMAX,
    ARGMAX,
    ATTENTION,
    MATVEC,
    MATMUL,
    EMBEDDING,
    ELEMENTWISE,
    PROFILE,
    crate::sampler::gpu::SAMPLING,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_name_is_defined_in_its_source() {
        for f in ALL {
            assert!(
                f.source.contains("#include \"compat.h\"")
                    || f.source.contains("#include \"quants.h\""),
                "{}",
                f.name
            );
            for k in f.kernels {
                let decl = format!("RF_KERNEL void {k}(");
                assert!(f.source.contains(&decl), "{} lacks {decl}", f.name);
            }
            let full = f.full_source();
            assert!(!full.contains("#include \"compat.h\""), "{}", f.name);
            assert!(!full.contains("#include \"quants.h\""), "{}", f.name);
        }
    }

    #[test]
    fn per_type_kernels_cover_gpu_types() {
        for ty in GPU_TYPES {
            let s = type_suffix(ty).unwrap();
            let m = format!("MACRO(RF_{}, {s})", s.to_uppercase());
            assert!(QUANTS_H.contains(&m), "quants.h lacks {m}");
            let id = format!("#define RF_{} {}", s.to_uppercase(), ty as u32);
            assert!(QUANTS_H.contains(&id), "quants.h lacks {id}");
        }
    }
}
