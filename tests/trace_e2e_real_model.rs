//! Acceptance end to end (issue 4): the real model (SmolLM2-135M Q4_1, `make model`)
//! with a simulated INA219 whose load follows host CPU utilisation. Decode power is
//! above idle, every phase longer than two sample periods has a sample, the
//! exported CSV integrated here matches the stored total within 0.5 %, and the plot
//! is well-formed SVG with one band per phase.

mod trace_common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgewatt::clock::{monotonic_ns, ClockAnchor};
use edgewatt::infer::{Engine, EngineConfig, GenerateOptions, GenerateRequest, PromptInput};
use edgewatt::power::sim::load::{cpu_utilisation, parse_proc_stat};
use edgewatt::power::{start_sampler, Recorder, SamplerOptions, SensorSpec};
use edgewatt::trace::export::write_csv;
use edgewatt::trace::plot::{band_color, render_svg};
use edgewatt::trace::thermal::{ThermalConfig, ThermalRecorder};
use edgewatt::trace::{
    capture, phase_windows, summarize, EnergyOptions, EnergySummary, JobCapture, MarkerLog,
    PhaseLabel, Store,
};
use tokio_util::sync::CancellationToken;
use trace_common::{integrate_csv, parse_xml, rel_err};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

const SIM: &str = r#"
kind = "sim"
chip = "ina219"
shunt_ohms = 0.1
max_current_a = 3.2
adc_bits = 12
rails = ["5V_IN"]
total = true
load = [{ source = "cpu", idle_w = 2.5, max_w = 6.0, bus_v = 5.0 }]
"#;

