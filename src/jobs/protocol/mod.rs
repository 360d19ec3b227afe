//! The wire protocol (docs/protocol.md): topics, the job payload and its validation,
//! and the status/result/error messages the daemon publishes.
//!
//! Parsing is deliberately hand-rolled over `serde_json::Value` instead of a derived
//! `Deserialize`: every rejection must carry a stable `code` and a message that names
//! the offending field, and the nesting depth must be checked *before* serde sees the
//! payload (serde_json's own recursion limit is 128, far above what a job needs).

//!
//! # Layout
//! - `mod.rs`      — limits, the validated [`Job`], [`parse_job`] and the id/model-name checks
//! - `error.rs`    — [`JobError`] (one stable `code` per variant) and [`Rejected`]
//! - `fields.rs`   — the per-field parsing of a job object (ranges, types, messages)
//! - `quality.rs`  — quality job fields (`kind`, `text`, `max_chunks`, `reference`)
//! - `settle.rs`   — the `settle` field (the board's cooldown gate before the run)
//! - `messages.rs` — what the daemon publishes: states, status/token/board messages, topics

mod error;
mod fields;
mod messages;
mod quality;
mod settle;
#[cfg(test)]
mod tests;

pub use error::{JobError, Rejected};
pub use messages::{
    valid_topic_level, BoardLimits, DeviceStatus, ErrorBody, JobState, PayloadError, StatusMsg,
    TokenMsg, Topics,
};
pub use quality::QualitySpec;
pub use settle::{SettleSpec, SETTLE_FIELDS};

use fields::{parse_fields, truncate, type_name};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::infer::{GenerateOptions, GenerateRequest};

/// Longest job id accepted, in bytes (ids are ASCII).
pub const MAX_ID_LEN: usize = 128;
/// Most `stop` strings per job.
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest `stop` string, bytes.
pub const MAX_STOP_BYTES: usize = 256;
/// Most chat messages per job.
pub const MAX_MESSAGES: usize = 256;
/// Longest model name, bytes.
pub const MAX_MODEL_NAME: usize = 255;

/// The fields a job may carry. Anything else is rejected by name (`unknown_field`).
pub const JOB_FIELDS: &[&str] = &[
    "id",
    "model",
    "prompt",
    "messages",
    "max_tokens",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "seed",
    "stop",
    "n_ctx",
    "threads",
    "threads_batch",
    "batch",
    "n_gpu_layers",
    "repeat",
    "warmup",
    "ignore_eos",
    "keep_alive_s",
    "stream",
    "trace",
    "kind",
    "text",
    "max_chunks",
    "reference",
    "prompt_tokens",
    "depth",
    "power_mode",
    "settle",
];

/// Limits applied while parsing a job (from the config's `limits` section).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest payload accepted, bytes.
    pub max_payload_bytes: usize,
    /// Largest prompt (or sum of message contents), bytes.
    pub max_prompt_bytes: usize,
    /// Deepest JSON nesting accepted (objects + arrays).
    pub max_json_depth: usize,
    /// Upper bound for `threads` / `threads_batch`: the CPU count.
    pub max_threads: u32,
    /// Upper bound for `n_ctx` (and `max_tokens` when `n_ctx` is 0 = the model's own).
    pub max_n_ctx: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 256 * 1024,
            max_prompt_bytes: 64 * 1024,
            max_json_depth: 16,
            max_threads: cpu_count(),
            max_n_ctx: 131_072,
        }
    }
}

/// CPUs this process may use (the `threads` upper bound).
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// How much of the energy trace a job wants published on its `trace` topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceLevel {
    /// Nothing on the trace topic (the result still carries the energy summary).
    #[default]
    None,
    /// Markers and per-phase figures, no samples.
    Summary,
    /// Everything: samples, markers, clock anchor, sampler stats.
    Full,
}

