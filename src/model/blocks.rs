//! Blocks shared by the architectures: self-attention over the paged KV cache and the gated
//! feed-forward network.

use crate::backend::{AttnParams, Backend, GluKind, RopeParams};
use crate::model::{Batch, Config};
use crate::Result;

use super::weights::Loader;

/// One layer's attention weights. Biases (qwen2) and Q/K norms (gemma3) are optional.
pub struct Attention<B: Backend> {
    pub wq: B::Weight,
    pub wk: B::Weight,
    pub wv: B::Weight,
    pub wo: B::Weight,
    pub bq: Option<B::Tensor>,
    pub bk: Option<B::Tensor>,
    pub bv: Option<B::Tensor>,
    pub q_norm: Option<B::Tensor>,
    pub k_norm: Option<B::Tensor>,
}

/// How a layer runs its attention.
pub struct AttnStep<'a> {
    pub rope_q: &'a RopeParams,
    pub rope_k: &'a RopeParams,
    pub attn: AttnParams,
    /// Multiplies Q after RoPE (gemma3's attention scale; `attn.scale` is then 1).
    pub q_scale: Option<f32>,
    pub rms_eps: f32,
}

impl<B: Backend> Attention<B> {
    /// Loads `blk.{il}.attn_{q,k,v,output}` (+ biases, + Q/K norms when `qk_norm`).
    pub fn load(l: &mut Loader<B>, c: &Config, il: usize, qk_norm: bool) -> Result<Self> {
        let p = |s: &str| format!("blk.{il}.{s}");
        let (q_dim, kv_dim) = (c.n_head * c.head_dim, c.n_head_kv * c.head_dim);
        let (q_norm, k_norm) = if qk_norm {
            (
                Some(l.vector(&p("attn_q_norm.weight"), c.head_dim)?),
                Some(l.vector(&p("attn_k_norm.weight"), c.head_dim)?),
            )
        } else {
            (None, None)
        };
        Ok(Attention {
            wq: l.matrix(&p("attn_q.weight"), q_dim, c.n_embd)?,
            wk: l.matrix(&p("attn_k.weight"), kv_dim, c.n_embd)?,
            wv: l.matrix(&p("attn_v.weight"), kv_dim, c.n_embd)?,
            wo: l.matrix(&p("attn_output.weight"), c.n_embd, q_dim)?,
            bq: l.opt_vector(&p("attn_q.bias"), q_dim)?,
            bk: l.opt_vector(&p("attn_k.bias"), kv_dim)?,
            bv: l.opt_vector(&p("attn_v.bias"), kv_dim)?,
            q_norm,
            k_norm,
        })
    }

    /// `x [n, n_embd]` (normed) -> `[n, n_embd]`; writes this batch's K/V into the caches.
    pub fn forward(
        &self,
        be: &B,
        x: &B::Tensor,
        batch: &Batch,
        k_cache: &mut B::Kv,
        v_cache: &mut B::Kv,
        s: &AttnStep,
    ) -> Result<B::Tensor> {
        let mut q = be.matmul_bias(&self.wq, x, self.bq.as_ref())?; // [n, n_head * head_dim]
        let mut k = be.matmul_bias(&self.wk, x, self.bk.as_ref())?; // [n, n_head_kv * head_dim]
        let v = be.matmul_bias(&self.wv, x, self.bv.as_ref())?; // [n, n_head_kv * head_dim]
        if let Some(w) = &self.q_norm {
            q = be.rms_norm(&q, w, s.rms_eps)?; // per head
        }
        if let Some(w) = &self.k_norm {
            k = be.rms_norm(&k, w, s.rms_eps)?;
        }
        be.rope(&mut q, batch.positions, s.rope_q)?;
        be.rope(&mut k, batch.positions, s.rope_k)?;
        if let Some(sc) = s.q_scale {
            be.scale(&mut q, sc)?;
        }
        be.kv_store(k_cache, &k, batch)?;
        be.kv_store(v_cache, &v, batch)?;
        let o = be.attention(&q, k_cache, v_cache, batch, &s.attn)?; // [n, n_head * head_dim]
        be.matmul(&self.wo, &o) // [n, n_embd]
    }
}

/// A gated feed-forward network: `down(act(gate(x)) * up(x))`.
pub struct Ffn<B: Backend> {
    pub gate: B::Weight,
    pub up: B::Weight,
    pub down: B::Weight,
}

impl<B: Backend> Ffn<B> {
    /// Loads `blk.{il}.ffn_{gate,up,down}`.
    pub fn load(l: &mut Loader<B>, c: &Config, il: usize) -> Result<Self> {
        let p = |s: &str| format!("blk.{il}.{s}");
        Ok(Ffn {
            gate: l.matrix(&p("ffn_gate.weight"), c.n_ff, c.n_embd)?,
            up: l.matrix(&p("ffn_up.weight"), c.n_ff, c.n_embd)?,
            down: l.matrix(&p("ffn_down.weight"), c.n_embd, c.n_ff)?,
        })
    }

    /// `x [n, n_embd]` -> `[n, n_embd]`.
    pub fn forward(&self, be: &B, x: &B::Tensor, kind: GluKind) -> Result<B::Tensor> {
        let g = be.matmul(&self.gate, x)?; // [n, n_ff]
        let u = be.matmul(&self.up, x)?; // [n, n_ff]
        let h = be.glu(&g, &u, kind)?; // [n, n_ff]
        be.matmul(&self.down, &h) // [n, n_embd]
    }
}

/// The output head: final norm weight and the (possibly tied) output matrix.
pub struct Head<B: Backend> {
    pub norm: B::Tensor,
    /// `output.weight`, or None when tied to `token_embd.weight`.
    pub output: Option<B::Weight>,
}

impl<B: Backend> Head<B> {
    /// Loads `output_norm.weight` and `output.weight` if present.
    pub fn load(l: &mut Loader<B>, c: &Config) -> Result<Self> {
        Ok(Head {
            norm: l.vector("output_norm.weight", c.n_embd)?,
            output: l.opt_matrix("output.weight", c.n_vocab, c.n_embd)?,
        })
    }
}
