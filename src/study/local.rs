//! `study run --local`: the board is this machine. Each run's payload goes through the
//! protocol's own parser (the same validation and defaults a daemon applies), then the
//! engine in-process, measured by the daemon's measuring path ([`Measure`]: the
//! configured sensors, thermal zones); the result is the protocol's result JSON.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::run::Board;
use crate::config::Config;
use crate::daemon::measure::Measure;
use crate::infer::{Engine, EventLog, EventObserver};
use crate::jobs::protocol::{cpu_count, parse_job, ErrorBody, Limits};

/// This machine as a study board.
pub struct LocalBoard {
    /// The device name runs are recorded under (`local`).
    device: String,
    engine: Engine,
    measure: Measure,
    limits: Limits,
    defaults: crate::infer::GenerateOptions,
    /// `[quality] texts_dir`: where a quality run's text is resolved.
    texts_dir: std::path::PathBuf,
    /// Idle window before each run (`power.idle_window_ms`; 0 without sensors): the
    /// baseline of the run's idle-subtracted energy.
    idle_window: Duration,
    /// Status recorded in the study database at start.
    status: Value,
    cancel: CancellationToken,
}

impl LocalBoard {
    /// Starts the engine and the sampler of the configuration.
    pub fn start(cfg: &Config, cancel: CancellationToken) -> anyhow::Result<LocalBoard> {
        let measure = Measure::start(&cfg.power, &cfg.store.path, cancel.child_token())?;
        let mut engine_cfg = crate::cli::engine_config(cfg);
        engine_cfg.load_progress = false;
        let engine = Engine::start(engine_cfg, cancel.child_token())?;
        let models = crate::infer::registry::list(&cfg.models.dir)
            .map(|l| l.into_iter().map(|m| m.name).collect::<Vec<_>>())
            .unwrap_or_default();
        let status = json!({
            "device": "local",
            "state": "online",
            "version": env!("CARGO_PKG_VERSION"),
            "models": models,
            "rails": measure.rail_names(),
            "simulated": measure.simulated(),
            "cpus": cpu_count(),
            "build": serde_json::to_value(crate::cli::info::build_info()).unwrap_or(Value::Null),
        });
        let idle_window = if measure.rail_names().is_empty() {
            Duration::ZERO
        } else {
            Duration::from_millis(cfg.power.idle_window_ms)
        };
        Ok(LocalBoard {
            device: "local".into(),
            engine,
            measure,
            limits: Limits::default(),
            defaults: cfg.inference.clone(),
            texts_dir: cfg.quality.texts_dir.clone(),
            idle_window,
            status,
            cancel,
        })
    }
}

impl Board for LocalBoard {
    fn device(&self) -> &str {
        &self.device
    }

    fn status(&self) -> Value {
        self.status.clone()
    }

    fn run(&self, payload: &Value) -> Result<Value, ErrorBody> {
        let job = parse_job(payload.to_string().as_bytes(), &self.limits, &self.defaults)
            .map_err(|r| r.error.to_error_body())?;
        // Idle rate, the settle gate when asked for (the daemon's, same logic), and an
        // idle wait before the run: its energy baseline (unless the gate's hold covered it).
        self.measure.set_active(false);
        let settle = job.settle.map(|spec| {
            crate::daemon::settle::wait::wait_blocking(&self.measure, &spec, || {
                self.cancel.is_cancelled()
            })
        });
        let held = settle
            .as_ref()
            .filter(|o| o.settled)
            .map_or(Duration::ZERO, |o| Duration::from_secs_f64(o.spec.settle_s));
        if held < self.idle_window {
            std::thread::sleep(self.idle_window);
        }
        self.measure.set_active(true);
        let recording = self.measure.begin_job();
        let log = Arc::new(Mutex::new(EventLog::default()));
        let observer: Box<dyn EventObserver> = Box::new(log.clone());
        let engine_error = |e: crate::infer::EngineError| ErrorBody {
            code: e.code().to_string(),
            message: e.to_string(),
        };
        let report = match &job.quality {
            // A quality job ([quality]): the text from texts_dir (or the built-in).
            Some(spec) => {
                let text = crate::quality::text::resolve(&self.texts_dir, &spec.text)
                    .map_err(|e| engine_error(e.into()))?;
                let req = crate::quality::QualityRequest {
                    kind: spec.kind,
                    model: job.request.model.clone(),
                    reference: spec.reference.clone(),
                    text: Arc::new(text),
                    n_ctx: spec.n_ctx,
                    max_chunks: spec.max_chunks,
                    threads: job.request.options.threads,
                    keep_alive_s: job.request.keep_alive_s,
                };
                self.engine
                    .quality_blocking(req, observer, self.cancel.child_token())
            }
            None => self.engine.generate_blocking(
                job.request.clone(),
                observer,
                self.cancel.child_token(),
            ),
        }
        .map_err(engine_error)?;
        if report.finish_reason == crate::infer::FinishReason::Canceled {
            // Stopped mid-way (Ctrl-C): not a result; the run is sent again on resume.
            self.measure.set_active(false);
            return Err(ErrorBody {
                code: "canceled".into(),
                message: "the run was canceled before it finished".into(),
            });
        }
        if !self.idle_window.is_zero() {
            // The samples after the last marker reach the ring before the window is cut.
            std::thread::sleep(Duration::from_millis(50));
        }
        let events = log.lock().map(|l| l.events.clone()).unwrap_or_default();
        let measured = self.measure.job_blocking(
            recording,
            &job.id,
            &job.request.model,
            &events,
            report.start_ns,
            report.end_ns,
        );
        self.measure.set_active(false);
        let mut result = serde_json::to_value(&report).map_err(|e| ErrorBody {
            code: "result_encoding".into(),
            message: e.to_string(),
        })?;
        if let Some(obj) = result.as_object_mut() {
            obj.insert("id".into(), json!(job.id));
            obj.insert("device".into(), json!(self.device));
            obj.insert("state".into(), json!("succeeded"));
            obj.insert("energy".into(), measured.energy);
            obj.insert("thermal".into(), measured.thermal);
            if let Some(s) = &settle {
                obj.insert(
                    "settle".into(),
                    serde_json::to_value(s).unwrap_or(Value::Null),
                );
            }
        }
        Ok(result)
    }
}
