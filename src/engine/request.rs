//! What a client asks the engine for, and what the engine sends back.

/// Sampling settings of one request (mapped to the sampler's parameters by the engine).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingSpec {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: u32,
    /// 1.0 = off.
    pub top_p: f32,
    /// 0.0 = off.
    pub min_p: f32,
    /// 1.0 = off.
    pub repeat_penalty: f32,
    /// OpenAI presence penalty.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty.
    pub frequency_penalty: f32,
    /// Recent tokens the penalties look at.
    pub penalty_last_n: usize,
    /// A user seed: the draw then depends on (seed, step) only. `None`: a fresh seed.
    pub seed: Option<u64>,
}

impl Default for SamplingSpec {
    /// OpenAI's defaults: temperature 1, no truncation, no penalties.
    fn default() -> Self {
        SamplingSpec {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: None,
        }
    }
}

/// One generation request, already tokenized and validated.
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// Prompt token ids (at least one).
    pub prompt: Vec<u32>,
    /// Most tokens to generate (at least one).
    pub max_tokens: usize,
    /// Sampling settings.
    pub sampling: SamplingSpec,
    /// Stop strings.
    pub stop: Vec<String>,
    /// `Some(k)`: report the chosen token's log-probability and the `k` most likely tokens.
    pub logprobs: Option<usize>,
    /// Keep generating past end-of-generation tokens (vLLM's and llama-server's `ignore_eos`;
    /// benchmarks use it).
    pub ignore_eos: bool,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the context limit.
    Length,
}

impl FinishReason {
    /// The OpenAI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Log-probability of one generated token and its most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token chosen.
    pub token: u32,
    /// Its text (lossy UTF-8 of its bytes).
    pub text: String,
    /// Its raw bytes.
    pub bytes: Vec<u8>,
    /// Natural-log probability under the model's distribution (before sampling settings).
    pub logprob: f32,
    /// The most likely tokens: (id, text, bytes, logprob), most likely first.
    pub top: Vec<(u32, String, Vec<u8>, f32)>,
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens (an end-of-generation token included).
    pub completion_tokens: usize,
}

/// What the engine sends to a request's receiver.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New text (possibly empty while a stop-string prefix is held back) and the log-probs of
    /// the tokens that produced it.
    Delta {
        /// Text to append.
        text: String,
        /// Per-token log-probs (only when requested).
        logprobs: Vec<TokenLogprob>,
    },
    /// The end: always the last event of a request.
    Done {
        /// Why it ended.
        finish: FinishReason,
        /// Token counts.
        usage: Usage,
    },
    /// The request failed inside the engine (the server answers 500 or ends the stream).
    Error(String),
}
