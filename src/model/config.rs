//! Hyperparameters from GGUF metadata, with llama.cpp's defaults and validation.

use crate::backend::{AttnParams, RopeKind, RopeParams};
use crate::gguf::GgufFile;
use crate::{Error, Result};

/// A supported architecture (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Gemma3,
}

/// The architectures this crate runs, as GGUF names them.
pub const SUPPORTED: &str = "llama, qwen2, gemma3";

impl Arch {
    /// The architecture named `name`, or an error listing the supported ones.
    pub fn from_name(name: &str) -> Result<Arch> {
        match name {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "gemma3" => Ok(Arch::Gemma3),
            _ => Err(Error::Model(format!(
                "general.architecture = '{name}' is not supported (supported: {SUPPORTED})"
            ))),
        }
    }

    /// The GGUF name (metadata key prefix).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// Sliding-window attention layout (gemma3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Swa {
    /// Tokens a query sees on a sliding-window layer (itself included).
    pub window: usize,
    /// Every `pattern`-th layer (il % pattern == pattern - 1) is global; the rest slide.
    pub pattern: usize,
    /// RoPE frequency base of the sliding-window layers.
    pub rope_base: f32,
}

/// A model's hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_kind: RopeKind,
    pub n_rot: usize,
    pub rope_base: f32,
    pub rope_freq_scale: f32,
    pub swa: Option<Swa>,
    /// Scale of Q·K (applied to Q beforehand on gemma3).
    pub attn_scale: f32,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
}

fn bad(key: &str, value: impl std::fmt::Display, why: &str) -> Error {
    Error::Model(format!("{key} = {value}: {why}"))
}

/// A required positive integer key.
fn positive(g: &GgufFile, key: &str) -> Result<usize> {
    let v = g.get_u32(key)?;
    if v == 0 {
        return Err(bad(key, v, "must be positive"));
    }
    Ok(v as usize)
}

