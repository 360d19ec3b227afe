//! The study report: a pure function of the stored runs (and the plan's name, hash
//! and `[cost]`), so it can be regenerated at any time. [`build`] groups runs by
//! configuration and summarises every metric; the submodules render the result.
//!
//! # Layout
//! - [`metrics`] — which numbers are read from each run's result JSON, and where
//! - [`table`] — the Markdown table (the report's main table and its errors)
//! - [`csv`] — one flattened row per configuration
//! - [`json`] — the machine contract (docs/study-report.md)
//! - [`figures`] — the SVG figures (plotters)
//! - [`html`] — one self-contained page: tables and inline SVG
//! - [`compare`] — two studies side by side: ratio of means, Welch p, significance
//! - [`quality`] — the plan's quality runs: scores joined onto their board × model's rows

pub mod compare;
pub mod csv;
pub mod figures;
pub mod html;
pub mod json;
pub mod metrics;
pub mod quality;
pub mod table;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{ConfigHash, Configuration, StoredRun};
use super::cost::{cost_per_mtok, Cost, CostConfig};
use super::stats::{slow_first, Summary};
use metrics::{num, METRICS};

/// Fewest samples (per rail) a phase should have before its energy is trusted.
pub const MIN_PHASE_SAMPLES: f64 = 10.0;

/// What the report says about the study as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyInfo {
    /// `[study] name`.
    pub name: String,
    /// sha256 of the plan file the runs were made under.
    pub plan_sha256: String,
    /// Boards that have runs (sorted).
    pub boards: Vec<String>,
    /// Whether any run's energy came from a simulated sensor.
    pub simulated: bool,
    /// The plan's `[cost]`, when it has one.
    #[serde(default)]
    pub cost: Option<CostConfig>,
    /// Each board's status at the start of the study (the retained `DeviceStatus`:
    /// version, build features, CPU, sensors, power modes), by device.
    #[serde(default)]
    pub board_status: BTreeMap<String, Value>,
    /// The edgewatt version that built the report.
    pub edgewatt_version: String,
}

/// A configuration as the report names it: the plan's axes, every key present
/// (`null` where the plan left it to the board), plus the quant the model reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigKey {
    pub device: String,
    pub model: String,
    /// Quantization from the result's `model.quant` (`null` before any run succeeded).
    pub quant: Option<String>,
    pub threads: Option<u32>,
    pub prompt_tokens: u32,
    pub gen_tokens: u32,
    pub depth: u32,
    pub n_ctx: u32,
    pub batch: Option<u32>,
    pub n_gpu_layers: u32,
    pub power_mode: Option<String>,
}

/// A run that produced no result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    pub repetition: u32,
    pub job_id: String,
    /// The protocol's stable error code.
    pub code: String,
    pub message: String,
}

impl RunError {
    /// The error of a stored run without a result (its stored error, or a named gap).
    pub(crate) fn of(r: &StoredRun) -> Self {
        let (code, message) = r.error.as_ref().map_or(
            (
                "unknown".into(),
                "run stored without result or error".into(),
            ),
            |e| (e.code.clone(), e.message.clone()),
        );
        RunError {
            repetition: r.repetition,
            job_id: r.job_id.clone(),
            code,
            message,
        }
    }
}

/// One row of the report: a configuration's runs summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigReport {
    pub config: ConfigKey,
    /// `Configuration::hash()` — what compare matches on.
    pub config_hash: ConfigHash,
    /// Successful runs.
    pub n: usize,
    /// Per-metric summaries (keys: [`METRICS`]), over successful runs in repetition
    /// order; a metric no run reported is absent.
    pub metrics: BTreeMap<String, Summary>,
    /// Decode t/s as pooled decoded tokens ÷ pooled decode time (beside
    /// `metrics.decode_tps`, the mean of per-run rates).
    pub decode_tps_pooled: Option<f64>,
    /// `model.size_bytes` (the GGUF file).
    pub model_size_bytes: Option<u64>,
    /// `memory.model_bytes + memory.kv_bytes` at this configuration's n_ctx.
    pub model_kv_bytes: Option<u64>,
    /// `memory.model_bytes` and `memory.kv_bytes` apart (figure 3).
    pub weights_bytes: Option<u64>,
    pub kv_bytes: Option<u64>,
    /// Cold load: `load_ms` of the first run on this board that loaded this model
    /// from disk (the earliest with `load_cached: false`, over the whole study).
    pub load_cold_ms: Option<f64>,
    /// The power mode the board reported during the runs (result `power_mode`).
    pub power_mode_recorded: Option<Value>,
    /// Cost per million generated tokens from the mean e2e J/token and s/token.
    pub cost: Option<Cost>,
    /// Validity flags: `simulated`, `throttled`, `not_settled`, `incomplete`,
    /// `few_samples:PHASE`, `outliers:METRIC`, `slow_first_run`, `few_runs`, `failed_runs`,
    /// `requantized`.
    pub flags: Vec<String>,
    /// Runs that failed, with their error.
    pub errors: Vec<RunError>,
    /// The quality score of this board × model (the plan's `[quality]` run), when stored.
    #[serde(default)]
    pub quality: Option<quality::QualityScore>,
    /// `model.requantized_from` of the runs: the model was requantized from a lower
    /// precision (its speed, memory and energy are real; its quality is not that of a
    /// true quantization of the original weights). Also flag `requantized`.
    #[serde(default)]
    pub requantized_from: Option<String>,
    /// Per-metric values in repetition order (for compare); not part of the contract.
    #[serde(skip)]
    pub values: BTreeMap<String, Vec<f64>>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub study: StudyInfo,
    /// Stored runs (successful and failed).
    pub runs: usize,
    pub configurations: Vec<ConfigReport>,
    /// Every stored quality run (board × model; docs/study-report.md).
    #[serde(default)]
    pub quality: Vec<quality::QualityScore>,
}

