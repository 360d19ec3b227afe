//! The wire protocol (docs/protocol.md): topics, the job payload and its validation,
//! and the status/result/error messages the daemon publishes.
//!
//! Parsing is deliberately hand-rolled over `serde_json::Value` instead of a derived
//! `Deserialize`: every rejection must carry a stable `code` and a message that names
//! the offending field, and the nesting depth must be checked *before* serde sees the
//! payload (serde_json's own recursion limit is 128, far above what a job needs).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::infer::{ChatMessage, GenerateOptions, GenerateRequest, PromptInput};

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
}

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

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars).collect();
        t.push('…');
        t
    }
}

/// A short rendering of a value for messages (`got 'abc'`).
fn show(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("'{}'", truncate(s, 40)),
        other => truncate(&other.to_string(), 40),
    };
    format!("{} {s}", type_name(v))
}

fn wrong(field: &str, expected: &'static str, v: &Value) -> JobError {
    JobError::WrongType {
        field: field.to_string(),
        expected,
        got: show(v),
    }
}

fn out_of_range(field: &str, value: impl ToString, allowed: impl ToString) -> JobError {
    JobError::OutOfRange {
        field: field.to_string(),
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
}

fn get_u32(map: &Map<String, Value>, field: &str) -> Result<Option<u32>, JobError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                u32::try_from(u)
                    .map(Some)
                    .map_err(|_| out_of_range(field, u, format!("0..={}", u32::MAX)))
            } else if n.as_i64().is_some() {
                Err(out_of_range(field, n, "a non-negative integer"))
            } else {
                Err(wrong(field, "an integer", v))
            }
        }
        Some(v) => Err(wrong(field, "an integer", v)),
    }
}

fn get_i64(map: &Map<String, Value>, field: &str) -> Result<Option<i64>, JobError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Some(i)),
            None => Err(wrong(field, "an integer", v)),
        },
        Some(v) => Err(wrong(field, "an integer", v)),
    }
}

fn get_f32(map: &Map<String, Value>, field: &str) -> Result<Option<f32>, JobError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() && f.abs() < 1e30 => Ok(Some(f as f32)),
            _ => Err(wrong(field, "a finite number", v)),
        },
        Some(v) => Err(wrong(field, "a number", v)),
    }
}

fn get_bool(map: &Map<String, Value>, field: &str) -> Result<Option<bool>, JobError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(wrong(field, "true or false", v)),
    }
}

fn get_str<'a>(map: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, JobError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(wrong(field, "a string", v)),
    }
}

fn in_range_u32(field: &str, v: u32, lo: u32, hi: u32) -> Result<u32, JobError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(out_of_range(field, v, format!("{lo}..={hi}")))
    }
}