fn proc_stat() -> Option<(u64, u64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

#[test]
fn real_model_job_energy_trace() {
    let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    assert!(
        model_dir.join(format!("{MODEL}.gguf")).exists(),
        "the real model is missing: run `make model`"
    );
    let cancel = CancellationToken::new();
    let spec: SensorSpec = toml::from_str(SIM).expect("spec");
    // A ring of ~1 s at the INA219's 940 Hz: far shorter than idle window + job, so
    // the trace is whole only because the job's recording drains it as it fills (as
    // the daemon does).
    let ring_capacity = 1024;
    let sampler = Arc::new(
        start_sampler(
            &[spec],
            SamplerOptions {
                ring_capacity,
                ..SamplerOptions::default()
            },
            cancel.clone(),
        )
        .expect("sampler"),
    );
    let thermal =
        ThermalRecorder::start(ThermalConfig::default(), cancel.clone()).expect("thermal");
    let engine = Engine::start(EngineConfig::new(&model_dir), cancel.clone()).expect("engine");
    let recording = Recorder::start(
        sampler.clone(),
        monotonic_ns(),
        edgewatt::power::recorder::DEFAULT_EVERY,
        &cancel,
    )
    .expect("recorder");

    // The idle window: 2 s of the sampler's stream before the job.
    let opts = EnergyOptions::default();
    let before = proc_stat();
    std::thread::sleep(Duration::from_millis(2_300));
    let idle_util = before.zip(proc_stat()).map(|(a, b)| cpu_utilisation(a, b));

    let anchor = ClockAnchor::now();
    let log = Arc::new(Mutex::new(MarkerLog::default()));
    let req = GenerateRequest {
        model: MODEL.into(),
        input: PromptInput::Prompt(
            "Write a short story about a robot who learns to measure energy.".into(),
        ),
        options: GenerateOptions {
            max_tokens: 64,
            temperature: 0.0,
            n_ctx: 512,
            threads: Some(2),
            ignore_eos: true,
            ..GenerateOptions::default()
        },
        keep_alive_s: None,
    };
    let report = engine
        .generate_blocking(req, Box::new(log.clone()), CancellationToken::new())
        .expect("generate");
    // Let the samples after the last marker reach the rings.
    std::thread::sleep(Duration::from_nanos(opts.max_gap_ns + 50_000_000));
    let markers = log.lock().expect("log").markers.clone();
    let trace = capture(
        &JobCapture {
            job_id: "e2e-1",
            model: Some(MODEL),
            markers: &markers,
            anchor,
        },
        &sampler,
        Some(recording.finish()),
        Some(&thermal),
        &opts,
    );
    assert!(
        trace.samples.len() > 2 * ring_capacity,
        "the recording holds more than the ring ever did: {} samples",
        trace.samples.len()
    );
    assert!(
        !trace
            .gaps
            .iter()
            .any(|g| g.reason.contains("ring overflowed")),
        "no sample was lost between ring and recording: {:?}",
        trace.gaps
    );
    sampler.shutdown();
    thermal.stop();
    let summary = summarize(&trace, &opts);
    eprint!("{}", summary.to_text());

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("edgewatt.db");
    {
        let store = Store::open(&db).expect("open");
        let result = serde_json::json!({
            "model": {"name": MODEL, "quant": "Q4_1"},
            "tokens": {"prompt": report.tokens.prompt, "generated": report.tokens.generated},
            "timings": report.timings,
            "energy": summary,
        });
        store
            .set_result("e2e-1", "done", &result.to_string())
            .expect("result");
        store.put_trace(&trace).expect("trace");
    }
    let store = Store::open(&db).expect("reopen");
    let stored: EnergySummary = serde_json::from_str(
        &store
            .get_job("e2e-1")
            .expect("get")
            .expect("row")
            .energy_json
            .expect("energy"),
    )
    .expect("summary");
    let back = store.get_trace("e2e-1").expect("get").expect("trace");
    // Field by field: sampler_stats holds floats, and serde_json's default float
    // parsing may be one ULP off, so it is only checked for presence.
    assert_eq!(back.samples, trace.samples);
    assert_eq!(back.markers, trace.markers);
    assert_eq!(back.rails, trace.rails);
    assert_eq!(back.gaps, trace.gaps);
    assert_eq!(back.anchor, trace.anchor);
    assert_eq!(back.thermal, trace.thermal);
    assert!(back.sampler_stats.is_object());

    assert!(stored.simulated);
    assert_eq!(stored.tokens.generated, u64::from(report.tokens.generated));
    assert_eq!(stored.tokens.generated, 64);
    assert!(
        !stored.incomplete.total,
        "{:?}",
        stored.rails[0].uncovered_s
    );

    // CSV export, integrated independently over the marker windows.
    let mut csv = Vec::new();
    write_csv(&back, &mut csv).expect("csv");
    let csv = String::from_utf8(csv).expect("utf8");
    let mut points = Vec::new();
    let mut per_phase: HashMap<String, usize> = HashMap::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        points.push((
            f[0].parse::<u64>().expect("t"),
            f[4].parse::<f64>().expect("uw") * 1e-6,
        ));
        *per_phase.entry(f[5].to_string()).or_default() += 1;
    }
    let pw = phase_windows(&back.markers);
    let windows: Vec<_> = pw
        .load
        .iter()
        .chain(&pw.prefill)
        .chain(&pw.decode)
        .copied()
        .collect();
    let csv_total: f64 = windows
        .iter()
        .map(|w| integrate_csv(&points, w.start_ns, w.end_ns))
        .sum();
    assert!(
        rel_err(stored.energy_j.total, csv_total) <= 0.005,
        "stored {} J vs CSV {csv_total} J",
        stored.energy_j.total
    );

    // At least one sample in every phase longer than two sample periods.
    let period_ns = 1e9 / stored.sample_rate_hz.expect("rate");
    for (label, ws) in [
        (PhaseLabel::Load, &pw.load),
        (PhaseLabel::Prefill, &pw.prefill),
        (PhaseLabel::Decode, &pw.decode),
    ] {
        let longest = ws.iter().map(|w| w.len_ns()).max().unwrap_or(0);
        if longest as f64 > 2.0 * period_ns {
            assert!(
                per_phase.get(label.as_str()).copied().unwrap_or(0) > 0,
                "{} lasted {longest} ns but has no sample",
                label.as_str()
            );
        }
    }

    // Decode power above idle — unless other work kept the (shared) CPU busy
    // during the idle window, in which case "idle" was not idle.
    let idle_w = stored.idle_w.expect("idle");
    let decode_w = stored.energy_j.decode / stored.duration_s.decode;
    eprintln!(
        "idle {idle_w:.3} W (host CPU {:.0} %), decode {decode_w:.3} W, {} samples at {:.0} Hz, {:.4} J/token",
        idle_util.unwrap_or(f64::NAN) * 100.0,
        stored.samples,
        stored.sample_rate_hz.unwrap_or(0.0),
        stored.j_per_token.decode.unwrap_or(f64::NAN)
    );
    match idle_util {
        Some(u) if u < 0.6 => assert!(decode_w > idle_w, "decode {decode_w} W ≤ idle {idle_w} W"),
        _ => eprintln!("host busy during the idle window: above-idle check skipped"),
    }

    // The plot: well-formed SVG, one band per phase (one repetition).
    let svg = render_svg(&back, Some(&stored)).expect("plot");
    let tags = parse_xml(&svg).unwrap_or_else(|e| panic!("SVG is not well-formed: {e}"));
    for label in [PhaseLabel::Load, PhaseLabel::Prefill, PhaseLabel::Decode] {
        let c = band_color(label);
        let color = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
        let n = tags
            .iter()
            .filter(|(name, a)| {
                name == "rect" && a.get("fill").map(|f| f.to_uppercase()) == Some(color.clone())
            })
            .count();
        assert_eq!(n, 1, "{} band", label.as_str());
    }
    if let Ok(keep) = std::env::var("EDGEWATT_KEEP_PLOT") {
        std::fs::write(keep, &svg).expect("keep plot");
    }
}

