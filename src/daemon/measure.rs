//! Energy for the daemon's jobs: the power sampler and thermal recorder run for the
//! daemon's whole life (the idle baseline needs the seconds *before* a job), and
//! after each job its window of samples and the engine's events become a
//! [`Trace`], its [`EnergySummary`](crate::trace::EnergySummary) and a stored row.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use std::path::Path;

use crate::clock::monotonic_ns;
use crate::clock::ClockAnchor;
use crate::config::PowerConfig;
use crate::infer::{EngineEvent, RunReport};
use crate::power::{recorder, start_sampler, Recorder, SamplerHandle, SamplerOptions};
use crate::trace::{
    capture, summarize, EnergyOptions, JobCapture, Store, StoreError, ThermalConfig,
    ThermalRecorder, Trace,
};

/// Sampler, thermal recorder and trace store, shared by the daemon's tasks (and by
/// `edgewatt generate --trace`). Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct Measure {
    /// The sampler; `None` when no sensor is configured (results then say `energy: null`).
    sampler: Option<Arc<SamplerHandle>>,
    /// CPU temperature / frequency during jobs; `None` when disabled.
    thermal: Option<Arc<ThermalRecorder>>,
    /// The trace store (same SQLite file as the journal); its own connection.
    store: Option<Arc<Mutex<Store>>>,
    /// Idle window and gap limit for the energy math.
    opts: EnergyOptions,
    /// Stops job recordings with the daemon.
    cancel: CancellationToken,
    /// The settle gate's idle references (lowest temperature and power seen).
    settle_refs: Arc<Mutex<super::settle::IdleRefs>>,
}

/// What one job measured.
pub struct Measured {
    /// The result's `energy` object (`null` without sensors).
    pub energy: Value,
    /// The result's `thermal` object (`null` when not recorded).
    pub thermal: Value,
    /// The full trace, for the store and the `trace` topic.
    pub trace: Option<Trace>,
}

