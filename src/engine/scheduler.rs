//! The scheduler: every step, decides which tokens of which sequences run, within a token budget.
//!
//! Running sequences are kept oldest first. A step schedules, in order: one decode token for each
//! running sequence that has finished its prompt, the next prompt chunk of running sequences still
//! in prefill, then admits waiting sequences (taking cached prefix blocks first) while the budget
//! and the sequence limit allow. When a running sequence needs a block and none is free, the
//! newest running sequence is preempted: its blocks are freed and it goes back to the front of the
//! waiting queue with all its tokens (prompt and generated) to be recomputed later.
//!
//! The scheduler never touches tensors; it emits a plain [`SchedulerOutput`].

use std::collections::VecDeque;

use crate::kv_cache::{BlockAllocator, BlockCounts, BlockTable, BLOCK_SIZE};

/// Scheduler limits.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Most sequences in the running batch.
    pub max_seqs: usize,
    /// Most tokens in one forward pass.
    pub token_budget: usize,
    /// Physical KV blocks.
    pub n_blocks: usize,
}

/// A sequence the scheduler tracks: its tokens and its KV blocks.
#[derive(Debug)]
pub struct Sequence {
    /// Request id.
    pub id: u64,
    /// Prompt tokens followed by generated tokens.
    pub tokens: Vec<u32>,
    /// Tokens whose keys and values are in the cache.
    pub n_computed: usize,
    /// The blocks holding them.
    pub table: BlockTable,
}

/// One sequence's share of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledSeq {
    /// Request id.
    pub id: u64,
    /// First position run this step (== tokens computed before it).
    pub start: usize,
    /// Tokens run this step.
    pub len: usize,
    /// The step reaches the end of the sequence's tokens: its logits give the next token.
    pub wants_logits: bool,
}

/// The plan for one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerOutput {
    /// Sequences to run, in batch order.
    pub seqs: Vec<ScheduledSeq>,
    /// Sequences preempted in this step (their blocks freed, back in the waiting queue).
    pub preempted: Vec<u64>,
    /// Sequences that can never run (they alone need more blocks than exist); removed.
    pub rejected: Vec<u64>,
    /// Sequences admitted from the waiting queue for the first time in this step.
    pub admitted: Vec<u64>,
}

impl SchedulerOutput {
    /// Total tokens in the step.
    pub fn n_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.len).sum()
    }
}

