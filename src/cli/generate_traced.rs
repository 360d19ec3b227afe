//! `edgewatt generate --trace`: the same run with the configured sensors sampling
//! around it; the trace is stored (`edgewatt trace export|plot JOB`) and the energy
//! summary printed beside the speed metrics. The result JSON is the protocol's schema.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::generate::GenerateArgs;
use crate::clock::ClockAnchor;
use crate::config::Config;
use crate::infer::{Engine, EngineEvent, EventLog, EventObserver, Tee};
use crate::power::{start_sampler, SamplerOptions};
use crate::trace::{
    capture, summarize, EnergyOptions, JobCapture, Store, ThermalConfig, ThermalRecorder,
};

/// Streams measured-repetition tokens to stdout.
struct Stream {
    warmup: bool,
}

impl EventObserver for Stream {
    fn on_event(&mut self, ev: &EngineEvent) {
        match ev {
            EngineEvent::RepetitionStart { warmup, .. } => self.warmup = *warmup,
            EngineEvent::Token { piece, .. } if !self.warmup => {
                print!("{piece}");
                let _ = std::io::stdout().flush();
            }
            _ => {}
        }
    }
}

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
    let p = &cfg.power;
    let opts = EnergyOptions {
        idle_window_ns: p.idle_window_ms.saturating_mul(1_000_000),
        max_gap_ns: p.max_gap_ms.saturating_mul(1_000_000),
    };
    let sampler = start_sampler(
        &p.sensors,
        SamplerOptions {
            ring_capacity: p.ring_capacity.max(1024),
            max_gap_ns: opts.max_gap_ns,
            ..SamplerOptions::default()
        },
        cancel.child_token(),
    )
    .context("cannot start the power sampler")?;
    let thermal = (p.thermal_interval_ms > 0)
        .then(|| {
            ThermalRecorder::start(
                ThermalConfig {
                    period: Duration::from_millis(p.thermal_interval_ms),
                    ..ThermalConfig::default()
                },
                cancel.child_token(),
            )
            .map_err(|e| tracing::warn!("thermal recording is off: {e}"))
            .ok()
        })
        .flatten();
    let mut engine_cfg = super::engine_config(cfg);
    engine_cfg.default_keep_alive_s = 0;
    let engine = Engine::start(engine_cfg, cancel.child_token())?;

    // The idle baseline is the sampler's stream before the job: wait it out.
    if !args.json {
        eprintln!("sampling an idle baseline for {} ms…", p.idle_window_ms);
    }
    std::thread::sleep(Duration::from_millis(p.idle_window_ms));

    let anchor = ClockAnchor::now();
    let log = Arc::new(Mutex::new(EventLog::default()));
    let mut observers: Vec<Box<dyn EventObserver>> = vec![Box::new(log.clone())];
    if !args.json {
        observers.push(Box::new(Stream { warmup: false }));
    }
    let report = engine.generate_blocking(
        req.clone(),
        Box::new(Tee(observers)),
        CancellationToken::new(),
    )?;
    if !args.json {
        println!();
    }
    // Let the samples after the last marker reach the ring before cutting the window.
    std::thread::sleep(Duration::from_nanos(
        opts.max_gap_ns.clamp(20_000_000, 500_000_000),
    ));

    let id = uuid::Uuid::new_v4().simple().to_string();
    let events = log.lock().map(|l| l.events.clone()).unwrap_or_default();
    let mut trace = crate::trace::Trace::new(id.clone(), sampler.rails(), anchor);
    trace.extend_events(events.iter());
    let markers = trace.markers.clone();
    let trace = capture(
        &JobCapture {
            job_id: &id,
            model: Some(&req.model),
            markers: &markers,
            anchor,
        },
        &sampler,
        thermal.as_ref(),
        &opts,
    );
    let summary = summarize(&trace, &opts);
    let thermal_summary = trace
        .thermal
        .as_ref()
        .map(|t| crate::trace::thermal::summarize_thermal(t, report.start_ns, report.end_ns));

    let mut result = serde_json::to_value(&report)?;
    if let Some(obj) = result.as_object_mut() {
        obj.insert("id".into(), json!(id));
        obj.insert("device".into(), json!(cfg.device.id));
        obj.insert("state".into(), json!("succeeded"));
        obj.insert("energy".into(), serde_json::to_value(&summary)?);
        obj.insert("thermal".into(), serde_json::to_value(&thermal_summary)?);
    }
    let request = json!({ "id": id, "model": req.model, "source": "edgewatt generate --trace" });
    let store = Store::open(&cfg.store.path)
        .with_context(|| format!("cannot open the store '{}'", cfg.store.path.display()))?;
    store.upsert_job(&id, "succeeded", &request.to_string())?;
    store.set_result(&id, "succeeded", &result.to_string())?;
    store.set_energy(&id, &serde_json::to_string(&summary)?)?;
    store.put_trace(&trace)?;
    sampler.shutdown();
    cancel.cancel();
    if let Some(t) = thermal {
        t.stop();
    }
    Ok(result)
}