impl Config {
    /// Reads and validates the hyperparameters of `g`.
    pub fn from_gguf(g: &GgufFile) -> Result<Config> {
        let arch = Arch::from_name(g.architecture()?)?;
        let a = arch.name();
        let k = |s: &str| format!("{a}.{s}");

        let n_embd = positive(g, &k("embedding_length"))?;
        let n_layer = positive(g, &k("block_count"))?;
        let n_ff = positive(g, &k("feed_forward_length"))?;
        let n_ctx_train = positive(g, &k("context_length"))?;
        let n_head = positive(g, &k("attention.head_count"))?;
        let n_head_kv = match g.get_u32_opt(&k("attention.head_count_kv"))? {
            Some(0) => return Err(bad(&k("attention.head_count_kv"), 0, "must be positive")),
            Some(v) => v as usize,
            None => n_head,
        };
        if n_head % n_head_kv != 0 {
            return Err(bad(
                &k("attention.head_count"),
                n_head,
                &format!("not a multiple of attention.head_count_kv = {n_head_kv}"),
            ));
        }
        let head_dim = match g.get_u32_opt(&k("attention.key_length"))? {
            Some(0) => return Err(bad(&k("attention.key_length"), 0, "must be positive")),
            Some(v) => v as usize,
            None => {
                if n_embd % n_head != 0 {
                    return Err(bad(
                        &k("embedding_length"),
                        n_embd,
                        &format!("not divisible by attention.head_count = {n_head}"),
                    ));
                }
                n_embd / n_head
            }
        };
        if let Some(vl) = g.get_u32_opt(&k("attention.value_length"))? {
            if vl as usize != head_dim {
                return Err(bad(
                    &k("attention.value_length"),
                    vl,
                    &format!("differs from the key length {head_dim} (unsupported)"),
                ));
            }
        }
        let rms_eps = g
            .get_f32_opt(&k("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5);
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(bad(
                &k("attention.layer_norm_rms_epsilon"),
                rms_eps,
                "invalid",
            ));
        }
        let n_rot = match g.get_u32_opt(&k("rope.dimension_count"))? {
            Some(v) => v as usize,
            None => head_dim,
        };
        if n_rot == 0 || n_rot > head_dim || n_rot % 2 != 0 {
            return Err(bad(
                &k("rope.dimension_count"),
                n_rot,
                &format!("must be even and in 2..={head_dim}"),
            ));
        }
        let rope_base = g.get_f32_opt(&k("rope.freq_base"))?.unwrap_or(10000.0);
        if !(rope_base.is_finite() && rope_base > 0.0) {
            return Err(bad(&k("rope.freq_base"), rope_base, "must be positive"));
        }
        let rope_freq_scale = rope_scale(g, a)?;
        let rope_kind = match arch {
            Arch::Llama => RopeKind::Normal,
            Arch::Qwen2 | Arch::Gemma3 => RopeKind::Neox,
        };
        let swa = match arch {
            Arch::Gemma3 => {
                let window = positive(g, &k("attention.sliding_window"))?;
                let pattern = g
                    .get_u32_opt(&k("attention.sliding_window_pattern"))?
                    .unwrap_or(6) as usize;
                if pattern == 0 {
                    return Err(bad(
                        &k("attention.sliding_window_pattern"),
                        0,
                        "must be positive",
                    ));
                }
                Some(Swa {
                    window,
                    pattern,
                    rope_base: 10000.0,
                })
            }
            _ => None,
        };
        // gemma3 (all sizes but 27B): 1/sqrt(head_dim), applied to Q (llama.cpp's f_attention_scale).
        let attn_scale = match arch {
            Arch::Gemma3 if n_layer == 62 => 1.0 / ((n_embd / n_head) as f32).sqrt(),
            _ => 1.0 / (head_dim as f32).sqrt(),
        };
        let softcap = |key: &str| -> Result<Option<f32>> {
            match g.get_f32_opt(&k(key))? {
                Some(c) if c.is_finite() && c > 0.0 => Ok(Some(c)),
                Some(0.0) => Ok(None),
                Some(c) => Err(bad(&k(key), c, "must be positive")),
                None => Ok(None),
            }
        };
        let attn_softcap = softcap("attn_logit_softcapping")?;
        let final_softcap = softcap("final_logit_softcapping")?;

        let embd = g
            .tensor("token_embd.weight")
            .ok_or_else(|| Error::Model("tensor 'token_embd.weight' is missing".into()))?;
        if embd.dims.len() != 2 || embd.dims[0] != n_embd as u64 {
            return Err(Error::Model(format!(
                "tensor 'token_embd.weight' has dims {:?}, expected [{n_embd}, n_vocab]",
                embd.dims
            )));
        }
        let n_vocab = usize::try_from(embd.dims[1])
            .map_err(|_| bad("token_embd.weight dims[1]", embd.dims[1], "too large"))?;
        if n_vocab == 0 {
            return Err(bad("token_embd.weight dims[1]", 0, "empty vocabulary"));
        }
        let last = format!("blk.{}.attn_norm.weight", n_layer - 1);
        if g.tensor(&last).is_none() {
            let present = (0..n_layer)
                .take_while(|i| g.tensor(&format!("blk.{i}.attn_norm.weight")).is_some())
                .count();
            return Err(bad(
                &k("block_count"),
                n_layer,
                &format!("the file holds tensors for {present} blocks"),
            ));
        }
        Ok(Config {
            arch,
            n_vocab,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            n_ctx_train,
            rms_eps,
            rope_kind,
            n_rot,
            rope_base,
            rope_freq_scale,
            swa,
            attn_scale,
            attn_softcap,
            final_softcap,
        })
    }

    /// Whether layer `il` uses sliding-window attention.
    pub fn is_swa(&self, il: usize) -> bool {
        self.swa.is_some_and(|s| il % s.pattern < s.pattern - 1)
    }

    /// RoPE parameters of layer `il` for a tensor of `n_heads` heads.
    pub fn rope(&self, il: usize, n_heads: usize, freq_factors: Option<&[f32]>) -> RopeParams {
        let freq_base = match self.swa {
            Some(s) if self.is_swa(il) => s.rope_base,
            _ => self.rope_base,
        };
        RopeParams {
            kind: self.rope_kind,
            n_heads,
            head_dim: self.head_dim,
            n_rot: self.n_rot,
            freq_base,
            freq_scale: self.rope_freq_scale,
            freq_factors: freq_factors.map(|f| f.to_vec()),
        }
    }

    /// Attention parameters of layer `il` with Q·K scaled by `scale`.
    pub fn attn(&self, il: usize, scale: f32) -> AttnParams {
        AttnParams {
            n_heads: self.n_head,
            n_kv_heads: self.n_head_kv,
            head_dim: self.head_dim,
            scale,
            window: self.swa.filter(|_| self.is_swa(il)).map(|s| s.window),
            softcap: self.attn_softcap,
        }
    }

    /// Parameter count from the file's tensors.
    pub fn n_params(g: &GgufFile) -> u64 {
        g.tensors().iter().map(|t| t.n_elements()).sum()
    }
}

/// Linear RoPE frequency scale: 1 / `rope.scaling.factor` (or `rope.scale_linear`); 1 if unset.
fn rope_scale(g: &GgufFile, a: &str) -> Result<f32> {
    let ty = g.get_str_opt(&format!("{a}.rope.scaling.type"))?;
    let factor = match g.get_f32_opt(&format!("{a}.rope.scaling.factor"))? {
        Some(f) => Some(f),
        None => g.get_f32_opt(&format!("{a}.rope.scale_linear"))?,
    };
    match (ty, factor) {
        (Some("yarn"), _) => Err(Error::Model(format!(
            "{a}.rope.scaling.type = yarn is not supported"
        ))),
        (Some("none"), _) | (_, None) => Ok(1.0),
        (_, Some(f)) if f == 0.0 || f == 1.0 => Ok(1.0),
        (_, Some(f)) if f.is_finite() && f > 0.0 => Ok(1.0 / f),
        (_, Some(f)) => Err(bad(&format!("{a}.rope.scaling.factor"), f, "invalid")),
    }
}
