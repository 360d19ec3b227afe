//! Model quality beside energy: perplexity and KL divergence of a model on a text,
//! computed exactly as llama.cpp's `llama-perplexity` does (docs/quality.md).
//!
//! - [`text`]       — scoring texts by name (`[quality] texts_dir`, built-in `licenses`)
//! - [`perplexity`] — log-softmax NLL, PPL ± its standard error, chunk planning (pure)
//! - [`kld`]        — per-token KL divergence, Δp, top-1 agreement and their summary (pure)
//! - [`score`]      — one quality run on loaded models (the inference thread's side)
//! - [`energy`]     — energy per scored token (board and each rail)

pub mod energy;
pub mod kld;
pub mod perplexity;
pub mod score;
pub mod text;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use text::ScoringText;

/// Smallest context a quality job may use (half of it is scored).
pub const MIN_N_CTX: u32 = 16;
/// Default context (llama.cpp's perplexity tables use 512).
pub const DEFAULT_N_CTX: u32 = 512;

/// What a quality job computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityKind {
    /// Perplexity of the model on the text.
    Perplexity,
    /// KL divergence of the model's token distributions from a reference model's.
    Kld,
}

impl QualityKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            QualityKind::Perplexity => "perplexity",
            QualityKind::Kld => "kld",
        }
    }
}

/// A quality request to the engine (the text already resolved and read).
#[derive(Debug, Clone)]
pub struct QualityRequest {
    pub kind: QualityKind,
    /// The model scored.
    pub model: String,
    /// For `kld`: the model whose distributions are the base.
    pub reference: Option<String>,
    pub text: Arc<ScoringText>,
    /// Tokens per chunk.
    pub n_ctx: u32,
    /// Most chunks to score (None = every whole chunk of the text).
    pub max_chunks: Option<u32>,
    /// Threads (None = all cores).
    pub threads: Option<u32>,
    /// Per-job keep-alive override, as for generation.
    pub keep_alive_s: Option<i64>,
}

/// The result's `quality` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QualityResult {
    /// `perplexity` or `kld`.
    pub kind: String,
    /// Text name and the sha256 of its bytes.
    pub text: String,
    pub text_sha256: String,
    pub n_ctx: u32,
    /// Chunks scored (fewer than planned when canceled).
    pub chunks: u32,
    /// Chunks the text (and max_chunks) allowed.
    pub chunks_planned: u32,
    /// Tokens whose probability was scored (second half of each chunk, minus one).
    pub tokens_scored: u64,
    /// Tokens evaluated (chunks × n_ctx; per model).
    pub tokens_evaluated: u64,
    /// Wall time of the eval phase, ms.
    pub eval_ms: f64,
    /// Scored tokens per second of eval.
    pub tokens_scored_per_s: f64,
    /// Evaluated tokens per second of eval (comparable to llama-perplexity's speed).
    pub tokens_evaluated_per_s: f64,
    pub ppl: f64,
    pub ppl_stderr: f64,
    /// kld only: the reference model.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reference_ppl: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kld_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kld_stderr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kld_p99: Option<f64>,
    /// Mean of p(correct token | model) − p(correct token | reference).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub delta_p_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub delta_p_stderr: Option<f64>,
    /// Fraction of tokens whose most likely next token is the same ("same top p").
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub top1_agreement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub top1_stderr: Option<f64>,
}

/// Why a quality request is refused. Each has its own stable code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QualityError {
    #[error("invalid text name '{name}': {reason}")]
    InvalidTextName { name: String, reason: &'static str },
    #[error("text '{name}' not found: no '{name}.txt' in text directory '{dir}' (and not the built-in 'licenses')")]
    TextNotFound { name: String, dir: String },
    #[error("text '{name}' cannot be read: {reason}")]
    TextUnreadable { name: String, reason: String },
    #[error(
        "invalid 'n_ctx' '{n_ctx}': allowed {MIN_N_CTX} ..= {max} (the model's trained context)"
    )]
    BadNCtx { n_ctx: u32, max: u32 },
    #[error("text '{name}' is {tokens} tokens with this model's vocabulary, shorter than one chunk of 'n_ctx' {n_ctx}; use a longer text or a smaller 'n_ctx'")]
    TextTooShort {
        name: String,
        tokens: usize,
        n_ctx: u32,
    },
    #[error("invalid 'max_chunks' '0': must be at least 1")]
    BadMaxChunks,
    #[error("'kind' 'kld' needs 'reference' (the model to compare with)")]
    MissingReference,
    #[error("'reference' is only for 'kind' 'kld'")]
    UnexpectedReference,
    #[error("model '{model}' and reference '{reference}' do not share a vocabulary ({detail}); KL divergence needs the same tokens")]
    VocabMismatch {
        model: String,
        reference: String,
        detail: String,
    },
}

impl QualityError {
    pub fn code(&self) -> &'static str {
        match self {
            QualityError::InvalidTextName { .. } => "invalid_text_name",
            QualityError::TextNotFound { .. } => "text_not_found",
            QualityError::TextUnreadable { .. } => "text_unreadable",
            QualityError::BadNCtx { .. } => "invalid_n_ctx",
            QualityError::TextTooShort { .. } => "text_too_short",
            QualityError::BadMaxChunks => "invalid_max_chunks",
            QualityError::MissingReference => "missing_reference",
            QualityError::UnexpectedReference => "unexpected_reference",
            QualityError::VocabMismatch { .. } => "vocab_mismatch",
        }
    }
}
