//! The metric families the daemon updates as jobs end and energy accrues, and the
//! scrape-time collector for what is read on demand (queue, broker, cache, sampler).
//! Every series carries the registry-wide `device` label.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::collect::{SnapshotCollector, SnapshotSource};

/// `model` and final `state` of a job.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The job's model name (empty when the job was rejected before it named one).
    pub model: String,
    /// `succeeded`, `failed`, `rejected`, `canceled`.
    pub state: String,
}

/// `model` and `phase` (queue, load, prefill, decode, total).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// The job's model name.
    pub model: String,
    /// The phase.
    pub phase: String,
}

/// `model` only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// The job's model name.
    pub model: String,
}

/// `rail` only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RailLabels {
    /// The rail's name (`VDD_IN`, `5V_IN`, …).
    pub rail: String,
}

/// What a job that ran to its end measured, for the histograms. Every figure is
/// optional: a failed run has no report, a board without sensors no energy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFigures {
    /// `timings.queue_ms`, `load_ms`, `prefill_ms`, `decode_ms`, `total_ms`, in s.
    pub phase_s: Vec<(&'static str, f64)>,
    /// `timings.prefill_tps`.
    pub prefill_tps: Option<f64>,
    /// `timings.decode_tps`.
    pub decode_tps: Option<f64>,
    /// `energy.j_per_token.e2e` (gross, prefill + decode ÷ generated tokens).
    pub j_per_token: Option<f64>,
    /// `tokens.prompt`.
    pub prompt_tokens: Option<u64>,
    /// `tokens.generated`.
    pub generated_tokens: Option<u64>,
}

impl JobFigures {
    /// Picks the figures out of a job's result JSON (the same object the broker
    /// gets), so the metrics say exactly what the result says.
    pub fn from_result(result: &serde_json::Value) -> JobFigures {
        let f = |ptr: &str| {
            result
                .pointer(ptr)
                .and_then(serde_json::Value::as_f64)
                .filter(|v| v.is_finite() && *v >= 0.0)
        };
        let phase_s = [
            ("queue", "/timings/queue_ms"),
            ("load", "/timings/load_ms"),
            ("prefill", "/timings/prefill_ms"),
            ("decode", "/timings/decode_ms"),
            ("total", "/timings/total_ms"),
        ]
        .into_iter()
        .filter_map(|(phase, ptr)| f(ptr).map(|ms| (phase, ms / 1e3)))
        .collect();
        JobFigures {
            phase_s,
            // A run that generated nothing has a 0 rate: not a measurement.
            prefill_tps: f("/timings/prefill_tps").filter(|v| *v > 0.0),
            decode_tps: f("/timings/decode_tps").filter(|v| *v > 0.0),
            j_per_token: f("/energy/j_per_token/e2e"),
            prompt_tokens: result
                .pointer("/tokens/prompt")
                .and_then(serde_json::Value::as_u64),
            generated_tokens: result
                .pointer("/tokens/generated")
                .and_then(serde_json::Value::as_u64),
        }
    }
}