fn in_range_f32(field: &str, v: f32, lo: f32, hi: f32, lo_open: bool) -> Result<f32, JobError> {
    let ok = if lo_open { v > lo } else { v >= lo } && v <= hi;
    if ok {
        Ok(v)
    } else {
        let allowed = if lo_open {
            format!("{lo} < x <= {hi}")
        } else {
            format!("{lo}..={hi}")
        };
        Err(out_of_range(field, v, allowed))
    }
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

fn parse_fields(
    id: &str,
    map: &Map<String, Value>,
    limits: &Limits,
    defaults: &GenerateOptions,
) -> Result<Job, JobError> {
    let _ = id;
    if let Some(field) = map.keys().find(|k| !JOB_FIELDS.contains(&k.as_str())) {
        return Err(JobError::UnknownField {
            field: truncate(field, 60),
        });
    }

    // model
    let model = match map.get("model") {
        None | Some(Value::Null) => {
            return Err(JobError::MissingField {
                field: "model",
                hint: "name a model (the file stem of a .gguf in the model directory)",
            })
        }
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Err(wrong("model", "a string", v)),
    };
    validate_model_name(&model)?;

    // prompt / messages
    let input = match (map.get("prompt"), map.get("messages")) {
        (Some(p), Some(m)) if !p.is_null() && !m.is_null() => {
            return Err(JobError::BothPromptAndMessages)
        }
        (Some(Value::String(p)), _) => {
            if p.len() > limits.max_prompt_bytes {
                return Err(JobError::PromptTooLarge {
                    field: "prompt",
                    size: p.len(),
                    limit: limits.max_prompt_bytes,
                });
            }
            if p.is_empty() {
                return Err(out_of_range("prompt", "''", "a non-empty string"));
            }
            PromptInput::Prompt(p.clone())
        }
        (Some(v), _) if !v.is_null() => return Err(wrong("prompt", "a string", v)),
        (_, Some(Value::Array(items))) => PromptInput::Messages(parse_messages(items, limits)?),
        (_, Some(v)) if !v.is_null() => {
            return Err(wrong("messages", "an array of {role, content}", v))
        }
        _ => return Err(JobError::NoPrompt),
    };

    let mut o = defaults.clone();
    if let Some(v) = get_u32(map, "n_ctx")? {
        if v != 0 {
            in_range_u32("n_ctx", v, 16, limits.max_n_ctx)?;
        }
        o.n_ctx = v;
    }
    let ctx_cap = if o.n_ctx == 0 {
        limits.max_n_ctx
    } else {
        o.n_ctx
    };
    if let Some(v) = get_u32(map, "max_tokens")? {
        o.max_tokens = in_range_u32("max_tokens", v, 1, ctx_cap)?;
    } else if o.max_tokens > ctx_cap {
        return Err(out_of_range(
            "max_tokens",
            format!("{} (the default)", o.max_tokens),
            format!("1..={ctx_cap} (n_ctx)"),
        ));
    }
    if let Some(v) = get_f32(map, "temperature")? {
        o.temperature = in_range_f32("temperature", v, 0.0, 5.0, false)?;
    }
    if let Some(v) = get_u32(map, "top_k")? {
        o.top_k = in_range_u32("top_k", v, 0, 100_000)?;
    }
    if let Some(v) = get_f32(map, "top_p")? {
        o.top_p = in_range_f32("top_p", v, 0.0, 1.0, true)?;
    }
    if let Some(v) = get_f32(map, "min_p")? {
        o.min_p = in_range_f32("min_p", v, 0.0, 1.0, false)?;
    }
    if let Some(v) = get_f32(map, "repeat_penalty")? {
        o.repeat_penalty = in_range_f32("repeat_penalty", v, 0.0, 10.0, true)?;
    }
    if let Some(v) = get_u32(map, "seed")? {
        o.seed = Some(v);
    }
    match map.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => o.stop = vec![check_stop(0, s)?],
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP_STRINGS {
                return Err(out_of_range(
                    "stop",
                    format!("{} strings", items.len()),
                    format!("at most {MAX_STOP_STRINGS} strings"),
                ));
            }
            let mut stop = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => stop.push(check_stop(i, s)?),
                    v => return Err(wrong(&format!("stop[{i}]"), "a string", v)),
                }
            }
            o.stop = stop;
        }
        Some(v) => return Err(wrong("stop", "a string or an array of strings", v)),
    }
    if let Some(v) = get_u32(map, "threads")? {
        o.threads = Some(in_range_u32("threads", v, 1, limits.max_threads)?);
    }
    if let Some(v) = get_u32(map, "threads_batch")? {
        o.threads_batch = Some(in_range_u32("threads_batch", v, 1, limits.max_threads)?);
    }
    if let Some(v) = get_u32(map, "batch")? {
        o.batch = in_range_u32("batch", v, 1, 8192)?;
    }
    if let Some(v) = get_u32(map, "n_gpu_layers")? {
        o.n_gpu_layers = in_range_u32("n_gpu_layers", v, 0, 1000)?;
    }
    if let Some(v) = get_u32(map, "repeat")? {
        o.repeat = in_range_u32("repeat", v, 1, 100)?;
    }
    if let Some(v) = get_u32(map, "warmup")? {
        o.warmup = in_range_u32("warmup", v, 0, 100)?;
    }
    if let Some(v) = get_bool(map, "ignore_eos")? {
        o.ignore_eos = v;
    }
    let keep_alive_s = match get_i64(map, "keep_alive_s")? {
        Some(v) if v > 31_536_000 => {
            return Err(out_of_range(
                "keep_alive_s",
                v,
                "at most 31536000 (negative = keep loaded)",
            ))
        }
        Some(v) if v < 0 => Some(-1),
        other => other,
    };
    let stream = get_bool(map, "stream")?;
    let trace = match get_str(map, "trace")? {
        None => TraceLevel::None,
        Some("none") => TraceLevel::None,
        Some("summary") => TraceLevel::Summary,
        Some("full") => TraceLevel::Full,
        Some(other) => {
            return Err(out_of_range(
                "trace",
                format!("'{}'", truncate(other, 20)),
                "\"none\", \"summary\" or \"full\"",
            ))
        }
    };

    Ok(Job {
        id: id.to_string(),
        request: GenerateRequest {
            model,
            input,
            options: o,
            keep_alive_s,
        },
        stream,
        trace,
    })
}

