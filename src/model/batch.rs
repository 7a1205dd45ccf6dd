//! The plain description of one forward pass over tokens from one or more sequences.

/// Token slots per KV block.
pub const BLOCK_SIZE: usize = 16;

/// One sequence taking part in a forward pass.
#[derive(Debug, Clone, Copy)]
pub struct SeqSlot<'a> {
    /// Physical KV block ids, in logical order; it covers positions `0..kv_len`.
    pub block_table: &'a [u32],
    /// The sequence's KV length after this pass (cached tokens + the tokens in this batch).
    pub kv_len: usize,
}

/// Tokens to run through the model in one pass. Tokens of one sequence are contiguous and in
/// position order; a sequence's new tokens see its cached tokens and each other causally.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// `[n_tokens]` token ids.
    pub tokens: &'a [u32],
    /// `[n_tokens]` position of each token within its sequence.
    pub positions: &'a [u32],
    /// `[n_tokens]` index into `seqs` of each token's sequence.
    pub seq_of_token: &'a [u32],
    /// The sequences in this batch.
    pub seqs: &'a [SeqSlot<'a>],
    /// Indices into `tokens` whose logits are wanted, in the order the logits are returned
    /// (usually the last token of each sequence; all tokens for perplexity).
    pub logits_for: &'a [u32],
}

impl Batch<'_> {
    /// Number of tokens in the pass.
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }
}