/// The plan facts a report needs beside its runs.
#[derive(Debug, Clone, Default)]
pub struct StudyMeta {
    pub name: String,
    pub plan_sha256: String,
    pub cost: Option<CostConfig>,
    /// Board status JSON by device (the study database's `boards`).
    pub board_status: BTreeMap<String, Value>,
}

/// Builds the report from the stored runs: one row per configuration (sorted by
/// configuration), every number recomputed from the runs' result JSON.
pub fn build(meta: &StudyMeta, runs: &[StoredRun]) -> Report {
    let mut groups: BTreeMap<&Configuration, Vec<&StoredRun>> = BTreeMap::new();
    let mut quality_runs = Vec::new();
    for r in runs {
        if r.configuration.quality.is_some() {
            quality_runs.push(r);
        } else {
            groups.entry(&r.configuration).or_default().push(r);
        }
    }
    let scores = quality::scores(&quality_runs);
    let cold = cold_loads(runs);
    let configurations: Vec<ConfigReport> = groups
        .into_iter()
        .map(|(cfg, mut rs)| {
            rs.sort_by_key(|r| r.repetition);
            let mut row = config_report(cfg, &rs, &cold, meta.cost.as_ref());
            row.quality = quality::score_for(&scores, &cfg.device, &cfg.model).cloned();
            row
        })
        .collect();
    let mut boards: Vec<String> = runs
        .iter()
        .map(|r| r.configuration.device.clone())
        .collect();
    boards.sort();
    boards.dedup();
    Report {
        study: StudyInfo {
            name: meta.name.clone(),
            plan_sha256: meta.plan_sha256.clone(),
            boards,
            simulated: configurations
                .iter()
                .any(|c| c.flags.iter().any(|f| f == "simulated")),
            cost: meta.cost.clone(),
            board_status: meta.board_status.clone(),
            edgewatt_version: env!("CARGO_PKG_VERSION").to_string(),
        },
        runs: runs.len(),
        configurations,
        quality: scores,
    }
}

/// (device, model) → load_ms of the earliest run that loaded the model from disk.
fn cold_loads(runs: &[StoredRun]) -> BTreeMap<(String, String), f64> {
    let mut first: BTreeMap<(String, String), (u64, f64)> = BTreeMap::new();
    for r in runs {
        let Some(res) = &r.result else { continue };
        if res.pointer("/timings/load_cached").and_then(Value::as_bool) != Some(false) {
            continue;
        }
        let (Some(load_ms), started) = (
            num(res, "/timings/load_ms"),
            res.pointer("/started_unix_ns")
                .and_then(Value::as_u64)
                .unwrap_or(r.stored_unix_ns),
        ) else {
            continue;
        };
        let key = (
            r.configuration.device.clone(),
            r.configuration.model.clone(),
        );
        let e = first.entry(key).or_insert((started, load_ms));
        if started < e.0 {
            *e = (started, load_ms);
        }
    }
    first.into_iter().map(|(k, (_, ms))| (k, ms)).collect()
}

