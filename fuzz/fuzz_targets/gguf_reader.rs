//! Fuzzes the GGUF reader: parse arbitrary bytes, then touch every tensor's data and call every
//! getter on every key. Any panic, abort, out-of-bounds read or huge allocation is a bug.
//!
//! Run: `cargo +nightly fuzz run gguf_reader -- -max_total_time=600 -rss_limit_mb=2048`
//! (seed corpus: tests/data/malformed and a few real headers).
#![no_main]
#![allow(dead_code)]

// The reader's sources, compiled directly at the same module paths as in the library.
#[path = "../../src/error.rs"]
mod error;
mod gguf;
#[path = "../../src/quant/mod.rs"]
mod quant;

pub use error::{Error, Result};

use gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let mut acc = 0u64;
    for t in f.tensors() {
        let d = f.tensor_data(t);
        assert_eq!(d.len() as u64, t.n_bytes);
        acc = acc.wrapping_add(d.iter().map(|&b| b as u64).sum::<u64>());
        acc = acc.wrapping_add(t.n_elements()).wrapping_add(t.n_rows());
        assert!(f.tensor(&t.name).is_some());
    }
    let _ = f.architecture();
    for (k, v) in f.metadata() {
        let _ = f.get_u32(k);
        let _ = f.get_u32_opt(k);
        let _ = f.get_u64(k);
        let _ = f.get_u64_opt(k);
        let _ = f.get_f32(k);
        let _ = f.get_f32_opt(k);
        let _ = f.get_bool_opt(k);
        let _ = f.get_str(k);
        let _ = f.get_str_opt(k);
        let _ = f.get_str_array(k);
        let _ = f.get_f32_array(k);
        let _ = f.get_i32_array(k);
        let _ = f.get_array(k);
        let _ = v.display_abbrev(4);
        assert!(f.get(k).is_some());
    }
    let s = gguf::info::summary(&f);
    std::hint::black_box((acc, s));
});