/// Continuous-batching scheduler over a paged KV cache.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    alloc: BlockAllocator,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    ever_admitted: std::collections::HashSet<u64>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(cfg: SchedulerConfig) -> Self {
        Scheduler {
            cfg,
            alloc: BlockAllocator::new(cfg.n_blocks),
            waiting: VecDeque::new(),
            running: Vec::new(),
            ever_admitted: Default::default(),
        }
    }

    /// Queues a new sequence with its prompt (at least one token).
    pub fn add(&mut self, id: u64, prompt: Vec<u32>) {
        self.waiting.push_back(Sequence {
            id,
            tokens: prompt,
            n_computed: 0,
            table: BlockTable::new(),
        });
    }

    /// Waiting sequences.
    pub fn n_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Running sequences.
    pub fn n_running(&self) -> usize {
        self.running.len()
    }

    /// Block counts.
    pub fn block_counts(&self) -> BlockCounts {
        self.alloc.counts()
    }

    /// Prefix-cache hits so far.
    pub fn prefix_hits(&self) -> u64 {
        self.alloc.prefix_hits()
    }

    /// Whether anything is waiting or running.
    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    /// A running sequence.
    pub fn running_seq(&self, id: u64) -> Option<&Sequence> {
        self.running.iter().find(|s| s.id == id)
    }

    /// Ids of every tracked sequence (waiting and running).
    pub fn ids(&self) -> Vec<u64> {
        self.waiting
            .iter()
            .chain(self.running.iter())
            .map(|s| s.id)
            .collect()
    }

    /// Appends a sampled token to a running sequence.
    pub fn append_token(&mut self, id: u64, token: u32) {
        if let Some(s) = self.running.iter_mut().find(|s| s.id == id) {
            s.tokens.push(token);
        }
    }

    /// Removes a sequence (finished or cancelled) wherever it is, freeing its blocks.
    /// Returns whether it was found.
    pub fn remove(&mut self, id: u64) -> bool {
        self.ever_admitted.remove(&id);
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            let mut s = self.running.remove(i);
            s.table.release(&mut self.alloc);
            return true;
        }
        if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            if let Some(mut s) = self.waiting.remove(i) {
                s.table.release(&mut self.alloc);
            }
            return true;
        }
        false
    }

    /// Records that the step `out` ran: advances computed counts and registers full blocks in
    /// the prefix cache.
    pub fn commit(&mut self, out: &SchedulerOutput) {
        for sch in &out.seqs {
            if let Some(s) = self.running.iter_mut().find(|s| s.id == sch.id) {
                s.n_computed = sch.start + sch.len;
                let computed = &s.tokens[..s.n_computed];
                s.table.register_full(&mut self.alloc, computed);
            }
        }
    }

    /// Plans the next step.
    pub fn schedule(&mut self) -> SchedulerOutput {
        let mut out = SchedulerOutput::default();
        let mut budget = self.cfg.token_budget;
        // Decodes first (one token each), then prefill chunks of running sequences.
        for decode_pass in [true, false] {
            let mut i = 0;
            while i < self.running.len() && budget > 0 {
                let s = &self.running[i];
                let remaining = s.tokens.len() - s.n_computed;
                let is_decode = remaining == 1;
                if is_decode != decode_pass || remaining == 0 {
                    i += 1;
                    continue;
                }
                let n = remaining.min(budget);
                if !self.grow(i, n, &mut out) {
                    // Sequence i itself was preempted or rejected; it is gone from `running`.
                    continue;
                }
                let s = &self.running[i];
                out.seqs.push(ScheduledSeq {
                    id: s.id,
                    start: s.n_computed,
                    len: n,
                    wants_logits: s.n_computed + n == s.tokens.len(),
                });
                budget -= n;
                i += 1;
            }
        }
        // Admit waiting sequences.
        // (Not in a step that had to preempt: memory is short.)
        while budget > 0 && self.running.len() < self.cfg.max_seqs && out.preempted.is_empty() {
            let Some(mut s) = self.waiting.pop_front() else {
                break;
            };
            let max_hit = (s.tokens.len() - 1) / BLOCK_SIZE;
            let (hit, hash) = self.alloc.lookup_prefix(&s.tokens, max_hit);
            s.table.n_hashed = hit.len();
            s.table.last_hash = hash;
            s.n_computed = hit.len() * BLOCK_SIZE;
            s.table.blocks = hit;
            let n = (s.tokens.len() - s.n_computed).min(budget);
            let need = s.table.blocks_needed(s.n_computed + n);
            match self.alloc.allocate(need) {
                Some(b) => s.table.blocks.extend(b),
                None => {
                    s.table.release(&mut self.alloc);
                    s.n_computed = 0;
                    let whole = s.tokens.len().div_ceil(BLOCK_SIZE);
                    if self.running.is_empty() && whole > self.cfg.n_blocks {
                        out.rejected.push(s.id);
                    } else {
                        self.waiting.push_front(s);
                    }
                    break;
                }
            }
            if self.ever_admitted.insert(s.id) {
                out.admitted.push(s.id);
            }
            out.seqs.push(ScheduledSeq {
                id: s.id,
                start: s.n_computed,
                len: n,
                wants_logits: s.n_computed + n == s.tokens.len(),
            });
            budget -= n;
            self.running.push(s);
        }
        out
    }

    /// Makes running sequence `i` able to hold `n` more tokens, preempting the newest running
    /// sequences if needed. Returns false when sequence `i` itself had to go.
    fn grow(&mut self, i: usize, n: usize, out: &mut SchedulerOutput) -> bool {
        loop {
            let s = &self.running[i];
            let need = s.table.blocks_needed(s.n_computed + n);
            if need == 0 {
                return true;
            }
            if let Some(b) = self.alloc.allocate(need) {
                self.running[i].table.blocks.extend(b);
                return true;
            }
            let last = self.running.len() - 1;
            let Some(mut victim) = self.running.pop() else {
                return false;
            };
            victim.table.release(&mut self.alloc);
            victim.n_computed = 0;
            if last == i && i == 0 {
                // Alone and still out of blocks: it can never run.
                self.ever_admitted.remove(&victim.id);
                out.rejected.push(victim.id);
                return false;
            }
            out.preempted.push(victim.id);
            self.waiting.push_front(victim);
            if last == i {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_seqs: usize, budget: usize, blocks: usize) -> SchedulerConfig {
        SchedulerConfig {
            max_seqs,
            token_budget: budget,
            n_blocks: blocks,
        }
    }

    /// Runs a step as the engine would: commit, then append a token for each sequence that
    /// wanted logits.
    fn step(s: &mut Scheduler, next: u32) -> SchedulerOutput {
        let out = s.schedule();
        s.commit(&out);
        for x in &out.seqs {
            if x.wants_logits {
                s.append_token(x.id, next);
            }
        }
        out
    }

    #[test]
    fn long_prompt_is_chunked_within_budget() {
        let mut s = Scheduler::new(cfg(4, 32, 64));
        s.add(1, (0..70).collect());
        let o = step(&mut s, 9);
        assert_eq!(
            o.seqs,
            vec![ScheduledSeq {
                id: 1,
                start: 0,
                len: 32,
                wants_logits: false
            }]
        );
        assert_eq!(o.admitted, vec![1]);
        let o = step(&mut s, 9);
        assert_eq!(o.seqs[0].start, 32);
        assert_eq!(o.seqs[0].len, 32);
        let o = step(&mut s, 9);
        assert_eq!(
            o.seqs[0],
            ScheduledSeq {
                id: 1,
                start: 64,
                len: 6,
                wants_logits: true
            }
        );
        let o = step(&mut s, 9);
        assert_eq!(
            o.seqs[0],
            ScheduledSeq {
                id: 1,
                start: 70,
                len: 1,
                wants_logits: true
            }
        );
    }

    #[test]
    fn decodes_go_first_and_new_requests_join_running_batch() {
        let mut s = Scheduler::new(cfg(8, 20, 64));
        s.add(1, (0..5).collect());
        step(&mut s, 1);
        s.add(2, (0..30).collect());
        let o = step(&mut s, 1);
        // One decode for 1, then 19 prompt tokens of 2.
        assert_eq!(
            o.seqs[0],
            ScheduledSeq {
                id: 1,
                start: 5,
                len: 1,
                wants_logits: true
            }
        );
        assert_eq!(
            o.seqs[1],
            ScheduledSeq {
                id: 2,
                start: 0,
                len: 19,
                wants_logits: false
            }
        );
        assert_eq!(o.n_tokens(), 20);
        assert_eq!(s.n_running(), 2);
    }

    #[test]
    fn max_seqs_limits_admission() {
        let mut s = Scheduler::new(cfg(2, 100, 64));
        for id in 0..3 {
            s.add(id, vec![1, 2, 3]);
        }
        let o = step(&mut s, 1);
        assert_eq!(o.seqs.len(), 2);
        assert_eq!(s.n_waiting(), 1);
        s.remove(0);
        let o = step(&mut s, 1);
        assert_eq!(o.seqs.iter().map(|x| x.id).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn newest_is_preempted_when_blocks_run_out_and_recomputed_later() {
        // 4 blocks; two sequences of 30 tokens take 2 blocks each; the next decode of the
        // oldest needs a third block -> the newest is preempted.
        let mut s = Scheduler::new(cfg(4, 100, 4));
        s.add(1, (0..31).collect());
        s.add(2, (100..131).collect());
        let o = step(&mut s, 7);
        assert_eq!(o.seqs.len(), 2);
        assert_eq!(s.block_counts().free, 0);
        let o = step(&mut s, 7); // seq 1 at 32 tokens computed; seq 2 too
        assert_eq!(o.preempted, Vec::<u64>::new());
        let o = step(&mut s, 7); // 33rd token needs a third block
        assert_eq!(o.preempted, vec![2]);
        assert_eq!(o.seqs.len(), 1);
        assert_eq!(o.seqs[0].id, 1);
        assert_eq!(s.n_waiting(), 1);
        // Finish 1: 2 is readmitted with all its tokens (prompt + 2 generated), recomputed.
        s.remove(1);
        let o = step(&mut s, 7);
        assert_eq!(o.seqs.len(), 1);
        assert_eq!(o.seqs[0].id, 2);
        assert!(
            o.admitted.is_empty(),
            "a preempted sequence is not newly admitted"
        );
        assert_eq!(o.seqs[0].start + o.seqs[0].len, 33);
        assert!(o.seqs[0].wants_logits);
        s.remove(2);
        assert_eq!(s.block_counts().used, 0);
    }

    #[test]
    fn shared_prefix_blocks_are_reused() {
        let mut s = Scheduler::new(cfg(4, 100, 16));
        let prompt: Vec<u32> = (0..40).collect();
        s.add(1, prompt.clone());
        step(&mut s, 3);
        s.add(2, prompt.clone());
        let o = step(&mut s, 3);
        let x = o.seqs.iter().find(|x| x.id == 2).unwrap();
        assert_eq!(x.start, 32);
        assert_eq!(x.len, 8);
        let b1 = s.running_seq(1).unwrap().table.blocks.clone();
        let b2 = s.running_seq(2).unwrap().table.blocks.clone();
        assert_eq!(b1[..2], b2[..2]);
        assert_ne!(b1[2], b2[2]);
        s.remove(1);
        s.remove(2);
        assert_eq!(s.block_counts().used, 0);
        // A prompt of exactly two blocks still computes its last token.
        s.add(3, (0..32).collect());
        let o = step(&mut s, 3);
        assert_eq!(o.seqs[0].start, 16);
        assert_eq!(o.seqs[0].len, 16);
    }

    #[test]
    fn a_sequence_larger_than_the_cache_is_rejected() {
        let mut s = Scheduler::new(cfg(4, 1000, 2));
        s.add(1, (0..40).collect());
        let o = s.schedule();
        assert_eq!(o.rejected, vec![1]);
        assert!(!s.has_work());
        assert_eq!(s.block_counts().used, 0);
    }
}