fn config_report(
    cfg: &Configuration,
    runs: &[&StoredRun],
    cold: &BTreeMap<(String, String), f64>,
    cost_cfg: Option<&CostConfig>,
) -> ConfigReport {
    let results: Vec<&Value> = runs.iter().filter_map(|r| r.result.as_ref()).collect();
    let errors: Vec<RunError> = runs
        .iter()
        .filter(|r| r.result.is_none())
        .map(|r| RunError::of(r))
        .collect();

    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for m in METRICS {
        let v: Vec<f64> = results
            .iter()
            .filter_map(|r| (m.read)(r))
            .filter(|x| x.is_finite())
            .collect();
        if !v.is_empty() {
            values.insert(m.key.to_string(), v);
        }
    }
    let summaries: BTreeMap<String, Summary> = values
        .iter()
        .filter_map(|(k, v)| Summary::of(v).map(|s| (k.clone(), s)))
        .collect();

    let first = results.first().copied();
    let u64_at = |p: &str| first.and_then(|r| r.pointer(p)).and_then(Value::as_u64);
    let (weights, kv) = (u64_at("/memory/model_bytes"), u64_at("/memory/kv_bytes"));
    let mean = |k: &str| summaries.get(k).map(|s| s.mean);
    let cost = match (cost_cfg, mean("j_per_token_e2e"), mean("s_per_token_e2e")) {
        (Some(c), Some(j), Some(s)) => Some(cost_per_mtok(c, j, s)),
        _ => None,
    };

    let mut flags = run_flags(&results);
    for (k, s) in &summaries {
        if !s.outliers.is_empty() {
            flags.push(format!("outliers:{k}"));
        }
    }
    if values.get("decode_tps").is_some_and(|v| slow_first(v))
        || values.get("prefill_tps").is_some_and(|v| slow_first(v))
    {
        flags.push("slow_first_run".into());
    }
    if results.len() < 2 {
        flags.push("few_runs".into());
    }
    if !errors.is_empty() {
        flags.push("failed_runs".into());
    }
    let requantized_from = results.iter().find_map(|r| quality::requantized_from(r));
    if requantized_from.is_some() {
        flags.push("requantized".into());
    }

    ConfigReport {
        config: ConfigKey {
            device: cfg.device.clone(),
            model: cfg.model.clone(),
            quant: first
                .and_then(|r| r.pointer("/model/quant"))
                .and_then(Value::as_str)
                .map(str::to_string),
            threads: cfg.threads,
            prompt_tokens: cfg.prompt_tokens,
            gen_tokens: cfg.gen_tokens,
            depth: cfg.depth,
            n_ctx: cfg.n_ctx,
            batch: cfg.batch,
            n_gpu_layers: cfg.n_gpu_layers,
            power_mode: cfg.power_mode.clone(),
        },
        config_hash: cfg.hash(),
        n: results.len(),
        decode_tps_pooled: pooled_decode_tps(&results),
        model_size_bytes: u64_at("/model/size_bytes"),
        model_kv_bytes: weights.zip(kv).map(|(w, k)| w + k),
        weights_bytes: weights,
        kv_bytes: kv,
        load_cold_ms: cold.get(&(cfg.device.clone(), cfg.model.clone())).copied(),
        power_mode_recorded: results
            .iter()
            .find_map(|r| r.get("power_mode").filter(|v| !v.is_null()).cloned()),
        cost,
        metrics: summaries,
        flags,
        errors,
        quality: None,
        requantized_from,
        values,
    }
}

/// Flags read from the runs' results (any run counts).
fn run_flags(results: &[&Value]) -> Vec<String> {
    let any = |f: &dyn Fn(&Value) -> bool| results.iter().any(|r| f(r));
    let mut flags = Vec::new();
    if any(&|r| r.pointer("/energy/simulated") == Some(&Value::Bool(true))) {
        flags.push("simulated".to_string());
    }
    if any(&|r| {
        r.pointer("/thermal/throttled") == Some(&Value::Bool(true))
            || r.pointer("/energy/thermal/throttled") == Some(&Value::Bool(true))
    }) {
        flags.push("throttled".into());
    }
    if any(&|r| r.pointer("/settle/settled") == Some(&Value::Bool(false))) {
        flags.push("not_settled".into());
    }
    if any(&|r| {
        r.pointer("/energy/incomplete")
            .and_then(Value::as_object)
            .is_some_and(|o| o.values().any(|v| v == &Value::Bool(true)))
    }) {
        flags.push("incomplete".into());
    }
    for phase in ["load", "prefill", "decode"] {
        if any(&|r| phase_samples(r, phase).is_some_and(|n| n < MIN_PHASE_SAMPLES)) {
            flags.push(format!("few_samples:{phase}"));
        }
    }
    flags
}

/// Samples per rail a phase got: the job's per-rail rate × the phase's duration.
pub fn phase_samples(result: &Value, phase: &str) -> Option<f64> {
    let rate = num(result, "/energy/sample_rate_hz")?;
    let dur = num(result, &format!("/energy/duration_s/{phase}"))?;
    (dur > 0.0).then_some(rate * dur)
}

/// Σ decoded tokens ÷ Σ decode seconds over every repetition of every run. A
/// repetition decodes `generated − 1` tokens in `decode_ms` (the first token ends
/// prefill), as `timings.decode_tps` counts them.
pub fn pooled_decode_tps(results: &[&Value]) -> Option<f64> {
    let (mut tokens, mut secs) = (0.0f64, 0.0f64);
    for r in results {
        match r.get("repetitions").and_then(Value::as_array) {
            Some(reps) if !reps.is_empty() => {
                for rep in reps {
                    let (Some(g), Some(ms)) = (num(rep, "/generated"), num(rep, "/decode_ms"))
                    else {
                        continue;
                    };
                    tokens += (g - 1.0).max(0.0);
                    secs += ms / 1e3;
                }
            }
            _ => {
                if let (Some(g), Some(ms)) =
                    (num(r, "/tokens/generated"), num(r, "/timings/decode_ms"))
                {
                    tokens += (g - 1.0).max(0.0);
                    secs += ms / 1e3;
                }
            }
        }
    }
    (secs > 0.0).then(|| tokens / secs)
}

#[cfg(test)]
mod tests;
