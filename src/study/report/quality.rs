//! The plan's quality runs in the report: each board × model's score (perplexity, and
//! KL divergence against a reference), joined onto every configuration row of that
//! board × model, and the requantization mark (`model.requantized_from`) of each row.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::metrics::num;
use super::RunError;
use crate::study::config::{ConfigHash, StoredRun};

/// One quality run of the study, as the report gives it (`quality` in the JSON, and
/// on each configuration row of its board × model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityScore {
    pub device: String,
    pub model: String,
    /// The quality run's configuration hash and job id.
    pub config_hash: ConfigHash,
    pub job_id: String,
    /// `perplexity` or `kld`.
    pub kind: String,
    /// Text name, n_ctx, chunk limit and reference as the plan asked.
    pub text: String,
    pub n_ctx: u32,
    pub max_chunks: Option<u32>,
    pub reference: Option<String>,
    /// `model.quant` and `model.requantized_from` of the scored model.
    pub quant: Option<String>,
    pub requantized_from: Option<String>,
    /// Perplexity ± its standard error, mean KL divergence ± its standard error
    /// (`null` when the run failed; KLD only for `kld`).
    pub ppl: Option<f64>,
    pub ppl_stderr: Option<f64>,
    pub kld_mean: Option<f64>,
    pub kld_stderr: Option<f64>,
    /// The result's whole `quality` object (docs/quality.md), `null` when it failed.
    pub result: Option<Value>,
    /// Why it failed, when it did.
    pub error: Option<RunError>,
}

/// `model.requantized_from` of a result.
pub fn requantized_from(result: &Value) -> Option<String> {
    result
        .pointer("/model/requantized_from")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The scores of the stored quality runs, sorted by board and model; where a board ×
/// model has several (a changed `[quality]`), the latest success comes first.
pub fn scores(runs: &[&StoredRun]) -> Vec<QualityScore> {
    let mut out: Vec<(u64, QualityScore)> = runs
        .iter()
        .filter_map(|r| Some((r, r.configuration.quality.as_ref()?)))
        .map(|(r, q)| {
            let res = r.result.as_ref();
            let at = |p: &str| res.and_then(|v| num(v, p));
            let s = |p: &str| {
                res.and_then(|v| v.pointer(p))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let score = QualityScore {
                device: r.configuration.device.clone(),
                model: r.configuration.model.clone(),
                config_hash: r.config_hash.clone(),
                job_id: r.job_id.clone(),
                kind: q.kind.clone(),
                text: q.text.clone(),
                n_ctx: r.configuration.n_ctx,
                max_chunks: q.max_chunks,
                reference: q.reference.clone(),
                quant: s("/model/quant"),
                requantized_from: res.and_then(requantized_from),
                ppl: at("/quality/ppl"),
                ppl_stderr: at("/quality/ppl_stderr"),
                kld_mean: at("/quality/kld_mean"),
                kld_stderr: at("/quality/kld_stderr"),
                result: res.and_then(|v| v.get("quality")).cloned(),
                error: res.is_none().then(|| RunError {
                    repetition: r.repetition,
                    job_id: r.job_id.clone(),
                    code: r
                        .error
                        .as_ref()
                        .map_or("unknown".into(), |e| e.code.clone()),
                    message: r
                        .error
                        .as_ref()
                        .map_or("run stored without result or error".into(), |e| {
                            e.message.clone()
                        }),
                }),
            };
            (r.stored_unix_ns, score)
        })
        .collect();
    // Board, model; then successes before failures, the latest first.
    out.sort_by(|(ta, a), (tb, b)| {
        (&a.device, &a.model, a.ppl.is_none(), std::cmp::Reverse(ta)).cmp(&(
            &b.device,
            &b.model,
            b.ppl.is_none(),
            std::cmp::Reverse(tb),
        ))
    });
    out.into_iter().map(|(_, s)| s).collect()
}

/// The score a configuration row of `device` × `model` shows: the first of
/// [`scores`]' order (the latest success).
pub fn score_for<'a>(
    scores: &'a [QualityScore],
    device: &str,
    model: &str,
) -> Option<&'a QualityScore> {
    scores
        .iter()
        .find(|s| s.device == device && s.model == model)
}
