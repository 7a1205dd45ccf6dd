//! The runner: executes a [`SchedulerOutput`] as one batched forward pass. It decides nothing.

use super::scheduler::{Scheduler, SchedulerOutput};
use super::{Draw, StepModel};
use crate::model::{Batch, SeqSlot};
use crate::{Error, Result};

/// What one step produced for the sequences with `wants_logits`, in batch order.
pub enum StepResult {
    /// `[rows, n_vocab]` logits on the host; the engine samples them.
    Logits(Vec<f32>),
    /// Tokens drawn on the device, and the logits when they were asked for.
    Tokens(Vec<u32>, Option<Vec<f32>>),
}

/// Builds the batch for `out` from the scheduler's sequences and runs the model: with `draws`
/// (one per sequence with `wants_logits`, in batch order) the model samples on its device,
/// else it returns host logits.
pub fn run_step(
    model: &mut dyn StepModel,
    sched: &Scheduler,
    out: &SchedulerOutput,
    draws: Option<(&[Draw], bool)>,
) -> Result<StepResult> {
    let n = out.n_tokens();
    let mut tokens = Vec::with_capacity(n);
    let mut positions = Vec::with_capacity(n);
    let mut seq_of_token = Vec::with_capacity(n);
    let mut logits_for = Vec::new();
    let mut slots = Vec::with_capacity(out.seqs.len());
    for (k, x) in out.seqs.iter().enumerate() {
        let s = sched.running_seq(x.id).ok_or_else(|| {
            Error::InvalidInput(format!("scheduled sequence {} is not running", x.id))
        })?;
        let end = x.start + x.len;
        if end > s.tokens.len() || s.table.capacity() < end {
            return Err(Error::InvalidInput(format!(
                "sequence {}: step {}..{end} beyond its {} tokens or {} slots",
                x.id,
                x.start,
                s.tokens.len(),
                s.table.capacity()
            )));
        }
        for p in x.start..end {
            tokens.push(s.tokens[p]);
            positions.push(p as u32);
            seq_of_token.push(k as u32);
        }
        if x.wants_logits {
            logits_for.push(tokens.len() as u32 - 1);
        }
        slots.push(SeqSlot {
            block_table: &s.table.blocks,
            kv_len: end,
        });
    }
    let batch = Batch {
        tokens: &tokens,
        positions: &positions,
        seq_of_token: &seq_of_token,
        seqs: &slots,
        logits_for: &logits_for,
    };
    let want = logits_for.len() * model.n_vocab();
    let check = |l: &[f32]| {
        if l.len() != want {
            return Err(Error::Model(format!(
                "forward returned {} logits, expected {want}",
                l.len()
            )));
        }
        Ok(())
    };
    match draws {
        None => {
            let logits = model.forward(&batch)?;
            check(&logits)?;
            Ok(StepResult::Logits(logits))
        }
        Some((draws, host_logits)) => {
            if draws.len() != logits_for.len() {
                return Err(Error::Model(format!(
                    "{} draws for {} logit rows",
                    draws.len(),
                    logits_for.len()
                )));
            }
            let (tokens, logits) = model.forward_sample(&batch, draws, host_logits)?;
            if tokens.len() != draws.len() {
                return Err(Error::Model(format!(
                    "device sampler returned {} tokens for {} rows",
                    tokens.len(),
                    draws.len()
                )));
            }
            if let Some(l) = &logits {
                check(l)?;
            }
            Ok(StepResult::Tokens(tokens, logits))
        }
    }
}
