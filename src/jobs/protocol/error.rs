//! Why a job payload was refused: one variant per reason, each with a stable code.

use super::messages::ErrorBody;

/// Why a payload was refused. Each variant has a stable [`JobError::code`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    #[error("payload is {size} bytes; the limit is {limit} bytes (limits.max_payload_bytes)")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("payload is not valid UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("payload is not valid JSON: {reason}")]
    InvalidJson { reason: String },
    #[error("JSON is nested deeper than {limit} levels (limits.max_json_depth)")]
    TooDeep { limit: usize },
    #[error("payload must be a JSON object, got {got}")]
    NotAnObject { got: &'static str },
    #[error("field 'id' is missing; every job needs an id of 1-128 characters [A-Za-z0-9._-]")]
    MissingId,
    #[error("field 'id' is invalid: {reason}")]
    InvalidId { reason: String },
    #[error("unknown field '{field}'; allowed fields are listed in docs/protocol.md")]
    UnknownField { field: String },
    #[error("field '{field}' is missing: {hint}")]
    MissingField {
        field: &'static str,
        hint: &'static str,
    },
    #[error("field '{field}' must be {expected}, got {got}")]
    WrongType {
        field: String,
        expected: &'static str,
        got: String,
    },
    #[error("field '{field}' is out of range: {value} (allowed: {allowed})")]
    OutOfRange {
        field: String,
        value: String,
        allowed: String,
    },
    #[error("fields 'prompt' and 'messages' are both present; send exactly one")]
    BothPromptAndMessages,
    #[error("neither 'prompt' nor 'messages' is present; send exactly one")]
    NoPrompt,
    #[error(
        "field '{field}' is {size} bytes; the limit is {limit} bytes (limits.max_prompt_bytes)"
    )]
    PromptTooLarge {
        field: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("field 'model' is invalid: '{name}' {reason}")]
    InvalidModelName { name: String, reason: &'static str },
    #[error("job id '{id}' was already used for a different job; pick a new id")]
    DuplicateId { id: String },
    #[error("field '{field}' does not apply to 'kind' '{kind}'")]
    FieldNotForKind {
        field: &'static str,
        kind: &'static str,
    },
    #[error("invalid text name '{name}': {reason}")]
    InvalidTextName { name: String, reason: &'static str },
    #[error("fields 'prompt_tokens' and '{other}' are both present; a synthetic prompt replaces the prompt, send one of them")]
    PromptTokensExclusive { other: &'static str },
}

impl JobError {
    /// Stable machine-readable code (docs/protocol.md lists them).
    pub fn code(&self) -> &'static str {
        match self {
            JobError::PayloadTooLarge { .. } => "payload_too_large",
            JobError::NotUtf8 { .. } => "not_utf8",
            JobError::InvalidJson { .. } => "invalid_json",
            JobError::TooDeep { .. } => "json_too_deep",
            JobError::NotAnObject { .. } => "not_an_object",
            JobError::MissingId => "missing_id",
            JobError::InvalidId { .. } => "invalid_id",
            JobError::UnknownField { .. } => "unknown_field",
            JobError::MissingField { .. } => "missing_field",
            JobError::WrongType { .. } => "wrong_type",
            JobError::OutOfRange { .. } => "out_of_range",
            JobError::BothPromptAndMessages => "prompt_and_messages",
            JobError::NoPrompt => "no_prompt",
            JobError::PromptTooLarge { .. } => "prompt_too_large",
            JobError::InvalidModelName { .. } => "invalid_model_name",
            JobError::DuplicateId { .. } => "duplicate_id",
            JobError::FieldNotForKind { .. } => "field_not_for_kind",
            JobError::InvalidTextName { .. } => "invalid_text_name",
            JobError::PromptTokensExclusive { .. } => "prompt_tokens_exclusive",
        }
    }

    /// The `{code, message}` pair published with a rejection.
    pub fn to_error_body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code().to_string(),
            message: self.to_string(),
        }
    }
}

/// A payload that did not parse, with the job id when one could be read (rejections
/// with an id go to the job's own topics; without one, to `PREFIX/DEV/errors`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The job's id, when the payload had a valid one.
    pub id: Option<String>,
    /// Why it was refused.
    pub error: JobError,
}
