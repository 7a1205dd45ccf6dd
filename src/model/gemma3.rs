//! Gemma 3: embeddings scaled by sqrt(n_embd); per layer RMS norms before and after both the
//! attention and the feed-forward block; per-head Q/K RMS norms; Q scaled by
//! 1/sqrt(head_dim); GeGLU; five sliding-window layers (own RoPE base) per global one;
//! optional final logit soft-capping. Norm weights are used as stored (the GGUF converter
//! already folded Gemma's `1 + w` into them), as llama.cpp does.

use crate::backend::{Backend, GluKind, RopeParams};
use crate::model::blocks::{Attention, AttnStep, Ffn, Head};
use crate::model::weights::Loader;
use crate::model::{Batch, Config, KvCache};
use crate::Result;

struct Layer<B: Backend> {
    attn_norm: B::Tensor,
    attn: Attention<B>,
    attn_post_norm: B::Tensor,
    ffn_norm: B::Tensor,
    ffn: Ffn<B>,
    ffn_post_norm: B::Tensor,
    rope_q: RopeParams,
    rope_k: RopeParams,
}

/// A loaded gemma3 model.
pub struct Gemma3<B: Backend> {
    pub config: Config,
    tok_embd: B::Weight,
    layers: Vec<Layer<B>>,
    head: Head<B>,
}

impl<B: Backend> Gemma3<B> {
    /// Loads the weights of `config` through `l`.
    pub fn load(l: &mut Loader<B>, config: Config) -> Result<Self> {
        let c = &config;
        let tok_embd = l.matrix("token_embd.weight", c.n_vocab, c.n_embd)?;
        let mut layers = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            let v = |l: &mut Loader<B>, s: &str| l.vector(&format!("blk.{il}.{s}"), c.n_embd);
            layers.push(Layer {
                attn_norm: v(l, "attn_norm.weight")?,
                attn: Attention::load(l, c, il, true)?,
                attn_post_norm: v(l, "post_attention_norm.weight")?,
                ffn_norm: v(l, "ffn_norm.weight")?,
                ffn: Ffn::load(l, c, il)?,
                ffn_post_norm: v(l, "post_ffw_norm.weight")?,
                rope_q: c.rope(il, c.n_head, None),
                rope_k: c.rope(il, c.n_head_kv, None),
            });
        }
        let head = Head::load(l, c)?;
        Ok(Gemma3 {
            config,
            tok_embd,
            layers,
            head,
        })
    }

    /// Logits `[batch.logits_for.len(), n_vocab]` (row-major) for `batch`.
    pub fn forward(&self, be: &B, batch: &Batch, kv: &mut KvCache<B>) -> Result<B::Tensor> {
        let c = &self.config;
        let eps = c.rms_eps;
        let mut x = be.embedding(&self.tok_embd, batch.tokens)?; // [n, n_embd]
        be.scale(&mut x, (c.n_embd as f32).sqrt())?;
        for (il, layer) in self.layers.iter().enumerate() {
            let step = AttnStep {
                rope_q: &layer.rope_q,
                rope_k: &layer.rope_k,
                attn: c.attn(il, 1.0),
                q_scale: Some(c.attn_scale),
                rms_eps: eps,
            };
            let h = be.rms_norm(&x, &layer.attn_norm, eps)?; // [n, n_embd]
            let a = layer
                .attn
                .forward(be, &h, batch, &mut kv.k[il], &mut kv.v[il], &step)?; // [n, n_embd]
            drop(h); // scratch back early (see llama.rs)
            let mut a = be.rms_norm(&a, &layer.attn_post_norm, eps)?;
            if il + 1 == self.layers.len() {
                // only the rows whose logits are wanted go on: [n_out, n_embd]
                x = be.get_rows(&x, batch.logits_for)?;
                a = be.get_rows(&a, batch.logits_for)?;
            }
            let h = be.add_rms_norm(&mut x, &a, &layer.ffn_norm, eps)?; // x += a
            drop(a);
            let f = layer.ffn.forward(be, &h, GluKind::GeGlu)?; // [n, n_embd]
            drop(h);
            let f = be.rms_norm(&f, &layer.ffn_post_norm, eps)?;
            be.add(&mut x, &f)?;
        }
        let h = be.rms_norm(&x, &self.head.norm, eps)?; // [n_out, n_embd]
        let out = self.head.output.as_ref().unwrap_or(&self.tok_embd);
        let mut logits = be.matmul(out, &h)?; // [n_out, n_vocab]
        if let Some(cap) = c.final_softcap {
            be.softcap(&mut logits, cap)?;
        }
        Ok(logits)
    }
}