/// A validated job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Caller-chosen id, `[A-Za-z0-9._-]{1,128}`.
    pub id: String,
    /// What to run.
    pub request: GenerateRequest,
    /// Publish text pieces on the `tokens` topic while generating; `None` = the
    /// daemon's default (`mqtt.stream_default`).
    pub stream: Option<bool>,
    /// What to publish on the `trace` topic.
    pub trace: TraceLevel,
    /// Set for quality jobs (`kind` perplexity / kld); `request` then only carries
    /// the model, `n_ctx`, threads and keep-alive.
    pub quality: Option<QualitySpec>,
    /// The `[power_modes.NAME]` to run under (issue 13); `None` = as the board is.
    /// Whether the board has it is the daemon's check (`unknown_power_mode`).
    pub power_mode: Option<String>,
    /// The `settle` gate to wait for before the run (`None`: start at once).
    pub settle: Option<SettleSpec>,
}

/// Parses and validates one job payload. Never panics, whatever the bytes
/// (`tests` runs a proptest; `make fuzz` runs 10⁶ cases).
pub fn parse_job(
    payload: &[u8],
    limits: &Limits,
    defaults: &GenerateOptions,
) -> Result<Job, Rejected> {
    let no_id = |error| Rejected { id: None, error };
    if payload.len() > limits.max_payload_bytes {
        return Err(no_id(JobError::PayloadTooLarge {
            size: payload.len(),
            limit: limits.max_payload_bytes,
        }));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        no_id(JobError::NotUtf8 {
            offset: e.valid_up_to(),
        })
    })?;
    check_depth(text.as_bytes(), limits.max_json_depth).map_err(no_id)?;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        no_id(JobError::InvalidJson {
            reason: e.to_string(),
        })
    })?;
    let Value::Object(map) = value else {
        return Err(no_id(JobError::NotAnObject {
            got: type_name(&value),
        }));
    };
    let id = parse_id(&map).map_err(no_id)?;
    parse_fields(&id, &map, limits, defaults).map_err(|error| Rejected {
        id: Some(id.clone()),
        error,
    })
}

/// Reads just the id of a payload, if it has a valid one (used to route rejections).
pub fn peek_id(payload: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(payload).ok()?;
    check_depth(text.as_bytes(), 64).ok()?;
    let Value::Object(map) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    parse_id(&map).ok()
}

/// Checks that an id is 1–128 characters of `[A-Za-z0-9._-]`.
pub fn validate_id(id: &str) -> Result<(), JobError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(JobError::InvalidId {
            reason: format!(
                "'{}' is {} characters; expected 1-{MAX_ID_LEN}",
                truncate(id, 40),
                id.chars().count()
            ),
        });
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(JobError::InvalidId {
            reason: format!(
                "'{}' contains {c:?}; allowed are A-Z a-z 0-9 . _ -",
                truncate(id, 40)
            ),
        });
    }
    Ok(())
}

fn parse_id(map: &Map<String, Value>) -> Result<String, JobError> {
    match map.get("id") {
        None | Some(Value::Null) => Err(JobError::MissingId),
        Some(Value::String(s)) => {
            validate_id(s)?;
            Ok(s.clone())
        }
        Some(other) => Err(JobError::InvalidId {
            reason: format!("must be a string, got {}", type_name(other)),
        }),
    }
}

/// Rejects nesting deeper than `limit` without building anything: a byte scan that
/// tracks strings and escapes. Runs before serde so a 1 MB `[[[[…` cannot recurse.
fn check_depth(bytes: &[u8], limit: usize) -> Result<(), JobError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(JobError::TooDeep { limit });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a model name the way the engine will resolve it: a bare file stem, no path.
/// (Existence is the engine's check, `Engine::resolve_model`.)
pub fn validate_model_name(name: &str) -> Result<(), JobError> {
    let bad = |reason| {
        Err(JobError::InvalidModelName {
            name: truncate(name, 60),
            reason,
        })
    };
    if name.is_empty() {
        return bad("is empty; give the file stem of a .gguf in the model directory");
    }
    if name.len() > MAX_MODEL_NAME {
        return bad("is longer than 255 bytes");
    }
    if name.contains('/') || name.contains('\\') {
        return bad(
            "contains a path separator; give the file stem of a .gguf in the model directory",
        );
    }
    if name == "." || name == ".." || name.contains("..") {
        return bad("contains '..'; give the file stem of a .gguf in the model directory");
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("contains a control character");
    }
    Ok(())
}
