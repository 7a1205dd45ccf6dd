//! The on-disk cache of compiled kernel modules.
//!
//! Location: `$ROCMFORGE_KERNEL_CACHE`, else `$XDG_CACHE_HOME/rocmforge/kernels`, else
//! `~/.cache/rocmforge/kernels`. Key: SHA-256 of the full source, the compiler options, the
//! device architecture, the driver version and the compiler version. Files are written to a
//! temporary name and renamed, so parallel tests never read half a file. A cache that cannot be
//! written is not an error: the module is compiled each time.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::kernels::{compile_options, KernelSource};
use super::Driver;
use crate::Result;

/// The cache directory, if one can be named.
pub fn cache_dir() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ROCMFORGE_KERNEL_CACHE") {
        return Some(PathBuf::from(p));
    }
    let base = match std::env::var("XDG_CACHE_HOME") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(std::env::var("HOME").ok()?).join(".cache"),
    };
    Some(base.join("rocmforge").join("kernels"))
}

/// The cache key of one compilation.
pub fn cache_key(
    source: &str,
    options: &[String],
    arch: &str,
    driver: i32,
    compiler: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        source,
        &options.join(" "),
        arch,
        &driver.to_string(),
        compiler,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The module image for `src` on this driver's device: from the cache, or compiled and stored.
pub(crate) fn compile_cached(driver: &dyn Driver, src: &KernelSource) -> Result<Vec<u8>> {
    let info = driver.info();
    let full = src.full_source();
    let opts = compile_options(info.warp_size);
    let key = cache_key(
        &full,
        &opts,
        &info.arch,
        info.driver_version,
        &driver.compiler_version(),
    );
    let path = cache_dir().map(|d| d.join(format!("{}-{}-{key}.bin", src.name, info.arch)));
    if let Some(p) = &path {
        if let Ok(bytes) = std::fs::read(p) {
            if !bytes.is_empty() {
                return Ok(bytes);
            }
        }
    }
    let image = driver.compile(src.name, &full, &opts)?;
    if let Some(p) = &path {
        store(p, &image);
    }
    Ok(image)
}

fn store(path: &std::path::Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = path.with_extension(format!(
        "tmp{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_every_part() {
        let o = vec!["-DWARP_SIZE=32".to_string()];
        let k = cache_key("src", &o, "sm_90", 13000, "nvrtc 13.0");
        assert_ne!(k, cache_key("src2", &o, "sm_90", 13000, "nvrtc 13.0"));
        assert_ne!(k, cache_key("src", &o, "sm_80", 13000, "nvrtc 13.0"));
        assert_ne!(k, cache_key("src", &o, "sm_90", 12080, "nvrtc 13.0"));
        assert_ne!(k, cache_key("src", &[], "sm_90", 13000, "nvrtc 13.0"));
        assert_ne!(k, cache_key("src", &o, "sm_90", 13000, "nvrtc 12.8"));
        assert_eq!(k, cache_key("src", &o, "sm_90", 13000, "nvrtc 13.0"));
    }
}
