//! Quality job fields: `kind` ("generate" default, "perplexity", "kld"), `text`,
//! `max_chunks`, `reference`; a quality job carries no prompt and no sampling options.

use serde::Serialize;
use serde_json::{Map, Value};

use super::fields::{get_bool, get_i64, get_str, get_u32, in_range_u32, out_of_range, truncate};
use super::{validate_model_name, Job, JobError, Limits, TraceLevel};
use crate::infer::{GenerateOptions, GenerateRequest, PromptInput};
use crate::quality::{QualityKind, DEFAULT_N_CTX, MIN_N_CTX};

/// Fields only a generation uses (refused on a quality job, so none is ignored).
const GENERATE_ONLY: &[&str] = &[
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
    "threads_batch",
    "batch",
    "repeat",
    "warmup",
    "ignore_eos",
];
/// Fields only a quality job uses.
const QUALITY_ONLY: &[&str] = &["text", "max_chunks", "reference"];

/// The quality part of a job (the text is resolved by the daemon, in its texts_dir).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualitySpec {
    pub kind: QualityKind,
    /// Text name (default `licenses`).
    pub text: String,
    pub reference: Option<String>,
    pub max_chunks: Option<u32>,
    pub n_ctx: u32,
}

/// The job's kind; `None` for a generation.
fn kind(map: &Map<String, Value>) -> Result<Option<QualityKind>, JobError> {
    match get_str(map, "kind")? {
        None | Some("generate") => Ok(None),
        Some("perplexity") => Ok(Some(QualityKind::Perplexity)),
        Some("kld") => Ok(Some(QualityKind::Kld)),
        Some(other) => Err(out_of_range(
            "kind",
            format!("'{}'", truncate(other, 20)),
            "\"generate\", \"perplexity\" or \"kld\"",
        )),
    }
}