fn check_stop(i: usize, s: &str) -> Result<String, JobError> {
    if s.is_empty() || s.len() > MAX_STOP_BYTES {
        return Err(out_of_range(
            &format!("stop[{i}]"),
            format!("{} bytes", s.len()),
            format!("1..={MAX_STOP_BYTES} bytes"),
        ));
    }
    Ok(s.to_string())
}

fn parse_messages(items: &[Value], limits: &Limits) -> Result<Vec<ChatMessage>, JobError> {
    if items.is_empty() || items.len() > MAX_MESSAGES {
        return Err(out_of_range(
            "messages",
            format!("{} messages", items.len()),
            format!("1..={MAX_MESSAGES} messages"),
        ));
    }
    let mut total = 0usize;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(wrong(
                &format!("messages[{i}]"),
                "an object {role, content}",
                item,
            ));
        };
        if let Some(k) = m.keys().find(|k| *k != "role" && *k != "content") {
            return Err(JobError::UnknownField {
                field: format!("messages[{i}].{}", truncate(k, 40)),
            });
        }
        let role = match m.get("role") {
            Some(Value::String(r)) if matches!(r.as_str(), "system" | "user" | "assistant") => {
                r.clone()
            }
            Some(Value::String(r)) => {
                return Err(out_of_range(
                    &format!("messages[{i}].role"),
                    format!("'{}'", truncate(r, 20)),
                    "\"system\", \"user\" or \"assistant\"",
                ))
            }
            Some(v) => return Err(wrong(&format!("messages[{i}].role"), "a string", v)),
            None => {
                return Err(JobError::MissingField {
                    field: "messages[].role",
                    hint: "each message needs a role: system, user or assistant",
                })
            }
        };
        let content = match m.get("content") {
            Some(Value::String(c)) => c.clone(),
            Some(v) => return Err(wrong(&format!("messages[{i}].content"), "a string", v)),
            None => {
                return Err(JobError::MissingField {
                    field: "messages[].content",
                    hint: "each message needs a content string",
                })
            }
        };
        total += content.len();
        out.push(ChatMessage { role, content });
    }
    if total > limits.max_prompt_bytes {
        return Err(JobError::PromptTooLarge {
            field: "messages",
            size: total,
            limit: limits.max_prompt_bytes,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// Outgoing messages
// ---------------------------------------------------------------------------------

/// `{code, message}` carried by every error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Journaled and queued.
    Accepted,
    /// On the engine (a `phase` says where).
    Running,
    /// Finished with a result.
    Succeeded,
    /// Ran and failed (engine error, crash).
    Failed,
    /// Refused before running (bad input, unknown model, admission).
    Rejected,
    /// Canceled while queued or running.
    Canceled,
}

impl JobState {
    /// The protocol's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Accepted => "accepted",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Rejected => "rejected",
            JobState::Canceled => "canceled",
        }
    }

    /// Parses the protocol's spelling.
    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "accepted" => JobState::Accepted,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "rejected" => JobState::Rejected,
            "canceled" => JobState::Canceled,
            _ => return None,
        })
    }

    /// True for states after which nothing more happens to the job.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Rejected | JobState::Canceled
        )
    }
}

