//! Llama (Llama 2/3, TinyLlama, the stories models): pre-norm decoder, RoPE (normal pairs,
//! optional per-pair frequency factors), GQA, SwiGLU.

use crate::backend::{Backend, GluKind, RopeParams};
use crate::model::blocks::{Attention, AttnStep, Ffn, Head};
use crate::model::weights::Loader;
use crate::model::{Batch, Config, KvCache};
use crate::Result;

struct Layer<B: Backend> {
    attn_norm: B::Tensor,
    attn: Attention<B>,
    ffn_norm: B::Tensor,
    ffn: Ffn<B>,
}

/// A loaded llama model.
pub struct Llama<B: Backend> {
    pub config: Config,
    tok_embd: B::Weight,
    layers: Vec<Layer<B>>,
    head: Head<B>,
    rope_q: RopeParams,
    rope_k: RopeParams,
}

impl<B: Backend> Llama<B> {
    /// Loads the weights of `config` through `l`.
    pub fn load(l: &mut Loader<B>, config: Config) -> Result<Self> {
        let c = &config;
        let tok_embd = l.matrix("token_embd.weight", c.n_vocab, c.n_embd)?;
        let freq_factors = if l.has("rope_freqs.weight") {
            Some(l.host_vector("rope_freqs.weight", c.n_rot / 2)?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            layers.push(Layer {
                attn_norm: l.vector(&format!("blk.{il}.attn_norm.weight"), c.n_embd)?,
                attn: Attention::load(l, c, il, false)?,
                ffn_norm: l.vector(&format!("blk.{il}.ffn_norm.weight"), c.n_embd)?,
                ffn: Ffn::load(l, c, il)?,
            });
        }
        let head = Head::load(l, c)?;
        let rope_q = c.rope(0, c.n_head, freq_factors.as_deref());
        let rope_k = c.rope(0, c.n_head_kv, freq_factors.as_deref());
        Ok(Llama {
            config,
            tok_embd,
            layers,
            head,
            rope_q,
            rope_k,
        })
    }

    /// Logits `[batch.logits_for.len(), n_vocab]` (row-major) for `batch`.
    pub fn forward(&self, be: &B, batch: &Batch, kv: &mut KvCache<B>) -> Result<B::Tensor> {
        let c = &self.config;
        // [n, n_embd]
        let mut x = be.embedding(&self.tok_embd, batch.tokens)?;
        // The FFN output of the layer before, added to x together with the next norm.
        let mut pending: Option<B::Tensor> = None;
        for (il, layer) in self.layers.iter().enumerate() {
            let step = AttnStep {
                rope_q: &self.rope_q,
                rope_k: &self.rope_k,
                attn: c.attn(il, c.attn_scale),
                q_scale: None,
                rms_eps: c.rms_eps,
            };
            let h = match pending.take() {
                Some(f) => be.add_rms_norm(&mut x, &f, &layer.attn_norm, c.rms_eps)?, // x += f
                None => be.rms_norm(&x, &layer.attn_norm, c.rms_eps)?,
            }; // [n, n_embd]
            let mut a = layer
                .attn
                .forward(be, &h, batch, &mut kv.k[il], &mut kv.v[il], &step)?; // [n, n_embd]
                                                                               // Scratch goes back as soon as it is dead (a shadowed binding would live to the end
                                                                               // of the iteration and raise the pass's peak on the GPU).
            drop(h);
            if il + 1 == self.layers.len() {
                // only the rows whose logits are wanted go on: [n_out, n_embd]
                x = be.get_rows(&x, batch.logits_for)?;
                a = be.get_rows(&a, batch.logits_for)?;
            }
            let h = be.add_rms_norm(&mut x, &a, &layer.ffn_norm, c.rms_eps)?; // x += a
            drop(a);
            pending = Some(layer.ffn.forward(be, &h, GluKind::SwiGlu)?); // [n, n_embd]
        }
        let h = match pending {
            Some(f) => be.add_rms_norm(&mut x, &f, &self.head.norm, c.rms_eps)?,
            None => be.rms_norm(&x, &self.head.norm, c.rms_eps)?,
        }; // [n_out, n_embd]
        let logits = be.matmul(self.head.output.as_ref().unwrap_or(&self.tok_embd), &h)?; // [n_out, n_vocab]
        Ok(logits)
    }
}
