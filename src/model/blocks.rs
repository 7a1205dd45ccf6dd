//! Blocks shared by the architectures: self-attention over the paged KV cache and the gated
//! feed-forward network.

use crate::backend::{AttnParams, Backend, GluKind, RopeParams};
use crate::model::{Batch, Config};
use crate::Result;

use super::weights::Loader;

/// The Q, K and V projections: three matrices, or one stacked `[q | k | v]` matrix (and bias)
/// where the backend fuses projections and the three share a type.
pub enum Qkv<B: Backend> {
    Separate {
        wq: B::Weight,
        wk: B::Weight,
        wv: B::Weight,
        bq: Option<B::Tensor>,
        bk: Option<B::Tensor>,
        bv: Option<B::Tensor>,
    },
    Stacked {
        w: B::Weight,
        b: Option<B::Tensor>,
    },
}

/// One layer's attention weights. Biases (qwen2) and Q/K norms (gemma3) are optional.
pub struct Attention<B: Backend> {
    pub qkv: Qkv<B>,
    pub wo: B::Weight,
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
        let (wn, bn) = (
            [p("attn_q.weight"), p("attn_k.weight"), p("attn_v.weight")],
            [p("attn_q.bias"), p("attn_k.bias"), p("attn_v.bias")],
        );
        let n_bias = bn.iter().filter(|b| l.has(b)).count();
        let dims = [q_dim, kv_dim, kv_dim];
        let mut qkv = None;
        // Stacked only without Q/K norms (they apply to Q and K apart) and with all or no biases.
        if l.be.fuse_projections() && !qk_norm && (n_bias == 0 || n_bias == 3) {
            let names = [wn[0].as_str(), wn[1].as_str(), wn[2].as_str()];
            if let Some(w) = l.matrix_cat(&names, &dims, c.n_embd)? {
                let b = if n_bias == 3 {
                    let names = [bn[0].as_str(), bn[1].as_str(), bn[2].as_str()];
                    Some(l.vector_cat(&names, &dims)?)
                } else {
                    None
                };
                qkv = Some(Qkv::Stacked { w, b });
            }
        }
        let qkv = match qkv {
            Some(q) => q,
            None => Qkv::Separate {
                wq: l.matrix(&wn[0], q_dim, c.n_embd)?,
                wk: l.matrix(&wn[1], kv_dim, c.n_embd)?,
                wv: l.matrix(&wn[2], kv_dim, c.n_embd)?,
                bq: l.opt_vector(&bn[0], q_dim)?,
                bk: l.opt_vector(&bn[1], kv_dim)?,
                bv: l.opt_vector(&bn[2], kv_dim)?,
            },
        };
        Ok(Attention {
            qkv,
            wo: l.matrix(&p("attn_output.weight"), c.n_embd, q_dim)?,
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
        let (wq, wk, wv, bq, bk, bv) = match &self.qkv {
            Qkv::Stacked { w, b } => {
                let qkv = be.matmul_bias(w, x, b.as_ref())?; // [n, q | k | v]
                let mut q = be.qkv_rope_store(&qkv, s.rope_q, s.rope_k, k_cache, v_cache, batch)?;
                if let Some(sc) = s.q_scale {
                    be.scale(&mut q, sc)?;
                }
                let o = be.attention(&q, k_cache, v_cache, batch, &s.attn)?;
                return be.matmul(&self.wo, &o);
            }
            Qkv::Separate {
                wq,
                wk,
                wv,
                bq,
                bk,
                bv,
            } => (wq, wk, wv, bq, bk, bv),
        };
        // [n, n_head * head_dim], [n, n_head_kv * head_dim] twice
        let qkv = [(wq, bq.as_ref()), (wk, bk.as_ref()), (wv, bv.as_ref())];
        let [mut q, mut k, v]: [B::Tensor; 3] = be
            .matmul_bias_many(&qkv, x)?
            .try_into()
            .map_err(|_| crate::Error::Model("matmul_bias_many: not three outputs".into()))?;
        if let Some(w) = &self.q_norm {
            q = be.rms_norm(&q, w, s.rms_eps)?; // per head
        }
        if let Some(w) = &self.k_norm {
            k = be.rms_norm(&k, w, s.rms_eps)?;
        }
        let mut q = be.rope_store(q, k, &v, s.rope_q, s.rope_k, k_cache, v_cache, batch)?;
        if let Some(sc) = s.q_scale {
            be.scale(&mut q, sc)?;
        }
        let o = be.attention(&q, k_cache, v_cache, batch, &s.attn)?; // [n, n_head * head_dim]
        be.matmul(&self.wo, &o) // [n, n_embd]
    }
}

/// A gated feed-forward network: `down(act(gate(x)) * up(x))`; gate and up stacked into one
/// `[gate | up]` matrix where the backend fuses projections and both share a type.
pub struct Ffn<B: Backend> {
    pub gate_up: GateUp<B>,
    pub down: B::Weight,
}

/// Gate and up projections, apart or stacked.
pub enum GateUp<B: Backend> {
    Separate { gate: B::Weight, up: B::Weight },
    Stacked(B::Weight),
}

impl<B: Backend> Ffn<B> {
    /// Loads `blk.{il}.ffn_{gate,up,down}`.
    pub fn load(l: &mut Loader<B>, c: &Config, il: usize) -> Result<Self> {
        let p = |s: &str| format!("blk.{il}.{s}");
        let (g, u) = (p("ffn_gate.weight"), p("ffn_up.weight"));
        let stacked = if l.be.fuse_projections() {
            l.matrix_cat(&[&g, &u], &[c.n_ff, c.n_ff], c.n_embd)?
        } else {
            None
        };
        let gate_up = match stacked {
            Some(w) => GateUp::Stacked(w),
            None => GateUp::Separate {
                gate: l.matrix(&g, c.n_ff, c.n_embd)?,
                up: l.matrix(&u, c.n_ff, c.n_embd)?,
            },
        };
        Ok(Ffn {
            gate_up,
            down: l.matrix(&p("ffn_down.weight"), c.n_embd, c.n_ff)?,
        })
    }

    /// `x [n, n_embd]` -> `[n, n_embd]`.
    pub fn forward(&self, be: &B, x: &B::Tensor, kind: GluKind) -> Result<B::Tensor> {
        let h = match &self.gate_up {
            GateUp::Stacked(w) => {
                let gu = be.matmul(w, x)?; // [n, 2 n_ff]
                be.glu_fused(&gu, kind)? // [n, n_ff]
            }
            GateUp::Separate { gate, up } => {
                let g = be.matmul(gate, x)?; // [n, n_ff]
                let u = be.matmul(up, x)?; // [n, n_ff]
                be.glu(&g, &u, kind)? // [n, n_ff]
            }
        };
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
