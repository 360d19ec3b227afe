//! Parsing the fields of a job object: types, ranges, the prompt or messages.

use serde_json::{Map, Value};

use super::{
    validate_model_name, Job, JobError, Limits, TraceLevel, JOB_FIELDS, MAX_MESSAGES,
    MAX_STOP_BYTES, MAX_STOP_STRINGS,
};
use crate::infer::{ChatMessage, GenerateOptions, GenerateRequest, PromptInput};

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars).collect();
        t.push('…');
        t
    }
}

/// A short rendering of a value for messages (`got 'abc'`).
pub(super) fn show(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("'{}'", truncate(s, 40)),
        other => truncate(&other.to_string(), 40),
    };
    format!("{} {s}", type_name(v))
}

pub(super) fn wrong(field: &str, expected: &'static str, v: &Value) -> JobError {
    JobError::WrongType {
        field: field.to_string(),
        expected,
        got: show(v),
    }
}

pub(super) fn out_of_range(field: &str, value: impl ToString, allowed: impl ToString) -> JobError {
    JobError::OutOfRange {
        field: field.to_string(),
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
}

pub(super) fn get_u32(map: &Map<String, Value>, field: &str) -> Result<Option<u32>, JobError> {
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

pub(super) fn get_i64(map: &Map<String, Value>, field: &str) -> Result<Option<i64>, JobError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Some(i)),
            None => Err(wrong(field, "an integer", v)),
        },
        Some(v) => Err(wrong(field, "an integer", v)),
    }
}

pub(super) fn get_f32(map: &Map<String, Value>, field: &str) -> Result<Option<f32>, JobError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() && f.abs() < 1e30 => Ok(Some(f as f32)),
            _ => Err(wrong(field, "a finite number", v)),
        },
        Some(v) => Err(wrong(field, "a number", v)),
    }
}

pub(super) fn get_bool(map: &Map<String, Value>, field: &str) -> Result<Option<bool>, JobError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(wrong(field, "true or false", v)),
    }
}

pub(super) fn get_str<'a>(
    map: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, JobError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(wrong(field, "a string", v)),
    }
}

pub(super) fn in_range_u32(field: &str, v: u32, lo: u32, hi: u32) -> Result<u32, JobError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(out_of_range(field, v, format!("{lo}..={hi}")))
    }
}

pub(super) fn in_range_f32(
    field: &str,
    v: f32,
    lo: f32,
    hi: f32,
    lo_open: bool,
) -> Result<f32, JobError> {
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

pub(super) fn parse_fields(
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
    let power_mode = parse_power_mode(map)?;
    let settle = super::settle::parse_settle(map)?;
    if let Some(mut job) = super::quality::parse_quality_job(id, &model, map, limits, defaults)? {
        job.power_mode = power_mode;
        job.settle = settle;
        return Ok(job);
    }

    // prompt / messages (or the synthetic `prompt_tokens`, checked below with n_ctx)
    let synthetic = get_u32(map, "prompt_tokens")?;
    if synthetic.is_some() {
        for other in ["prompt", "messages"] {
            if map.get(other).is_some_and(|v| !v.is_null()) {
                return Err(JobError::PromptTokensExclusive { other });
            }
        }
    }
    let input = match (map.get("prompt"), map.get("messages")) {
        _ if synthetic.is_some() => PromptInput::PromptTokens(0),
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
    if let Some(v) = get_u32(map, "depth")? {
        o.depth = in_range_u32("depth", v, 0, ctx_cap - 1)?;
    }
    let input = match synthetic {
        Some(n) => PromptInput::PromptTokens(in_range_u32(
            "prompt_tokens",
            n,
            1,
            ctx_cap.saturating_sub(o.depth + 1).max(1),
        )?),
        None => input,
    };
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
        quality: None,
        power_mode,
        settle,
    })
}

/// `power_mode`: a mode name (1-64 characters of `[A-Za-z0-9._-]`).
fn parse_power_mode(map: &Map<String, Value>) -> Result<Option<String>, JobError> {
    let Some(name) = get_str(map, "power_mode")? else {
        return Ok(None);
    };
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(out_of_range(
            "power_mode",
            format!("'{}'", truncate(name, 40)),
            "the name of a [power_modes.NAME] of the board (1-64 characters of A-Z a-z 0-9 . _ -)",
        ));
    }
    Ok(Some(name.to_string()))
}

pub(super) fn check_stop(i: usize, s: &str) -> Result<String, JobError> {
    if s.is_empty() || s.len() > MAX_STOP_BYTES {
        return Err(out_of_range(
            &format!("stop[{i}]"),
            format!("{} bytes", s.len()),
            format!("1..={MAX_STOP_BYTES} bytes"),
        ));
    }
    Ok(s.to_string())
}

pub(super) fn parse_messages(
    items: &[Value],
    limits: &Limits,
) -> Result<Vec<ChatMessage>, JobError> {
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