fn seconds_histogram() -> Histogram {
    // 1 ms … ~9 min.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

fn tps_histogram() -> Histogram {
    // 0.5 … ~16k tokens/s.
    Histogram::new(exponential_buckets(0.5, 2.0, 16))
}

fn j_per_token_histogram() -> Histogram {
    // 0.1 mJ … ~3.3 J per token.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The daemon's metrics. Cheap to clone; every handle updates the same series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Holds every family and the collector; read by the encoder on each scrape.
    registry: Registry,
    /// `edgewatt_jobs_total{model,state}`.
    jobs: Family<JobLabels, Counter>,
    /// `edgewatt_job_phase_duration_seconds{model,phase}`.
    phase_s: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    /// `edgewatt_prefill_tokens_per_second{model}`.
    prefill_tps: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// `edgewatt_decode_tokens_per_second{model}`.
    decode_tps: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// `edgewatt_energy_per_token_joules{model}`.
    j_per_token: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// `edgewatt_prompt_tokens_total{model}`.
    prompt_tokens: Family<ModelLabels, Counter>,
    /// `edgewatt_generated_tokens_total{model}`.
    generated_tokens: Family<ModelLabels, Counter>,
    /// `edgewatt_rail_energy_joules_total{rail}`: integrated by [`super::energy`].
    rail_energy_j: Family<RailLabels, Counter<f64, AtomicU64>>,
}

/// Build facts for `edgewatt_build_info`.
#[derive(Debug, Clone, Default)]
pub struct BuildLabels {
    /// Crate version.
    pub version: String,
    /// `-C target-cpu`.
    pub target_cpu: String,
    /// Compile-time CPU features, comma-separated.
    pub features: String,
    /// GPU backends compiled in, comma-separated (empty on a CPU build).
    pub gpu_backends: String,
}

impl Metrics {
    /// A registry whose series all carry `device="…"`, with `source` read at each
    /// scrape for the live figures.
    pub fn new(device: &str, build: BuildLabels, source: Box<dyn SnapshotSource>) -> Metrics {
        let mut registry = Registry::with_labels(
            [(Cow::Borrowed("device"), Cow::Owned(device.to_string()))].into_iter(),
        );
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "edgewatt_jobs",
            "Jobs by final state (succeeded, failed, rejected, canceled) and model",
            jobs.clone(),
        );
        let phase_s: Family<PhaseLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(seconds_histogram);
        registry.register(
            "edgewatt_job_phase_duration_seconds",
            "Duration of each job phase (queue, load, prefill, decode, total) of jobs that ran",
            phase_s.clone(),
        );
        let prefill_tps: Family<ModelLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(tps_histogram);
        registry.register(
            "edgewatt_prefill_tokens_per_second",
            "Prompt tokens per second of prefill, per job",
            prefill_tps.clone(),
        );
        let decode_tps: Family<ModelLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(tps_histogram);
        registry.register(
            "edgewatt_decode_tokens_per_second",
            "Generated tokens per second of decode, per job",
            decode_tps.clone(),
        );
        let j_per_token: Family<ModelLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(j_per_token_histogram);
        registry.register(
            "edgewatt_energy_per_token_joules",
            "Gross energy per generated token (prefill + decode), per job (energy.j_per_token.e2e)",
            j_per_token.clone(),
        );
        let prompt_tokens = Family::<ModelLabels, Counter>::default();
        registry.register(
            "edgewatt_prompt_tokens",
            "Prompt tokens evaluated by jobs that ran (llama-server: llamacpp:prompt_tokens_total)",
            prompt_tokens.clone(),
        );
        let generated_tokens = Family::<ModelLabels, Counter>::default();
        registry.register(
            "edgewatt_generated_tokens",
            "Tokens generated by jobs that ran (llama-server: llamacpp:tokens_predicted_total)",
            generated_tokens.clone(),
        );
        let rail_energy_j = Family::<RailLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "edgewatt_rail_energy_joules",
            "Energy measured on each rail since the daemon started",
            rail_energy_j.clone(),
        );
        registry.register(
            "edgewatt_build",
            "edgewatt build facts",
            Info::new(vec![
                ("version".to_string(), build.version),
                ("target_cpu".to_string(), build.target_cpu),
                ("features".to_string(), build.features),
                ("gpu_backends".to_string(), build.gpu_backends),
            ]),
        );
        registry.register_collector(Box::new(SnapshotCollector::new(source)));
        Metrics {
            inner: Arc::new(Inner {
                registry,
                jobs,
                phase_s,
                prefill_tps,
                decode_tps,
                j_per_token,
                prompt_tokens,
                generated_tokens,
                rail_energy_j,
            }),
        }
    }

    /// Counts a job's final state; `figures` (from a run that reached its end) feed
    /// the duration, rate and J/token histograms.
    pub fn job_finished(&self, model: &str, state: &str, figures: Option<&JobFigures>) {
        let i = &self.inner;
        i.jobs
            .get_or_create(&JobLabels {
                model: model.to_string(),
                state: state.to_string(),
            })
            .inc();
        let Some(f) = figures else { return };
        for (phase, s) in &f.phase_s {
            i.phase_s
                .get_or_create(&PhaseLabels {
                    model: model.to_string(),
                    phase: phase.to_string(),
                })
                .observe(*s);
        }
        let m = ModelLabels {
            model: model.to_string(),
        };
        if let Some(v) = f.prefill_tps {
            i.prefill_tps.get_or_create(&m).observe(v);
        }
        if let Some(v) = f.decode_tps {
            i.decode_tps.get_or_create(&m).observe(v);
        }
        if let Some(v) = f.j_per_token {
            i.j_per_token.get_or_create(&m).observe(v);
        }
        if let Some(n) = f.prompt_tokens {
            i.prompt_tokens.get_or_create(&m).inc_by(n);
        }
        if let Some(n) = f.generated_tokens {
            i.generated_tokens.get_or_create(&m).inc_by(n);
        }
    }

    /// Adds measured energy to a rail's counter.
    pub fn add_rail_energy(&self, rail: &str, energy_j: f64) {
        if energy_j.is_finite() && energy_j > 0.0 {
            self.inner
                .rail_energy_j
                .get_or_create(&RailLabels {
                    rail: rail.to_string(),
                })
                .inc_by(energy_j);
        }
    }

    /// The exposition in the Prometheus text format (version 0.0.4). Calls the
    /// snapshot source: run it off the async runtime.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)
        {
            tracing::warn!("cannot encode the metrics: {e}");
        }
        out
    }
}

