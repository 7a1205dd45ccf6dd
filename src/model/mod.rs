//! Model architectures (one file each) and the batch description every forward pass takes.
//!
//! The KV cache is paged: keys and values live in fixed-size blocks of [`BLOCK_SIZE`] token
//! slots, and each sequence has a block table mapping its logical block `pos / BLOCK_SIZE` to a
//! physical block id. `generate` uses one sequence; the server's scheduler packs many.

pub mod batch;
mod blocks;
pub mod config;
pub mod gemma3;
pub mod kv_cache;
pub mod llama;
pub mod qwen2;
mod weights;

use std::path::Path;
use std::sync::Arc;

pub use batch::{Batch, SeqSlot, BLOCK_SIZE};
pub use config::{Arch, Config};
pub use kv_cache::KvCache;

use crate::backend::Backend;
use crate::gguf::GgufFile;
use crate::{Error, Result};

enum Net<B: Backend> {
    Llama(llama::Llama<B>),
    Qwen2(qwen2::Qwen2<B>),
    Gemma3(gemma3::Gemma3<B>),
}

/// A model loaded on backend `B`.
pub struct Model<B: Backend> {
    be: B,
    file: Arc<GgufFile>,
    net: Net<B>,
}

impl<B: Backend> Model<B> {
    /// Opens `path` and loads it onto `be`.
    pub fn open(path: &Path, be: B) -> Result<Self> {
        let file = GgufFile::open(path)?;
        Self::load(Arc::new(file), be)
    }

    /// Loads the model in `file` onto `be` (progress bar on a terminal when slow).
    pub fn load(file: Arc<GgufFile>, be: B) -> Result<Self> {
        let config = Config::from_gguf(&file)?;
        let mut l = weights::Loader::new(file.clone(), &be);
        let net = match config.arch {
            Arch::Llama => Net::Llama(llama::Llama::load(&mut l, config)?),
            Arch::Qwen2 => Net::Qwen2(qwen2::Qwen2::load(&mut l, config)?),
            Arch::Gemma3 => Net::Gemma3(gemma3::Gemma3::load(&mut l, config)?),
        };
        l.finish();
        Ok(Model { be, file, net })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &Config {
        match &self.net {
            Net::Llama(m) => &m.config,
            Net::Qwen2(m) => m.config(),
            Net::Gemma3(m) => &m.config,
        }
    }

    /// The backend the model runs on.
    pub fn backend(&self) -> &B {
        &self.be
    }

    /// The GGUF file (metadata, tokenizer).
    pub fn gguf(&self) -> &Arc<GgufFile> {
        &self.file
    }

    /// An empty KV cache of `n_blocks` blocks of [`BLOCK_SIZE`] tokens per layer.
    pub fn new_kv_cache(&self, n_blocks: usize) -> Result<KvCache<B>> {
        let c = self.config();
        KvCache::new(&self.be, c.n_layer, n_blocks, c.n_head_kv, c.head_dim)
    }

    /// Runs `batch` through the model, writing its tokens' K/V into `kv` at their slots, and
    /// returns the logits of the tokens `batch.logits_for`: `[logits_for.len(), n_vocab]`,
    /// row-major.
    pub fn forward(&self, batch: &Batch, kv: &mut KvCache<B>) -> Result<Vec<f32>> {
        let logits = self.forward_device(batch, kv)?;
        self.be.to_host(&logits)
    }

    /// Like [`Model::forward`], but the logits stay where the backend computed them (device
    /// memory on a GPU backend): `[logits_for.len(), n_vocab]`, for the GPU sampler. The tensor
    /// is valid until the next pass (a replayed graph writes its output in place).
    pub fn forward_device(&self, batch: &Batch, kv: &mut KvCache<B>) -> Result<B::Tensor> {
        self.check(batch, kv)?;
        let be = &self.be;
        let kv_key =
            kv.k.iter()
                .chain(&kv.v)
                .fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
                    (h ^ be.kv_id(x)).wrapping_mul(0x100_0000_01b3)
                });
        let net = &self.net;
        be.forward_pass(batch, kv_key, &mut || match net {
            Net::Llama(m) => m.forward(be, batch, kv),
            Net::Qwen2(m) => m.forward(be, batch, kv),
            Net::Gemma3(m) => m.forward(be, batch, kv),
        })
    }

    fn check(&self, b: &Batch, kv: &KvCache<B>) -> Result<()> {
        let c = self.config();
        let n = b.n_tokens();
        let bad = |m: String| Err(Error::InvalidInput(format!("batch: {m}")));
        if n == 0 {
            return bad("no tokens".into());
        }
        if b.positions.len() != n || b.seq_of_token.len() != n {
            return bad(format!(
                "{n} tokens but {} positions and {} sequence indices",
                b.positions.len(),
                b.seq_of_token.len()
            ));
        }
        if kv.k.len() != c.n_layer || kv.v.len() != c.n_layer {
            return bad(format!(
                "KV cache of {} layers for {}",
                kv.k.len(),
                c.n_layer
            ));
        }
        for i in 0..n {
            let (t, p, s) = (
                b.tokens[i],
                b.positions[i] as usize,
                b.seq_of_token[i] as usize,
            );
            if t as usize >= c.n_vocab {
                return bad(format!(
                    "token id {t} outside the vocabulary of {}",
                    c.n_vocab
                ));
            }
            let Some(seq) = b.seqs.get(s) else {
                return bad(format!("token {i}: sequence index {s} of {}", b.seqs.len()));
            };
            if p >= seq.kv_len || seq.block_table.len() * BLOCK_SIZE < seq.kv_len {
                return bad(format!(
                    "token {i}: position {p}, sequence KV length {} over {} blocks",
                    seq.kv_len,
                    seq.block_table.len()
                ));
            }
        }
        for seq in b.seqs {
            if let Some(&blk) = seq.block_table.iter().find(|&&x| x as usize >= kv.n_blocks) {
                return bad(format!("block id {blk} >= KV cache blocks {}", kv.n_blocks));
            }
        }
        if let Some(&r) = b.logits_for.iter().find(|&&r| r as usize >= n) {
            return bad(format!("logits wanted for token {r} of {n}"));
        }
        Ok(())
    }
}
