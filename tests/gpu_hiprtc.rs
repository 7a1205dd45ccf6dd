//! The AMD path compiles: every kernel file through hiprtc (no GPU needed) for gfx90a (CDNA2,
//! wave64) and gfx1030 (RDNA2, wave32). On Debian, hiprtc lives in `libamdhip64.so.5` (apt-get
//! install hipcc). Skipped with the reason when no hiprtc is found, unless
//! `ROCMFORGE_REQUIRE_HIPRTC` is set (CI sets it after installing hipcc).

use rocmforge::backend::gpu::hip::{compile_for_arch, hiprtc_available};
use rocmforge::backend::gpu::kernels::ALL;

#[test]
fn every_kernel_compiles_with_hiprtc() {
    let lib = match hiprtc_available() {
        Ok(l) => l,
        Err(e) => {
            assert!(
                std::env::var_os("ROCMFORGE_REQUIRE_HIPRTC").is_none(),
                "ROCMFORGE_REQUIRE_HIPRTC is set but {e}"
            );
            println!("skipped: no hiprtc ({e})");
            return;
        }
    };
    println!("hiprtc: {lib}");
    for arch in ["gfx90a", "gfx1030"] {
        for src in ALL {
            let code = compile_for_arch(src, arch)
                .unwrap_or_else(|e| panic!("{} for {arch}: {e}", src.name));
            assert!(
                !code.is_empty(),
                "{} for {arch}: empty code object",
                src.name
            );
            // An AMD GPU code object is an ELF file (or an offload bundle wrapping one).
            assert!(
                code.starts_with(b"\x7fELF") || code.starts_with(b"__CLANG_OFFLOAD_BUNDLE__"),
                "{} for {arch}: not a code object",
                src.name
            );
            println!("{} {arch}: {} bytes", src.name, code.len());
        }
    }
}
