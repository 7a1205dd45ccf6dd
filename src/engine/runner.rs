//! The runner: executes a [`SchedulerOutput`] as one batched forward pass. It decides nothing.

use super::scheduler::{Scheduler, SchedulerOutput};
use super::StepModel;
use crate::model::{Batch, SeqSlot};
use crate::{Error, Result};

/// Builds the batch for `out` from the scheduler's sequences and runs the model. Returns one row
/// of logits per scheduled sequence with `wants_logits`, in batch order.
pub fn run_step(
    model: &mut dyn StepModel,
    sched: &Scheduler,
    out: &SchedulerOutput,
) -> Result<Vec<f32>> {
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
    let logits = model.forward(&batch)?;
    let want = logits_for.len() * model.n_vocab();
    if logits.len() != want {
        return Err(Error::Model(format!(
            "forward returned {} logits, expected {want}",
            logits.len()
        )));
    }
    Ok(logits)
}