/// One message on `PREFIX/DEV/job/ID/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusMsg {
    /// The job.
    pub id: String,
    /// The board that has it.
    pub device: String,
    /// New state.
    pub state: JobState,
    /// Wall-clock time of the transition, ns since the epoch.
    pub at_unix_ns: u64,
    /// While running: `load`, `prefill` or `decode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// When accepted: jobs ahead of this one (0 = next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
    /// For failed / rejected / canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// One message on `PREFIX/DEV/job/ID/tokens` (QoS 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenMsg {
    /// The job.
    pub id: String,
    /// 0-based index of the first piece in this message.
    pub index: u32,
    /// The text of one or more consecutive tokens.
    pub text: String,
}

/// The retained message on `PREFIX/DEV/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// The board.
    pub device: String,
    /// `online`, `draining` or `offline`.
    pub state: String,
    /// edgewatt's version.
    pub version: String,
    /// Wall-clock time of this status, ns since the epoch.
    pub at_unix_ns: u64,
    /// Model names available.
    #[serde(default)]
    pub models: Vec<String>,
    /// Power rails measured.
    #[serde(default)]
    pub rails: Vec<String>,
    /// True when the power readings are simulated.
    #[serde(default)]
    pub simulated: bool,
    /// Jobs waiting (not counting the running one).
    #[serde(default)]
    pub queue_length: usize,
    /// The running job, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
}

/// A rejection of a payload with no usable id (`PREFIX/DEV/errors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayloadError {
    /// The board that refused it.
    pub device: String,
    /// Always `rejected`.
    pub state: JobState,
    /// Wall-clock time, ns since the epoch.
    pub at_unix_ns: u64,
    /// The topic the payload came in on.
    pub topic: String,
    /// Why.
    pub error: ErrorBody,
}

/// Topic names for one board (docs/protocol.md, "Topics").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Topic prefix, default `edgewatt`.
    pub prefix: String,
    /// This board's id.
    pub device: String,
}

impl Topics {
    /// Topics for `device` under `prefix`.
    pub fn new(prefix: impl Into<String>, device: impl Into<String>) -> Self {
        Topics {
            prefix: prefix.into(),
            device: device.into(),
        }
    }
    /// `PREFIX/jobs`: the fleet queue.
    pub fn fleet_jobs(&self) -> String {
        format!("{}/jobs", self.prefix)
    }
    /// `$share/GROUP/PREFIX/jobs`: what a fleet member subscribes to.
    pub fn fleet_share(&self, group: &str) -> String {
        format!("$share/{group}/{}/jobs", self.prefix)
    }
    /// `PREFIX/DEV/jobs`: jobs for this board only.
    pub fn device_jobs(&self) -> String {
        format!("{}/{}/jobs", self.prefix, self.device)
    }
    /// `PREFIX/DEV/job/+/cancel`: the cancel filter.
    pub fn cancel_filter(&self) -> String {
        format!("{}/{}/job/+/cancel", self.prefix, self.device)
    }
    /// `PREFIX/DEV/job/ID/<leaf>`.
    pub fn job(&self, id: &str, leaf: &str) -> String {
        format!("{}/{}/job/{id}/{leaf}", self.prefix, self.device)
    }
    /// `PREFIX/DEV/status` (retained).
    pub fn status(&self) -> String {
        format!("{}/{}/status", self.prefix, self.device)
    }
    /// `PREFIX/DEV/power`.
    pub fn power(&self) -> String {
        format!("{}/{}/power", self.prefix, self.device)
    }
    /// `PREFIX/DEV/errors`.
    pub fn errors(&self) -> String {
        format!("{}/{}/errors", self.prefix, self.device)
    }
    /// If `topic` is `PREFIX/DEV/job/ID/cancel`, the ID.
    pub fn cancel_id<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?
            .strip_prefix(self.device.as_str())?
            .strip_prefix("/job/")?;
        let id = rest.strip_suffix("/cancel")?;
        (!id.contains('/')).then_some(id)
    }
}

