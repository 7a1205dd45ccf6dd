//! `rocmforge_cli quantize` against llama.cpp's quantizer (llama-cpp-python's
//! `llama_model_quantize`): same tensor types, same metadata and byte-identical tensor data,
//! compared by the independent gguf Python package.
//!
//! Skips (prints `skipped: ...`) when python3, gguf or llama_cpp is missing, unless CI is set.
//! The shared data folder is ../shared, or $ROCMFORGE_SHARED when set.

use std::path::{Path, PathBuf};
use std::process::Command;

mod py_common;
use py_common::python_ok;
use py_common::python_stdout as python;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rocmforge-q-{}-{name}", std::process::id()))
}

const LLAMA_QUANTIZE: &str = r#"
import sys, ctypes, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = int(sys.argv[3])
p.nthread = 2
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p))
assert rc == 0, rc
"#;

/// Prints one line per difference and a final "differences N".
const COMPARE: &str = r#"
import sys, gguf, numpy as np
a = gguf.GGUFReader(sys.argv[1]); b = gguf.GGUFReader(sys.argv[2])
n = 0
def kvs(r):
    return {k: f.contents() for k, f in r.fields.items() if not k.startswith('GGUF.')}
ka, kb = kvs(a), kvs(b)
for k in sorted(set(ka) | set(kb)):
    if ka.get(k) != kb.get(k):
        n += 1; print('key', k, str(ka.get(k))[:60], str(kb.get(k))[:60])
tb = {t.name: t for t in b.tensors}
if len(a.tensors) != len(b.tensors):
    n += 1; print('tensor counts', len(a.tensors), len(b.tensors))
for t in a.tensors:
    u = tb.get(t.name)
    if u is None:
        n += 1; print('missing', t.name); continue
    da = np.asarray(t.data).view(np.uint8).reshape(-1)
    db = np.asarray(u.data).view(np.uint8).reshape(-1)
    if t.tensor_type != u.tensor_type or list(t.shape) != list(u.shape):
        n += 1; print('type', t.name, t.tensor_type.name, u.tensor_type.name)
    elif da.tobytes() != db.tobytes():
        n += 1; print('bytes', t.name, t.tensor_type.name, int((da != db).sum()), 'of', da.size)
types = sorted(set(t.tensor_type.name for t in a.tensors))
print('types', ' '.join(types))
print('differences', n)
"#;

/// A random F16 llama model whose dimensions are multiples of 256, so the K-quant rules apply.
const MAKE_MODEL: &str = r#"
import sys, gguf, numpy as np
rng = np.random.default_rng(int(sys.argv[2]))
E, F, L, V, H, HKV = 256, 768, 8, 512, 4, 2
w = gguf.GGUFWriter(sys.argv[1], 'llama')
w.add_context_length(256); w.add_embedding_length(E); w.add_feed_forward_length(F)
w.add_block_count(L); w.add_head_count(H); w.add_head_count_kv(HKV)
w.add_rope_dimension_count(E // H); w.add_layer_norm_rms_eps(1e-5); w.add_file_type(1)
w.add_tokenizer_model('llama')
w.add_token_list(['<unk>', '<s>', '</s>'] + [f't{i}' for i in range(V - 3)])
w.add_token_scores([0.0] * V); w.add_token_types([2, 3, 3] + [1] * (V - 3))
def t(name, *shape):
    w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float16))
t('token_embd.weight', V, E)
w.add_tensor('output_norm.weight', np.ones(E, dtype=np.float32))
t('output.weight', V, E)
for i in range(L):
    p = f'blk.{i}.'
    w.add_tensor(p + 'attn_norm.weight', np.ones(E, dtype=np.float32))
    t(p + 'attn_q.weight', E, E); t(p + 'attn_k.weight', E * HKV // H, E)
    t(p + 'attn_v.weight', E * HKV // H, E); t(p + 'attn_output.weight', E, E)
    w.add_tensor(p + 'ffn_norm.weight', np.ones(E, dtype=np.float32))
    t(p + 'ffn_gate.weight', F, E); t(p + 'ffn_up.weight', F, E); t(p + 'ffn_down.weight', E, F)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
"#;

/// Quantizes `input` with both engines for each type and asserts identical files.
fn compare_all(input: &Path, tag: &str, expect_types: &[(&str, &[&str])]) {
    for (ty, ftype) in [("Q8_0", "7"), ("Q4_0", "2"), ("Q4_K_M", "15")] {
        let ours = tmp(&format!("{tag}-ours-{ty}.gguf"));
        let theirs = tmp(&format!("{tag}-llama-{ty}.gguf"));
        let out = Command::new(env!("CARGO_BIN_EXE_rocmforge_cli"))
            .args([
                "quantize",
                input.to_str().unwrap(),
                ours.to_str().unwrap(),
                ty,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "quantize {ty}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        python(
            LLAMA_QUANTIZE,
            &[input.to_str().unwrap(), theirs.to_str().unwrap(), ftype],
        );
        let report = python(COMPARE, &[ours.to_str().unwrap(), theirs.to_str().unwrap()]);
        println!("{tag} {ty}:\n{report}");
        assert!(
            report.trim_end().ends_with("differences 0"),
            "{tag} {ty} differs from llama.cpp:\n{report}"
        );
        if let Some((_, want)) = expect_types.iter().find(|(t, _)| *t == ty) {
            let line = report.lines().find(|l| l.starts_with("types ")).unwrap();
            assert_eq!(line, format!("types {}", want.join(" ")), "{tag} {ty}");
        }
        let _ = std::fs::remove_file(&ours);
        let _ = std::fs::remove_file(&theirs);
    }
}

#[test]
fn stories260k_matches_llamacpp() {
    if !python_ok("gguf, numpy, llama_cpp") {
        return;
    }
    let shared = match std::env::var_os("ROCMFORGE_SHARED") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    let p = shared.join("models/stories260K.gguf");
    if !p.exists() {
        println!("skipped: {} missing", p.display());
        return;
    }
    // Rows of 64 and 172: every K-quant falls back, ffn_down (172) goes to F16.
    compare_all(&p, "stories", &[]);
}

#[test]
fn random_k_quant_model_matches_llamacpp() {
    if !python_ok("gguf, numpy, llama_cpp") {
        return;
    }
    use rand::Rng;
    let seed: u32 = rand::thread_rng().gen();
    println!("model seed {seed}");
    let p = tmp("kmodel-f16.gguf");
    python(MAKE_MODEL, &[p.to_str().unwrap(), &seed.to_string()]);
    compare_all(
        &p,
        "kmodel",
        &[
            ("Q8_0", &["F32", "Q8_0"]),
            ("Q4_0", &["F32", "Q4_0", "Q6_K"]),
            ("Q4_K_M", &["F32", "Q4_K", "Q6_K"]),
        ],
    );
    let _ = std::fs::remove_file(&p);
}