/// Repetitions on the real engine: warm-ups are excluded, measured repetitions
/// add up, and the MLPerf window starts after the warm-up.
#[test]
fn real_model_repetitions_exclude_warmup() {
    let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let cancel = CancellationToken::new();
    let spec: SensorSpec = toml::from_str(SIM).expect("spec");
    let sampler =
        start_sampler(&[spec], SamplerOptions::default(), cancel.clone()).expect("sampler");
    let engine = Engine::start(EngineConfig::new(&model_dir), cancel.clone()).expect("engine");
    let opts = EnergyOptions::default();
    std::thread::sleep(Duration::from_millis(500));
    let log = Arc::new(Mutex::new(MarkerLog::default()));
    let req = GenerateRequest {
        model: MODEL.into(),
        input: PromptInput::Prompt("Once upon a time".into()),
        options: GenerateOptions {
            max_tokens: 16,
            temperature: 0.0,
            n_ctx: 256,
            threads: Some(2),
            ignore_eos: true,
            repeat: 2,
            warmup: 1,
            ..GenerateOptions::default()
        },
        keep_alive_s: None,
    };
    engine
        .generate_blocking(req, Box::new(log.clone()), CancellationToken::new())
        .expect("generate");
    std::thread::sleep(Duration::from_nanos(opts.max_gap_ns + 50_000_000));
    let markers = log.lock().expect("log").markers.clone();
    let trace = capture(
        &JobCapture {
            job_id: "reps",
            model: Some(MODEL),
            markers: &markers,
            anchor: ClockAnchor::now(),
        },
        &sampler,
        None,
        None,
        &opts,
    );
    sampler.shutdown();
    let s = summarize(&trace, &opts);
    let pw = phase_windows(&trace.markers);
    assert_eq!(s.repetitions, 2);
    assert_eq!(s.tokens.generated, 32, "warm-up tokens are not counted");
    assert_eq!(pw.prefill.len(), 2);
    assert_eq!(pw.decode.len(), 2);
    assert_eq!(
        pw.warmup.len(),
        1,
        "warm-up prefill and decode are adjacent"
    );
    let ml = s.mlperf.expect("mlperf");
    assert!(ml.begin_ns >= pw.warmup[0].end_ns);
    assert!(!s.incomplete.total);
    let dur = s.duration_s;
    assert!((dur.total - (dur.load + dur.prefill + dur.decode)).abs() < 1e-12);
}