/// True when `name` is usable as one MQTT topic level (device ids, prefixes, groups).
pub fn valid_topic_level(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.contains(['/', '+', '#', '\0'])
        && !name.starts_with('$')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<Job, Rejected> {
        parse_job(
            s.as_bytes(),
            &Limits::default(),
            &GenerateOptions::default(),
        )
    }

    fn code(s: &str) -> &'static str {
        parse(s).unwrap_err().error.code()
    }

    #[test]
    fn a_full_job_parses() {
        let j = parse(
            r#"{"id":"j-1","model":"m","prompt":"hi","max_tokens":8,"temperature":0.5,
                "stop":["\n"],"seed":3,"threads":1,"stream":true,"trace":"full","n_ctx":256}"#,
        )
        .unwrap();
        assert_eq!(j.id, "j-1");
        assert_eq!(j.request.options.max_tokens, 8);
        assert_eq!(j.request.options.stop, vec!["\n".to_string()]);
        assert_eq!(j.request.options.n_ctx, 256);
        assert_eq!(j.stream, Some(true));
        assert_eq!(j.trace, TraceLevel::Full);
        let j =
            parse(r#"{"id":"a","model":"m","messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert!(matches!(j.request.input, PromptInput::Messages(ref m) if m.len() == 1));
    }

    #[test]
    fn each_bad_input_has_its_code_and_names_the_field() {
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(
            parse_job(b"\xff\xfe", &Limits::default(), &GenerateOptions::default())
                .unwrap_err()
                .error
                .code(),
            "not_utf8"
        );
        assert_eq!(code("[1]"), "not_an_object");
        assert_eq!(code(r#"{"model":"m"}"#), "missing_id");
        assert_eq!(code(r#"{"id":"a b","model":"m"}"#), "invalid_id");
        assert_eq!(code(r#"{"id":7}"#), "invalid_id");
        let e = parse(r#"{"id":"a","model":"m","prompt":"x","temprature":1}"#).unwrap_err();
        assert_eq!(e.error.code(), "unknown_field");
        assert_eq!(e.id.as_deref(), Some("a"));
        assert!(e.error.to_string().contains("'temprature'"));
        let e = parse(r#"{"id":"a","model":"m","prompt":"x","max_tokens":"8"}"#).unwrap_err();
        assert_eq!(e.error.code(), "wrong_type");
        assert!(e.error.to_string().contains("'max_tokens'"), "{}", e.error);
        let e = parse(r#"{"id":"a","model":"m","prompt":"x","max_tokens":0}"#).unwrap_err();
        assert_eq!(e.error.code(), "out_of_range");
        assert!(e.error.to_string().contains("'max_tokens'"));
        assert_eq!(
            code(r#"{"id":"a","model":"m","prompt":"x","max_tokens":300,"n_ctx":256}"#),
            "out_of_range"
        );
        assert_eq!(
            code(r#"{"id":"a","model":"m","prompt":"x","temperature":5.5}"#),
            "out_of_range"
        );
        assert_eq!(
            code(r#"{"id":"a","model":"m","prompt":"x","threads":100000}"#),
            "out_of_range"
        );
        assert_eq!(
            code(r#"{"id":"a","model":"m","prompt":"x","threads":0}"#),
            "out_of_range"
        );
        assert_eq!(
            code(r#"{"id":"a","model":"m","prompt":"x","messages":[]}"#),
            "prompt_and_messages"
        );
        assert_eq!(code(r#"{"id":"a","model":"m"}"#), "no_prompt");
        assert_eq!(
            code(r#"{"id":"a","model":"../etc/passwd","prompt":"x"}"#),
            "invalid_model_name"
        );
        assert_eq!(
            code(r#"{"id":"a","model":"a/b","prompt":"x"}"#),
            "invalid_model_name"
        );
        assert_eq!(code(r#"{"id":"a","prompt":"x"}"#), "missing_field");
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(code(&deep), "json_too_deep");
        let limits = Limits {
            max_prompt_bytes: 4,
            ..Limits::default()
        };
        let e = parse_job(
            br#"{"id":"a","model":"m","prompt":"hello"}"#,
            &limits,
            &GenerateOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.error.code(), "prompt_too_large");
        let limits = Limits {
            max_payload_bytes: 10,
            ..Limits::default()
        };
        let e = parse_job(
            br#"{"id":"a","model":"m","prompt":"hello"}"#,
            &limits,
            &GenerateOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.error.code(), "payload_too_large");
    }

    #[test]
    fn depth_scan_ignores_brackets_in_strings() {
        let s = format!(r#"{{"id":"a","model":"m","prompt":"{}"}}"#, "[".repeat(200));
        assert!(parse(&s).is_ok());
        let s = r#"{"id":"a","model":"m","prompt":"\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#;
        assert!(parse(s).is_ok());
    }

    #[test]
    fn topics() {
        let t = Topics::new("edgewatt", "pi5");
        assert_eq!(t.job("x", "status"), "edgewatt/pi5/job/x/status");
        assert_eq!(t.cancel_id("edgewatt/pi5/job/x/cancel"), Some("x"));
        assert_eq!(t.cancel_id("edgewatt/pi5/job/x/status"), None);
        assert_eq!(t.fleet_share("g"), "$share/g/edgewatt/jobs");
        assert!(valid_topic_level("pi5"));
        assert!(!valid_topic_level("a/b"));
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            prop::sample::select(JOB_FIELDS.to_vec()).prop_map(String::from),
                            "[a-z_]{1,8}"
                        ],
                        inner
                    ),
                    0..8
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Cases for the default (quick) run.
    const QUICK_CASES: u32 = 2_000;

    /// Cases for the long run (`make fuzz`: `--ignored`, EDGEWATT_FUZZ_CASES, default 10^6).
    fn long_cases() -> u32 {
        std::env::var("EDGEWATT_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    }

    fn check_bytes(bytes: &[u8]) {
        let _ = parse_job(bytes, &Limits::default(), &GenerateOptions::default());
        let _ = peek_id(bytes);
    }

    fn check_json(v: Value, with_id: bool) -> Result<(), TestCaseError> {
        let mut v = v;
        if with_id {
            if let Value::Object(m) = &mut v {
                m.insert("id".into(), Value::from("fuzz-1"));
            }
        }
        let bytes = serde_json::to_vec(&v).unwrap();
        match parse_job(&bytes, &Limits::default(), &GenerateOptions::default()) {
            Ok(job) => prop_assert!(job.request.options.max_tokens >= 1),
            Err(r) => prop_assert!(!r.error.code().is_empty() && !r.error.to_string().is_empty()),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: QUICK_CASES, failure_persistence: None, ..ProptestConfig::default() })]

        /// Arbitrary bytes never panic the parser.
        #[test]
        fn parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            check_bytes(&bytes);
        }

        /// Structured JSON aimed at the job fields never panics, and errors carry codes.
        #[test]
        fn parser_never_panics_on_json(v in json_value(), with_id in any::<bool>()) {
            check_json(v, with_id)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: long_cases(), failure_persistence: None, ..ProptestConfig::default() })]

        /// The long run over bytes (`make fuzz`).
        #[test]
        #[ignore = "long: 10^6 cases; run with `make fuzz`"]
        fn fuzz_parser_bytes_long(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            check_bytes(&bytes);
        }

        /// The long run over structured JSON (`make fuzz`).
        #[test]
        #[ignore = "long: 10^6 cases; run with `make fuzz`"]
        fn fuzz_parser_json_long(v in json_value(), with_id in any::<bool>()) {
            check_json(v, with_id)?;
        }
    }
}
