//! `edgewatt generate --trace`: the same run with the configured sensors sampling
//! around it, through the daemon's own measuring path ([`Measure`]); the trace is
//! stored (`edgewatt trace export|plot JOB`) and the energy summary printed beside
//! the speed metrics. The result JSON is the protocol's schema.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::generate::{GenerateArgs, StdoutStream};
use crate::config::Config;
use crate::daemon::measure::Measure;
use crate::infer::{Engine, EventLog, EventObserver, Tee};

/// Runs a traced generation; returns the result object (already stored).
pub fn run(args: &GenerateArgs, cfg: &Config) -> anyhow::Result<Value> {
    if cfg.power.sensors.is_empty() {
        anyhow::bail!(
            "--trace needs at least one [[power.sensors]] entry in the configuration \
             (use kind = \"sim\" for a simulated sensor; see docs/sensors.md)"
        );
    }
    let req = args.request(&cfg.inference)?;
    let cancel = CancellationToken::new();
    let measure = Measure::start(&cfg.power, &cfg.store.path, cancel.child_token())?;
    // Full rate from the start: this run is the only job, baseline included.
    measure.set_active(true);
    let mut engine_cfg = super::engine_config(cfg);
    engine_cfg.default_keep_alive_s = 0;
    let engine = Engine::start(engine_cfg, cancel.child_token())?;

    // The idle baseline is the sampler's stream before the job: wait it out.
    if !args.json {
        eprintln!(
            "sampling an idle baseline for {} ms…",
            cfg.power.idle_window_ms
        );
    }
    std::thread::sleep(Duration::from_millis(cfg.power.idle_window_ms));

    let recording = measure.begin_job();
    let log = Arc::new(Mutex::new(EventLog::default()));
    let mut observers: Vec<Box<dyn EventObserver>> = vec![Box::new(log.clone())];
    if !args.json {
        observers.push(Box::new(StdoutStream::default()));
    }
    let report = engine.generate_blocking(
        req.clone(),
        Box::new(Tee(observers)),
        CancellationToken::new(),
    )?;
    // Let the samples after the last marker reach the ring before cutting the window.
    let max_gap_ns = measure.energy_options().max_gap_ns;
    std::thread::sleep(Duration::from_nanos(
        max_gap_ns.clamp(20_000_000, 500_000_000),
    ));

    let id = uuid::Uuid::new_v4().simple().to_string();
    let events = log.lock().map(|l| l.events.clone()).unwrap_or_default();
    let measured = measure.job_blocking(
        recording,
        &id,
        &req.model,
        &events,
        report.start_ns,
        report.end_ns,
    );

    let mut result = serde_json::to_value(&report)?;
    if let Some(obj) = result.as_object_mut() {
        obj.insert("id".into(), json!(id));
        obj.insert("device".into(), json!(cfg.device.id));
        obj.insert("state".into(), json!("succeeded"));
        obj.insert("energy".into(), measured.energy);
        obj.insert("thermal".into(), measured.thermal);
    }
    let request = json!({ "id": id, "model": req.model, "source": "edgewatt generate --trace" });
    let stored = measure.store_blocking(
        &id,
        "succeeded",
        &request.to_string(),
        &result,
        measured.trace.as_ref(),
    )?;
    if !stored {
        anyhow::bail!(
            "cannot open the store '{}' (see the warning above); the trace was not kept",
            cfg.store.path.display()
        );
    }
    cancel.cancel();
    Ok(result)
}