/// `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::collect::{RailSnapshot, Snapshot};
    use serde_json::json;

    #[derive(Debug)]
    struct Fixed(Snapshot);
    impl SnapshotSource for Fixed {
        fn snapshot(&self) -> Snapshot {
            self.0.clone()
        }
    }

    fn metrics() -> Metrics {
        let snap = Snapshot {
            queue_length: 3,
            broker_connected: true,
            model_cache_bytes: 123_456,
            rails: vec![RailSnapshot {
                name: "VDD_IN".into(),
                power_w: Some(4.5),
                effective_rate_hz: 1000.0,
                samples: 5000,
                conversions_missed: 7,
                gaps: 2,
                errors_by_kind: [("nack".to_string(), 4)].into_iter().collect(),
            }],
        };
        let build = BuildLabels {
            version: "0.1.0".into(),
            target_cpu: "native".into(),
            features: "avx2,fma".into(),
            gpu_backends: String::new(),
        };
        Metrics::new("pi-1", build, Box::new(Fixed(snap)))
    }

    /// The value of the first line starting with `prefix` (a series name with labels).
    fn value(text: &str, prefix: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// `promtool check metrics` (Debian `prometheus`) accepts `text` with no lint
    /// finding; skipped, loudly, where promtool is not installed.
    fn promtool_accepts(text: &str) {
        use std::io::Write as _;
        let tool = "/usr/bin/promtool";
        if !std::path::Path::new(tool).exists() {
            eprintln!("SKIPPED promtool check: {tool} is not installed");
            return;
        }
        let mut child = std::process::Command::new(tool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "promtool: {said}\n{text}"
        );
    }

    #[test]
    fn figures_come_from_the_result_json() {
        let r = json!({
            "timings": {"queue_ms": 5.0, "load_ms": 0.0, "prefill_ms": 20.0, "decode_ms": 400.0,
                        "total_ms": 430.0, "prefill_tps": 300.0, "decode_tps": 0.0},
            "energy": {"j_per_token": {"e2e": 0.25, "decode": 0.2}},
            "tokens": {"prompt": 6, "generated": 16}
        });
        let f = JobFigures::from_result(&r);
        assert_eq!(
            f.phase_s,
            vec![
                ("queue", 0.005),
                ("load", 0.0),
                ("prefill", 0.02),
                ("decode", 0.4),
                ("total", 0.43)
            ]
        );
        assert_eq!(f.prefill_tps, Some(300.0));
        assert_eq!(f.decode_tps, None, "0 t/s is no measurement");
        assert_eq!(f.j_per_token, Some(0.25));
        assert_eq!((f.prompt_tokens, f.generated_tokens), (Some(6), Some(16)));
        // `energy: null` (no sensors): no J/token.
        assert_eq!(
            JobFigures::from_result(&json!({"energy": null})).j_per_token,
            None
        );
    }

    #[test]
    fn encodes_every_family_with_device_and_units_in_names() {
        let m = metrics();
        let figs = JobFigures {
            phase_s: vec![("decode", 0.4)],
            prefill_tps: Some(300.0),
            decode_tps: Some(42.0),
            j_per_token: Some(0.25),
            prompt_tokens: Some(6),
            generated_tokens: Some(16),
        };
        m.job_finished("smol", "succeeded", Some(&figs));
        m.job_finished("smol", "succeeded", Some(&figs));
        m.job_finished("", "rejected", None);
        m.add_rail_energy("VDD_IN", 1.5);
        m.add_rail_energy("VDD_IN", 0.25);
        m.add_rail_energy("VDD_IN", f64::NAN);
        let t = m.encode();
        assert_eq!(
            value(
                &t,
                r#"edgewatt_jobs_total{device="pi-1",model="smol",state="succeeded"}"#
            ),
            2.0,
            "{t}"
        );
        assert_eq!(
            value(
                &t,
                r#"edgewatt_jobs_total{device="pi-1",model="",state="rejected"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &t,
                r#"edgewatt_job_phase_duration_seconds_count{device="pi-1",model="smol",phase="decode"}"#
            ),
            2.0
        );
        assert_eq!(
            value(
                &t,
                r#"edgewatt_energy_per_token_joules_sum{device="pi-1",model="smol"}"#
            ),
            0.5
        );
        assert_eq!(
            value(
                &t,
                r#"edgewatt_decode_tokens_per_second_bucket{device="pi-1",model="smol",le="+Inf"}"#
            ),
            2.0,
            "{t}"
        );
        assert_eq!(
            value(
                &t,
                r#"edgewatt_rail_energy_joules_total{device="pi-1",rail="VDD_IN"}"#
            ),
            1.75
        );
        assert_eq!(
            value(
                &t,
                r#"edgewatt_generated_tokens_total{device="pi-1",model="smol"}"#
            ),
            32.0
        );
        assert_eq!(
            value(
                &t,
                r#"edgewatt_prompt_tokens_total{device="pi-1",model="smol"}"#
            ),
            12.0
        );
        assert_eq!(value(&t, r#"edgewatt_queue_length{device="pi-1"}"#), 3.0);
        assert_eq!(
            value(&t, r#"edgewatt_broker_connected{device="pi-1"}"#),
            1.0
        );
        assert_eq!(
            value(&t, r#"edgewatt_model_cache_bytes{device="pi-1"}"#),
            123_456.0
        );
        assert_eq!(
            value(
                &t,
                r#"edgewatt_rail_power_watts{device="pi-1",rail="VDD_IN"}"#
            ),
            4.5
        );
        assert_eq!(
            value(
                &t,
                r#"edgewatt_sampler_read_errors_total{device="pi-1",rail="VDD_IN",kind="nack"}"#
            ),
            4.0
        );
        for name in [
            "edgewatt_sampler_effective_rate_hertz",
            "edgewatt_sampler_samples_total",
            "edgewatt_sampler_conversions_missed_total",
            "edgewatt_sampler_gaps_total",
            "edgewatt_build_info",
        ] {
            assert!(t.lines().any(|l| l.starts_with(name)), "no {name} in\n{t}");
        }
        assert!(
            t.contains(r#"edgewatt_build_info{device="pi-1",version="0.1.0",target_cpu="native",features="avx2,fma",gpu_backends=""} 1"#),
            "{t}"
        );
        assert!(t.contains("# TYPE edgewatt_jobs_total counter"), "{t}");
        promtool_accepts(&t);
        assert!(
            t.contains("# TYPE edgewatt_job_phase_duration_seconds histogram"),
            "{t}"
        );
    }
}
