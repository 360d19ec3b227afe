//! What a caller asks the engine for: a model by name, a prompt or chat messages,
//! and generation options. The JSON names are the protocol's (docs/protocol.md).

use serde::{Deserialize, Serialize};

/// One chat message (`role` is `system`, `user` or `assistant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// The text to condition on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptInput {
    /// Raw text, tokenized as is (with BOS when the model wants one).
    Prompt(String),
    /// Chat messages, rendered with the model's own chat template (GGUF metadata).
    Messages(Vec<ChatMessage>),
    /// Pre-tokenized input (benchmarks: llama-bench's pp test feeds token ids).
    Tokens(Vec<i32>),
    /// A synthetic prompt of exactly this many tokens, drawn from the vocabulary with
    /// the request's seed, BOS first when the model adds one (`prompt_tokens` job
    /// field; llama-bench's `-p`; see `infer::synthetic`).
    PromptTokens(u32),
}

/// Generation options. Defaults follow llama.cpp's, except `temperature`, which
/// defaults to 0 (greedy) so measurements are reproducible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateOptions {
    /// Most tokens to generate (1 ..= n_ctx).
    pub max_tokens: u32,
    /// Sampling temperature; 0 = greedy (argmax). 0 ..= 5.
    pub temperature: f32,
    /// Top-k filter; 0 disables.
    pub top_k: u32,
    /// Nucleus filter; 1 disables. 0 < p <= 1.
    pub top_p: f32,
    /// Min-p filter; 0 disables. 0 ..= 1.
    pub min_p: f32,
    /// Repetition penalty over the last 64 tokens; 1 disables. 0 < x <= 10... (validated by protocol).
    pub repeat_penalty: f32,
    /// RNG seed for sampling; None = random.
    pub seed: Option<u32>,
    /// Generation stops when any of these strings appears; it is not included in the text.
    pub stop: Vec<String>,
    /// Context size in tokens; 0 = the model's trained context.
    pub n_ctx: u32,
    /// Threads for generation; None = all cores.
    pub threads: Option<u32>,
    /// Threads for prompt processing; None = same as `threads`.
    pub threads_batch: Option<u32>,
    /// Logical batch size for prompt processing.
    pub batch: u32,
    /// Layers to offload to a GPU (0 on CPU builds).
    pub n_gpu_layers: u32,
    /// Measured repetitions (like llama-bench's -r).
    pub repeat: u32,
    /// Unmeasured warm-up repetitions run first.
    pub warmup: u32,
    /// Keep generating through end-of-generation tokens (benchmarks, like llama.cpp's --ignore-eos).
    pub ignore_eos: bool,
    /// Synthetic tokens put into the context before the prompt in every repetition,
    /// unmeasured (llama-bench's `-d`): the measured prompt and generation then run
    /// at that depth.
    pub depth: u32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            seed: None,
            stop: Vec::new(),
            n_ctx: 2048,
            threads: None,
            threads_batch: None,
            batch: 512,
            n_gpu_layers: 0,
            repeat: 1,
            warmup: 0,
            ignore_eos: false,
            depth: 0,
        }
    }
}

/// A complete request to the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// Model name: the file stem of a `.gguf` in the model directory.
    pub model: String,
    /// Prompt or chat messages.
    pub input: PromptInput,
    /// Generation options.
    pub options: GenerateOptions,
    /// Per-job model keep-alive override in seconds (0 = unload after, negative = keep).
    pub keep_alive_s: Option<i64>,
}
