//! The kernel sources, embedded, and the kernel names shared with them.
//!
//! Each `kernels/<family>.cu` starts with `#include "compat.h"`; [`KernelSource::full_source`]
//! splices the header in, so NVRTC and hiprtc need no include paths.

/// The compat header every kernel file includes.
pub const COMPAT_H: &str = include_str!("../../../kernels/compat.h");

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
        self.source.replace("#include \"compat.h\"", COMPAT_H)
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

/// Every kernel file, for CI compilation checks.
pub const ALL: &[KernelSource] = &[GLU];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_name_is_defined_in_its_source() {
        for f in ALL {
            assert!(f.source.contains("#include \"compat.h\""), "{}", f.name);
            for k in f.kernels {
                let decl = format!("RF_KERNEL void {k}(");
                assert!(f.source.contains(&decl), "{} lacks {decl}", f.name);
            }
        }
    }
}