impl Measure {
    /// Starts the sampler (when sensors are configured) and the thermal recorder, and
    /// opens the trace store.
    pub fn start(
        p: &PowerConfig,
        store_path: &Path,
        cancel: CancellationToken,
    ) -> anyhow::Result<Measure> {
        let sampler = if p.sensors.is_empty() {
            tracing::warn!("no [[power.sensors]] configured: results will carry no energy figures");
            None
        } else {
            let opts = SamplerOptions {
                ring_capacity: p.ring_capacity.max(1024),
                max_gap_ns: p.max_gap_ms.saturating_mul(1_000_000),
                idle_rate_hz: p.idle_rate_hz,
                ..SamplerOptions::default()
            };
            let sampler = start_sampler(&p.sensors, opts, cancel.clone())?;
            // Idle rate until a job runs: the full conversion rate costs a few percent
            // of a core for nothing between jobs (the runner switches it).
            sampler.set_active(false);
            Some(Arc::new(sampler))
        };
        let thermal = if p.thermal_interval_ms == 0 {
            None
        } else {
            let cfg = ThermalConfig {
                period: Duration::from_millis(p.thermal_interval_ms),
                sysfs_root: p.thermal_sysfs_root.clone(),
                ..ThermalConfig::default()
            };
            match ThermalRecorder::start(cfg, cancel.clone()) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    tracing::warn!("thermal recording is off: {e}");
                    None
                }
            }
        };
        let store = match Store::open(store_path) {
            Ok(s) => Some(Arc::new(Mutex::new(s))),
            Err(e) => {
                tracing::warn!("traces will not be stored: {e}");
                None
            }
        };
        Ok(Measure {
            sampler,
            thermal,
            store,
            opts: EnergyOptions {
                idle_window_ns: p.idle_window_ms.saturating_mul(1_000_000),
                max_gap_ns: p.max_gap_ms.saturating_mul(1_000_000),
            },
            cancel,
            settle_refs: Arc::default(),
        })
    }

    /// Starts recording a job's samples: the idle window before now, then everything
    /// until [`Measure::job`] (the rings are drained while it runs, so a job longer
    /// than the ring loses nothing). `None` without sensors, or when the recording
    /// thread cannot start (the job's window then comes from the rings, logged).
    pub fn begin_job(&self) -> Option<Recorder> {
        let sampler = self.sampler.clone()?;
        let from = monotonic_ns().saturating_sub(self.opts.idle_window_ns);
        match Recorder::start(sampler, from, recorder::DEFAULT_EVERY, &self.cancel) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("job samples will come from the ring only: {e}");
                None
            }
        }
    }

    /// Full sampling rate while a job runs (`true`), idle rate between jobs (`false`).
    /// The idle baseline before a job is then measured at the idle rate.
    pub fn set_active(&self, active: bool) {
        if let Some(s) = &self.sampler {
            s.set_active(active);
        }
    }

    /// The sampler, when sensors are configured (the settle gate reads it).
    pub fn sampler_handle(&self) -> Option<&SamplerHandle> {
        self.sampler.as_deref()
    }

    /// The thermal recorder, when it runs (the settle gate reads it).
    pub fn thermal_recorder(&self) -> Option<&ThermalRecorder> {
        self.thermal.as_deref()
    }

    /// The settle gate's idle references, kept for the daemon's life.
    pub fn settle_refs(&self) -> &Mutex<super::settle::IdleRefs> {
        &self.settle_refs
    }

    /// The sampler, when sensors are configured (the metrics read its counters).
    pub fn sampler(&self) -> Option<Arc<SamplerHandle>> {
        self.sampler.clone()
    }

    /// Rail names, for the board status.
    pub fn rail_names(&self) -> Vec<String> {
        self.sampler
            .as_ref()
            .map(|s| s.rails().into_iter().map(|r| r.name).collect())
            .unwrap_or_default()
    }

    /// True when the readings are simulated.
    pub fn simulated(&self) -> bool {
        self.sampler.as_ref().is_some_and(|s| s.simulated())
    }

    /// The latest reading per rail, for the live power topic.
    pub fn live(&self) -> Option<Value> {
        let s = self.sampler.as_ref()?;
        let rails = s.rails();
        let latest = s.latest();
        let list: Vec<Value> = rails
            .iter()
            .zip(latest)
            .map(|(r, sample)| match sample {
                Some(x) => json!({
                    "name": r.name,
                    "total": r.total,
                    "power_w": x.power_uw as f64 / 1e6,
                    "bus_v": f64::from(x.bus_mv) / 1e3,
                    "current_a": x.current_ua as f64 / 1e6,
                    "t_ns": x.t_ns(),
                }),
                None => json!({ "name": r.name, "total": r.total, "power_w": null }),
            })
            .collect();
        Some(json!({ "simulated": s.simulated(), "rails": list }))
    }

    /// Builds the job's trace and energy summary (on the blocking pool: copying a
    /// window of samples and integrating is CPU work).
    pub async fn job(
        &self,
        recording: Option<Recorder>,
        id: &str,
        model: &str,
        events: Vec<EngineEvent>,
        report: &RunReport,
    ) -> Measured {
        let this = self.clone();
        let (id, model) = (id.to_string(), model.to_string());
        let (start_ns, end_ns) = (report.start_ns, report.end_ns);
        tokio::task::spawn_blocking(move || {
            this.job_blocking(recording, &id, &model, &events, start_ns, end_ns)
        })
        .await
        .unwrap_or(Measured {
            energy: Value::Null,
            thermal: Value::Null,
            trace: None,
        })
    }

    /// The work of [`Measure::job`], on the calling thread: the job's window (idle
    /// baseline included) from its recording (or the rings) through
    /// [`trace::capture`](capture), then the energy and thermal summaries.
    pub fn job_blocking(
        &self,
        recording: Option<Recorder>,
        id: &str,
        model: &str,
        events: &[EngineEvent],
        start_ns: u64,
        end_ns: u64,
    ) -> Measured {
        let Some(s) = self.sampler.as_deref() else {
            return Measured {
                energy: Value::Null,
                thermal: Value::Null,
                trace: None,
            };
        };
        let markers: Vec<_> = events.iter().map(Into::into).collect();
        let trace = capture(
            &JobCapture {
                job_id: id,
                model: Some(model),
                markers: &markers,
                anchor: ClockAnchor::now(),
            },
            s,
            recording.map(Recorder::finish),
            self.thermal.as_deref(),
            &self.opts,
        );
        let summary = summarize(&trace, &self.opts);
        let thermal = trace
            .thermal
            .as_ref()
            .map(|t| crate::trace::thermal::summarize_thermal(t, start_ns, end_ns));
        Measured {
            energy: serde_json::to_value(&summary).unwrap_or(Value::Null),
            thermal: serde_json::to_value(&thermal).unwrap_or(Value::Null),
            trace: Some(trace),
        }
    }

    /// The energy options (idle window, gap limit) in force.
    pub fn energy_options(&self) -> &EnergyOptions {
        &self.opts
    }

    /// Stores the job's row (request, result, energy) and trace in the trace store,
    /// for `edgewatt report` and `edgewatt trace`; failures are logged.
    pub async fn store(
        &self,
        id: &str,
        state: &str,
        request_json: String,
        result: &Value,
        trace: Option<Trace>,
    ) {
        if let Err(e) = self.try_store(id, state, request_json, result, trace).await {
            tracing::warn!("cannot store the trace of a job: {e}");
        }
    }

    /// [`Measure::store`] that says whether it worked (the runner fails a job whose
    /// result cannot be stored: `store_full`).
    pub async fn try_store(
        &self,
        id: &str,
        state: &str,
        request_json: String,
        result: &Value,
        trace: Option<Trace>,
    ) -> Result<bool, StoreError> {
        let this = self.clone();
        let (id, state, result) = (id.to_string(), state.to_string(), result.clone());
        tokio::task::spawn_blocking(move || {
            this.store_blocking(&id, &state, &request_json, &result, trace.as_ref())
        })
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Corrupt {
                job: String::new(),
                why: "the trace store task panicked".into(),
            })
        })
    }

    /// The work of [`Measure::store`], on the calling thread. `Ok(false)` when no
    /// store could be opened at start (the warning was logged then).
    pub fn store_blocking(
        &self,
        id: &str,
        state: &str,
        request_json: &str,
        result: &Value,
        trace: Option<&Trace>,
    ) -> Result<bool, StoreError> {
        let Some(store) = self.store.as_ref() else {
            return Ok(false);
        };
        let store = store.lock().unwrap_or_else(|e| e.into_inner());
        store.upsert_job(id, state, request_json)?;
        store.set_result(id, state, &result.to_string())?;
        if let Some(e) = result.get("energy").filter(|e| !e.is_null()) {
            store.set_energy(id, &e.to_string())?;
        }
        if let Some(t) = trace {
            store.put_trace(t)?;
        }
        Ok(true)
    }

    /// Applies the store's retention (`store.max_age_days`, `store.max_bytes`) to
    /// stored jobs and traces, off the runtime.
    pub async fn apply_retention(&self, max_age_days: u32, max_bytes: u64) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let max_age =
            (max_age_days > 0).then(|| Duration::from_secs(u64::from(max_age_days) * 86_400));
        let max_bytes = (max_bytes > 0).then_some(max_bytes);
        let res = tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
            store.apply_retention(max_age, max_bytes)
        })
        .await;
        match res {
            Ok(Ok(r)) if r.jobs_deleted + r.traces_deleted > 0 => tracing::info!(
                jobs = r.jobs_deleted,
                traces = r.traces_deleted,
                bytes = r.trace_bytes_freed,
                "store retention applied"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("cannot apply store retention: {e}"),
            Err(_) => tracing::warn!("the store retention task panicked"),
        }
    }
}