/// Parses a quality job; `Ok(None)` when the job is a generation (after checking it
/// carries no quality field).
pub(super) fn parse_quality_job(
    id: &str,
    model: &str,
    map: &Map<String, Value>,
    limits: &Limits,
    defaults: &GenerateOptions,
) -> Result<Option<Job>, JobError> {
    let Some(kind) = kind(map)? else {
        if let Some(f) = QUALITY_ONLY.iter().find(|f| map.contains_key(**f)) {
            return Err(JobError::FieldNotForKind {
                field: f,
                kind: "generate",
            });
        }
        return Ok(None);
    };
    if let Some(f) = GENERATE_ONLY.iter().find(|f| map.contains_key(**f)) {
        return Err(JobError::FieldNotForKind {
            field: f,
            kind: kind.as_str(),
        });
    }
    let text = get_str(map, "text")?.unwrap_or(crate::quality::text::LICENSES);
    crate::infer::registry::validate_name(text).map_err(|e| JobError::InvalidTextName {
        name: truncate(text, 60),
        reason: match e {
            crate::infer::registry::ModelNameError::Invalid { reason, .. } => reason,
            _ => "it is not a plain name",
        },
    })?;
    let reference = get_str(map, "reference")?.map(str::to_string);
    match (&kind, &reference) {
        (QualityKind::Kld, None) => {
            return Err(JobError::MissingField {
                field: "reference",
                hint: "a 'kld' job names the model to compare with",
            })
        }
        (QualityKind::Perplexity, Some(_)) => {
            return Err(JobError::FieldNotForKind {
                field: "reference",
                kind: "perplexity",
            })
        }
        _ => {}
    }
    if let Some(r) = &reference {
        validate_model_name(r)?;
    }
    let max_chunks = match get_u32(map, "max_chunks")? {
        Some(v) => Some(in_range_u32("max_chunks", v, 1, 1_000_000)?),
        None => None,
    };
    let n_ctx = match get_u32(map, "n_ctx")? {
        Some(v) => in_range_u32("n_ctx", v, MIN_N_CTX, limits.max_n_ctx)?,
        None => DEFAULT_N_CTX,
    };
    let mut o = defaults.clone();
    o.n_ctx = n_ctx;
    o.batch = n_ctx;
    o.max_tokens = 1;
    if let Some(v) = get_u32(map, "threads")? {
        o.threads = Some(in_range_u32("threads", v, 1, limits.max_threads)?);
    }
    if let Some(v) = get_u32(map, "n_gpu_layers")? {
        o.n_gpu_layers = in_range_u32("n_gpu_layers", v, 0, 1000)?;
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
        None | Some("none") => TraceLevel::None,
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
    Ok(Some(Job {
        id: id.to_string(),
        request: GenerateRequest {
            model: model.to_string(),
            input: PromptInput::Prompt(String::new()),
            options: o,
            keep_alive_s,
        },
        stream,
        trace,
        quality: Some(QualitySpec {
            kind,
            text: text.to_string(),
            reference,
            max_chunks,
            n_ctx,
        }),
        power_mode: None,
        settle: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::{parse_job, Limits};
    use crate::infer::GenerateOptions;
    use crate::quality::QualityKind;

    fn parse(s: &str) -> Result<super::Job, String> {
        parse_job(
            s.as_bytes(),
            &Limits::default(),
            &GenerateOptions::default(),
        )
        .map_err(|r| r.error.code().to_string())
    }

    #[test]
    fn quality_jobs_parse_with_defaults() {
        let j = parse(r#"{"id":"a","model":"m","kind":"perplexity"}"#).unwrap();
        let q = j.quality.unwrap();
        assert_eq!(q.kind, QualityKind::Perplexity);
        assert_eq!(
            (q.text.as_str(), q.n_ctx, q.max_chunks),
            ("licenses", 512, None)
        );
        assert_eq!(j.request.options.n_ctx, 512);
        let j = parse(
            r#"{"id":"a","model":"m","kind":"kld","reference":"r","text":"wiki","n_ctx":64,"max_chunks":3}"#,
        )
        .unwrap();
        let q = j.quality.unwrap();
        assert_eq!(
            (q.reference.as_deref(), q.n_ctx, q.max_chunks),
            (Some("r"), 64, Some(3))
        );
        assert!(parse(r#"{"id":"a","model":"m","prompt":"x"}"#)
            .unwrap()
            .quality
            .is_none());
    }

    #[test]
    fn bad_quality_fields_get_their_codes() {
        let cases = [
            (r#"{"id":"a","model":"m","kind":"bleu"}"#, "out_of_range"),
            (
                r#"{"id":"a","model":"m","kind":"perplexity","prompt":"x"}"#,
                "field_not_for_kind",
            ),
            (
                r#"{"id":"a","model":"m","kind":"perplexity","max_tokens":4}"#,
                "field_not_for_kind",
            ),
            (
                r#"{"id":"a","model":"m","prompt":"x","text":"t"}"#,
                "field_not_for_kind",
            ),
            (
                r#"{"id":"a","model":"m","kind":"perplexity","reference":"r"}"#,
                "field_not_for_kind",
            ),
            (r#"{"id":"a","model":"m","kind":"kld"}"#, "missing_field"),
            (
                r#"{"id":"a","model":"m","kind":"perplexity","text":"../etc/passwd"}"#,
                "invalid_text_name",
            ),
            (
                r#"{"id":"a","model":"m","kind":"kld","reference":"a/b"}"#,
                "invalid_model_name",
            ),
            (
                r#"{"id":"a","model":"m","kind":"perplexity","n_ctx":8}"#,
                "out_of_range",
            ),
            (
                r#"{"id":"a","model":"m","kind":"perplexity","max_chunks":0}"#,
                "out_of_range",
            ),
            (
                r#"{"id":"a","model":"m","kind":"perplexity","text":5}"#,
                "wrong_type",
            ),
        ];
        for (payload, code) in cases {
            assert_eq!(parse(payload).unwrap_err(), code, "{payload}");
        }
    }
}
