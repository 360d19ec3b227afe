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
                error: res.is_none().then(|| RunError::of(r)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::config::Configuration;
    use crate::study::quality::QualityRun;
    use serde_json::json;

    fn run(model: &str, text: &str, at: u64, ppl: Option<f64>) -> StoredRun {
        let configuration = Configuration {
            device: "d".into(),
            model: model.into(),
            threads: None,
            prompt_tokens: 0,
            gen_tokens: 0,
            depth: 0,
            n_ctx: 128,
            batch: None,
            n_gpu_layers: 0,
            power_mode: None,
            quality: Some(QualityRun {
                kind: "perplexity".into(),
                text: text.into(),
                max_chunks: None,
                reference: None,
            }),
        };
        StoredRun {
            config_hash: configuration.hash(),
            configuration,
            repetition: 0,
            job_id: format!("j-{text}"),
            result: ppl.map(|p| {
                json!({"quality": {"ppl": p, "ppl_stderr": 0.1},
                       "model": {"quant": "Q8_0", "requantized_from": "m.gguf (Q4_1)"}})
            }),
            error: ppl.is_none().then(|| crate::jobs::protocol::ErrorBody {
                code: "text_not_found".into(),
                message: "no text".into(),
            }),
            stored_unix_ns: at,
        }
    }

    #[test]
    fn the_latest_success_is_the_score_of_its_board_and_model() {
        let runs = [
            run("m", "old", 1, Some(20.0)),
            run("m", "new", 2, Some(18.0)),
            run("m", "broken", 3, None),
            run("n", "x", 1, None),
        ];
        let refs: Vec<&StoredRun> = runs.iter().collect();
        let s = scores(&refs);
        assert_eq!(s.len(), 4);
        let m = score_for(&s, "d", "m").unwrap();
        assert_eq!((m.text.as_str(), m.ppl), ("new", Some(18.0)));
        assert_eq!(m.requantized_from.as_deref(), Some("m.gguf (Q4_1)"));
        assert_eq!(m.result.as_ref().unwrap()["ppl"], 18.0);
        let n = score_for(&s, "d", "n").unwrap();
        assert_eq!(n.ppl, None);
        assert_eq!(n.error.as_ref().unwrap().code, "text_not_found");
        assert!(score_for(&s, "e", "m").is_none());
    }
}
