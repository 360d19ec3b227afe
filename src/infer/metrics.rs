//! Per-run metrics, computed from our own timestamps (CLOCK_MONOTONIC, taken around
//! llama.cpp calls). JSON names are the protocol's result schema (docs/protocol.md).

use serde::{Deserialize, Serialize};

use super::events::FinishReason;
use super::request::GenerateOptions;

/// Token latency percentiles over the decode phase, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Timings of a run (mean over measured repetitions when `repeat > 1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Time the job waited in the daemon's queue (0 for local runs).
    pub queue_ms: f64,
    /// Model load; 0 when served from the cache (`load_cached`).
    pub load_ms: f64,
    /// True when the model was already loaded.
    pub load_cached: bool,
    /// Prompt evaluation (prefill_start → prefill_end).
    pub prefill_ms: f64,
    /// Time to first token: prefill_start → first token sampled.
    pub ttft_ms: f64,
    /// Decode: first token → last token (n_generated − 1 decode steps).
    pub decode_ms: f64,
    /// Whole run, load included.
    pub total_ms: f64,
    /// Prompt tokens ÷ prefill seconds.
    pub prefill_tps: f64,
    /// (generated − 1) ÷ decode seconds: the first token is produced by prefill.
    pub decode_tps: f64,
    /// Inter-token latency percentiles.
    pub token_latency_ms: LatencyMs,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCounts {
    pub prompt: u32,
    pub generated: u32,
}

/// Memory figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Bytes of model tensors (llama_model_size).
    pub model_bytes: u64,
    /// KV cache bytes for the context used.
    pub kv_bytes: u64,
    /// Peak resident set of the process during the run (VmHWM, reset at job start).
    pub rss_peak_bytes: u64,
    /// MemAvailable when the job started.
    pub mem_available_bytes: u64,
}

/// Facts about the model, from GGUF metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelFacts {
    pub name: String,
    pub file: String,
    pub arch: Option<String>,
    /// Size label (`135M`) or, failing that, the parameter count.
    pub params: Option<String>,
    /// Exact parameter count (llama_model_n_params).
    pub n_params: u64,
    pub quant: Option<String>,
    pub size_bytes: u64,
    pub trained_ctx: Option<u64>,
    /// Set when the file was requantized from an already quantized model
    /// (`edgewatt.quantized_from`, e.g. `SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1)`): its
    /// speed, memory and energy are real for its format, its quality is not that of
    /// a true quantization to it.
    #[serde(default)]
    pub requantized_from: Option<String>,
}

/// One repetition's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepetitionReport {
    pub index: u32,
    pub prompt_tokens: u32,
    pub generated: u32,
    pub prefill_ms: f64,
    pub ttft_ms: f64,
    pub decode_ms: f64,
    pub prefill_tps: f64,
    pub decode_tps: f64,
    pub finish_reason: Option<FinishReason>,
}

/// Mean and sample standard deviation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    pub mean: f64,
    pub sd: f64,
    pub n: usize,
}

/// Mean ± sd of the key figures over measured repetitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RepetitionStats {
    pub prefill_tps: MeanSd,
    pub decode_tps: MeanSd,
    pub ttft_ms: MeanSd,
    pub prefill_ms: MeanSd,
    pub decode_ms: MeanSd,
}

/// Everything the engine reports for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub model: ModelFacts,
    /// Effective options (defaults filled in, `n_ctx`/`threads` resolved).
    pub params: GenerateOptions,
    /// Generated text (of the last measured repetition).
    pub text: String,
    pub finish_reason: FinishReason,
    pub tokens: TokenCounts,
    pub timings: Timings,
    pub memory: Memory,
    /// Per-repetition figures when `repeat > 1` or `warmup > 0` (warm-ups excluded).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub repetitions: Vec<RepetitionReport>,
    /// Mean ± sd over measured repetitions when there are several.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub repetition_stats: Option<RepetitionStats>,
    /// llama.cpp's own perf counters for the last repetition (cross-check only).
    pub llama_perf: Option<LlamaPerf>,
    /// What llama.cpp did with `n_gpu_layers`: layers, devices, bytes per buffer (issue 15).
    #[serde(default)]
    pub offload: super::offload::OffloadReport,
    /// Quality jobs (`kind` perplexity / kld): what was scored and how well.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub quality: Option<crate::quality::QualityResult>,
    pub started_unix_ns: u64,
    pub finished_unix_ns: u64,
    /// Monotonic window of the run: first event (load or repetition start).
    pub start_ns: u64,
    /// Monotonic window of the run: last `done` event.
    pub end_ns: u64,
}

/// llama.cpp's perf counters (`llama_perf_context`), reported beside ours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LlamaPerf {
    pub prompt_eval_ms: f64,
    pub prompt_tokens: i32,
    pub eval_ms: f64,
    pub eval_tokens: i32,
}

/// Nearest-rank percentile of an unsorted slice (`q` in 0..=1). 0 for empty input.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Latency summary of inter-token gaps.
pub fn latency(gaps_ms: &[f64]) -> LatencyMs {
    LatencyMs {
        p50: percentile(gaps_ms, 0.50),
        p90: percentile(gaps_ms, 0.90),
        p99: percentile(gaps_ms, 0.99),
        max: gaps_ms.iter().copied().fold(0.0, f64::max),
    }
}

/// Mean and sample sd (n − 1); sd is 0 for fewer than two values.
pub fn mean_sd(values: &[f64]) -> MeanSd {
    let n = values.len();
    if n == 0 {
        return MeanSd::default();
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let sd = if n < 2 {
        0.0
    } else {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    };
    MeanSd { mean, sd, n }
}

/// Tokens per second, 0 when the duration is 0.
pub fn tps(tokens: u32, ms: f64) -> f64 {
    if ms <= 0.0 {
        0.0
    } else {
        tokens as f64 / (ms / 1000.0)
    }
}

pub fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl RepetitionStats {
    pub fn from_reps(reps: &[RepetitionReport]) -> Self {
        let f = |g: fn(&RepetitionReport) -> f64| mean_sd(&reps.iter().map(g).collect::<Vec<_>>());
        RepetitionStats {
            prefill_tps: f(|r| r.prefill_tps),
            decode_tps: f(|r| r.decode_tps),
            ttft_ms: f(|r| r.ttft_ms),
            prefill_ms: f(|r| r.prefill_ms),
            decode_ms: f(|r| r.decode_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(|x| x as f64).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.9), 90.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        let l = latency(&[5.0, 1.0, 3.0]);
        assert_eq!(l.max, 5.0);
        assert_eq!(l.p50, 3.0);
    }

    #[test]
    fn mean_and_sample_sd() {
        let m = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!((m.mean - 5.0).abs() < 1e-12);
        assert!((m.sd - 2.138_089_935).abs() < 1e-6);
        assert_eq!(mean_sd(&[1.0]).sd, 0.0);
    }

    #[test]
    fn tps_handles_zero() {
        assert_eq!(tps(10, 0.0), 0.0);
        assert_eq!(tps(10, 500.0), 20.0);
    }
}
