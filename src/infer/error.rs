//! The engine's typed errors. Each has a stable `code()` used by the protocol.

use std::path::PathBuf;

use super::admission::AdmissionRefused;
use super::gguf::GgufError;
use super::offload::GpuAdmissionRefused;
use super::registry::ModelNameError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    ModelName(#[from] ModelNameError),
    #[error("model '{name}' cannot be used: {source}")]
    BadModelFile {
        name: String,
        #[source]
        source: GgufError,
    },
    #[error("llama.cpp could not load model '{name}' from '{path}'; its log (RUST_LOG=llama_cpp_2=debug) says why")]
    Load { name: String, path: PathBuf },
    #[error("memory admission refused: {0}")]
    Admission(#[from] AdmissionRefused),
    #[error("memory admission refused: {0}")]
    GpuAdmission(#[from] GpuAdmissionRefused),
    #[error("prompt is {prompt_tokens} tokens but the context holds {n_ctx} (n_ctx); shorten the prompt or raise 'n_ctx' (the model was trained on {trained_ctx})")]
    ContextOverflow {
        prompt_tokens: u32,
        n_ctx: u32,
        trained_ctx: u32,
    },
    #[error("prompt is empty after tokenization")]
    EmptyPrompt,
    #[error("model '{name}' has no chat template in its GGUF metadata; send 'prompt' instead of 'messages'")]
    NoChatTemplate { name: String },
    #[error("cannot apply the chat template of model '{name}': {reason}")]
    ChatTemplate { name: String, reason: String },
    #[error("invalid option '{field}': {reason}")]
    InvalidOption { field: &'static str, reason: String },
    #[error(
        "cannot create a llama.cpp context (n_ctx {n_ctx}, batch {batch}); llama.cpp refused it"
    )]
    Context { n_ctx: u32, batch: u32 },
    #[error("llama.cpp decode failed at position {pos}: {reason}")]
    Decode { pos: u32, reason: String },
    #[error("llama.cpp backend failed to initialise: {0}")]
    Backend(String),
    #[error("job canceled before generation started")]
    Canceled,
    #[error("the inference engine is busy: {queued} requests already queued")]
    Busy { queued: usize },
    #[error("the inference engine has shut down")]
    ShutDown,
    #[error("the inference thread panicked while running this job: {0}")]
    Panicked(String),
    /// A quality job's input is unusable (text, n_ctx, reference); its own code.
    #[error(transparent)]
    Quality(#[from] crate::quality::QualityError),
}

impl EngineError {
    /// Stable machine-readable code (docs/protocol.md lists them).
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::ModelName(ModelNameError::Invalid { .. }) => "invalid_model_name",
            EngineError::ModelName(ModelNameError::Escapes { .. }) => "invalid_model_name",
            EngineError::ModelName(ModelNameError::NotFound { .. }) => "model_not_found",
            EngineError::ModelName(ModelNameError::NotAFile { .. }) => "model_not_found",
            EngineError::BadModelFile { source, .. } => match source {
                GgufError::NotGguf { .. } | GgufError::Version { .. } => "model_not_gguf",
                GgufError::Truncated { .. } => "model_truncated",
                GgufError::Corrupt { .. } => "model_corrupt",
                GgufError::Io { .. } => "model_unreadable",
            },
            EngineError::Load { .. } => "model_load_failed",
            EngineError::Admission(_) | EngineError::GpuAdmission(_) => "admission_refused",
            EngineError::ContextOverflow { .. } => "context_overflow",
            EngineError::EmptyPrompt => "empty_prompt",
            EngineError::NoChatTemplate { .. } => "no_chat_template",
            EngineError::ChatTemplate { .. } => "chat_template_failed",
            EngineError::InvalidOption { .. } => "invalid_option",
            EngineError::Context { .. } => "context_failed",
            EngineError::Decode { .. } => "decode_failed",
            EngineError::Backend(_) => "backend_failed",
            EngineError::Canceled => "canceled",
            EngineError::Busy { .. } => "engine_busy",
            EngineError::ShutDown => "engine_shut_down",
            EngineError::Panicked(_) => "engine_panicked",
            EngineError::Quality(q) => q.code(),
        }
    }

    /// True when the request itself is at fault (a resubmission will fail the same way),
    /// as opposed to a runtime failure.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            EngineError::ModelName(_)
                | EngineError::BadModelFile { .. }
                | EngineError::Admission(_)
                | EngineError::GpuAdmission(_)
                | EngineError::ContextOverflow { .. }
                | EngineError::EmptyPrompt
                | EngineError::NoChatTemplate { .. }
                | EngineError::InvalidOption { .. }
                | EngineError::Quality(_)
        )
    }
}
