//! The human-readable summary that `rocmforge_cli info` prints.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::reader::GgufFile;

/// Array elements shown before an array is abbreviated to `..., (N items)`.
pub const INFO_ARRAY_ITEMS: usize = 8;

/// Total number of tensor elements (the parameter count).
pub fn parameter_count(f: &GgufFile) -> u64 {
    f.tensors()
        .iter()
        .fold(0u64, |a, t| a.saturating_add(t.n_elements()))
}

/// Per tensor type: (type name, tensor count, total bytes), sorted by type name.
pub fn type_histogram(f: &GgufFile) -> Vec<(String, usize, u64)> {
    let mut h: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for t in f.tensors() {
        let e = h.entry(t.ty.name().to_string()).or_default();
        e.0 += 1;
        e.1 = e.1.saturating_add(t.n_bytes);
    }
    h.into_iter().map(|(k, (n, b))| (k, n, b)).collect()
}

fn human(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.2} K", n / 1e3)
    } else {
        format!("{n}")
    }
}

/// The full `info` report: header, architecture, parameter count, tensor-type histogram,
/// context length, all metadata (long arrays abbreviated) and the tensor list.
pub fn summary(f: &GgufFile) -> String {
    let mut s = String::new();
    let arch = f
        .get_str_opt("general.architecture")
        .ok()
        .flatten()
        .unwrap_or("(none)");
    let _ = writeln!(
        s,
        "GGUF v{}, alignment {}, {} metadata keys, {} tensors, {} bytes",
        f.version(),
        f.alignment(),
        f.metadata().len(),
        f.tensors().len(),
        f.file_size()
    );
    let _ = writeln!(s, "architecture: {arch}");
    if let Ok(Some(name)) = f.get_str_opt("general.name") {
        let _ = writeln!(s, "name: {name}");
    }
    let params = parameter_count(f);
    let _ = writeln!(s, "parameters: {params} ({})", human(params));
    let ctx_key = format!("{arch}.context_length");
    match f.get(&ctx_key) {
        Some(v) => {
            let _ = writeln!(s, "context length: {v}");
        }
        None => {
            let _ = writeln!(s, "context length: (no {ctx_key})");
        }
    }
    let _ = writeln!(s, "tensor types:");
    for (ty, n, bytes) in type_histogram(f) {
        let _ = writeln!(s, "  {ty:<6} {n:>5} tensors {bytes:>14} bytes");
    }
    let _ = writeln!(s, "metadata:");
    for (k, v) in f.metadata() {
        let _ = writeln!(
            s,
            "  {k} ({}) = {}",
            v.type_name(),
            v.display_abbrev(INFO_ARRAY_ITEMS)
        );
    }
    let _ = writeln!(s, "tensors:");
    for t in f.tensors() {
        let _ = writeln!(
            s,
            "  {} {} {:?} @{} ({} bytes)",
            t.name, t.ty, t.dims, t.offset, t.n_bytes
        );
    }
    s
}
