//! Acceptance (issue 4), on a synthetic trace: store it, export CSV, integrate the
//! CSV independently here and match the stored total within 0.5 %; every phase
//! longer than two sample periods has samples; decode power is above idle; the
//! plot is well-formed SVG with one band per phase. The CLI modules are compiled
//! into this test (they are plain files under src/cli/) and driven through `run`.

mod trace_common;

// `crate::trace` inside the included CLI files resolves to the library's module.
use edgewatt::trace;

#[path = "../src/cli/report.rs"]
mod cli_report;
#[path = "../src/cli/trace.rs"]
mod cli_trace;

use std::collections::HashMap;

use edgewatt::trace::energy::EnergySummary;
use edgewatt::trace::plot::band_color;
use edgewatt::trace::{summarize, EnergyOptions, PhaseLabel, Store};
use trace_common::*;

const PERIOD_NS: u64 = 2 * MS;

/// A job with power that follows "CPU load": idle 1.2 W, load 3 W, prefill 7 W,
/// decode 4.5 W with a 5 Hz ripple; 500 Hz sampling with jitter and drops.
fn synthetic() -> (trace::Trace, Job) {
    let job = Job::typical();
    let f = move |t: u64| {
        let s = ns_to_s(t);
        if t < job.load_start || t >= job.done {
            1.2
        } else if t < job.load_end {
            3.0
        } else if t < job.prefill_start {
            1.5
        } else if t < job.prefill_end {
            7.0
        } else {
            4.5 + 0.5 * (2.0 * std::f64::consts::PI * 5.0 * s).sin()
        }
    };
    let sampling = Sampling {
        period_ns: PERIOD_NS,
        jitter: 0.2,
        drop: 0.05,
        seed: 42,
    };
    let samples = sample_fn(f, 0, T0_NS, job.done + 300 * MS, sampling);
    (
        trace_with(vec![rail("VDD_IN", true)], samples, job.markers()),
        job,
    )
}

fn hex(c: plotters::style::RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

#[test]
fn stored_total_matches_independent_csv_integration_and_plot_is_valid() {
    let (trace, job) = synthetic();
    let summary = summarize(&trace, &EnergyOptions::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("edgewatt.db");
    {
        let store = Store::open(&db).expect("open");
        store.upsert_job("job-1", "running", "{}").expect("upsert");
        let result = serde_json::json!({
            "model": {"name": "test-model", "quant": "Q4_0"},
            "params": {"threads": 4},
            "tokens": {"prompt": 16, "generated": 40},
            "timings": {"load_ms": 800.2, "ttft_ms": 310.0, "prefill_tps": 53.2, "decode_tps": 20.0},
            "memory": {"rss_peak_bytes": 734_003_200u64},
            "energy": summary,
        });
        store
            .set_result("job-1", "done", &result.to_string())
            .expect("result");
        store.put_trace(&trace).expect("trace");
    }

    // Export through the CLI module, as a user would.
    let csv_path = dir.path().join("trace.csv");
    cli_trace::run(
        cli_trace::TraceArgs {
            command: cli_trace::TraceCommand::Export(cli_trace::ExportArgs {
                job: "job-1".into(),
                format: cli_trace::ExportFormat::Csv,
                output: Some(csv_path.clone()),
            }),
        },
        &db,
    )
    .expect("export csv");
    let csv = std::fs::read_to_string(&csv_path).expect("read csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("t_ns,rail,bus_mv,current_ua,power_uw,phase")
    );
    let mut points: Vec<(u64, f64)> = Vec::new();
    let mut per_phase: HashMap<String, usize> = HashMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 6, "{line}");
        assert_eq!(f[1], "VDD_IN");
        points.push((
            f[0].parse().expect("t_ns"),
            f[4].parse::<f64>().expect("power_uw") * 1e-6,
        ));
        *per_phase.entry(f[5].to_string()).or_default() += 1;
    }
    assert_eq!(points.len(), trace.samples.len());

    // The stored total, read back from the store.
    let stored: EnergySummary = {
        let store = Store::open(&db).expect("reopen");
        let row = store.get_job("job-1").expect("get").expect("row");
        serde_json::from_str(&row.energy_json.expect("energy_json")).expect("summary")
    };
    let csv_total = integrate_csv(&points, job.load_start, job.load_end)
        + integrate_csv(&points, job.prefill_start, job.prefill_end)
        + integrate_csv(&points, job.prefill_end, job.done);
    let err = rel_err(stored.energy_j.total, csv_total);
    assert!(
        err <= 0.005,
        "stored {} J vs CSV {} J",
        stored.energy_j.total,
        csv_total
    );

    // Every phase longer than two sample periods has at least one sample.
    for (phase, a, b) in [
        ("load", job.load_start, job.load_end),
        ("prefill", job.prefill_start, job.prefill_end),
        ("decode", job.prefill_end, job.done),
    ] {
        if b - a > 2 * PERIOD_NS {
            assert!(per_phase.get(phase).copied().unwrap_or(0) > 0, "{phase}");
        }
    }
    // Decode power above idle.
    let idle = stored.idle_w.expect("idle");
    let decode_w = stored.rails[0].energy_j.decode / stored.duration_s.decode;
    assert!(
        decode_w > idle + 1.0,
        "decode {decode_w} W vs idle {idle} W"
    );
    assert!(stored.simulated);

    // The plot, through the CLI module.
    let svg_path = dir.path().join("trace.svg");
    cli_trace::run(
        cli_trace::TraceArgs {
            command: cli_trace::TraceCommand::Plot(cli_trace::PlotArgs {
                job: "job-1".into(),
                output: svg_path.clone(),
            }),
        },
        &db,
    )
    .expect("plot");
    let svg = std::fs::read_to_string(&svg_path).expect("read svg");
    let tags = parse_xml(&svg).unwrap_or_else(|e| panic!("SVG is not well-formed XML: {e}"));
    assert_eq!(tags.first().map(|t| t.0.as_str()), Some("svg"));
    for label in [PhaseLabel::Load, PhaseLabel::Prefill, PhaseLabel::Decode] {
        let color = hex(band_color(label));
        let bands = tags
            .iter()
            .filter(|(n, a)| {
                n == "rect" && a.get("fill").map(|f| f.to_uppercase()) == Some(color.clone())
            })
            .count();
        assert_eq!(bands, 1, "{} band ({color})", label.as_str());
    }
    assert!(svg.contains("SIMULATED"), "title says SIMULATED");
    assert!(svg.contains("test-model"));
    assert!(svg.contains("VDD_IN"), "legend names the rail");

    // JSON export parses back to the same trace.
    let json_path = dir.path().join("trace.json");
    cli_trace::run(
        cli_trace::TraceArgs {
            command: cli_trace::TraceCommand::Export(cli_trace::ExportArgs {
                job: "job-1".into(),
                format: cli_trace::ExportFormat::Json,
                output: Some(json_path.clone()),
            }),
        },
        &db,
    )
    .expect("export json");
    let back: trace::Trace =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("read")).expect("parse");
    assert_eq!(back, trace);

    // The report has the job, with the figures from the stored result.
    let store = Store::open(&db).expect("open");
    let md = cli_report::render(&store, cli_report::ReportFormat::Md).expect("report");
    let row = md.lines().nth(2).expect("row");
    assert!(
        row.starts_with("| job-1 | done | test-model | Q4_0 | 4 | 16 | 40 | 0.80 |"),
        "{row}"
    );
    assert!(row.ends_with("| yes |"), "{row}");
    let csv = cli_report::render(&store, cli_report::ReportFormat::Csv).expect("csv");
    assert_eq!(csv.lines().count(), 2);
    let json = cli_report::render(&store, cli_report::ReportFormat::Json).expect("json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v[0]["tokens_per_j"], serde_json::json!(stored.tokens_per_j));
    let report_path = dir.path().join("report.md");
    cli_report::run(
        cli_report::ReportArgs {
            format: cli_report::ReportFormat::Md,
            output: Some(report_path.clone()),
        },
        &db,
    )
    .expect("report run");
    assert_eq!(std::fs::read_to_string(&report_path).expect("read"), md);
    if let Ok(keep) = std::env::var("EDGEWATT_KEEP_PLOT") {
        std::fs::copy(&svg_path, keep).expect("keep plot");
    }
}

#[test]
fn cli_errors_name_the_job_and_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("none.db");
    let args = || cli_trace::TraceArgs {
        command: cli_trace::TraceCommand::Export(cli_trace::ExportArgs {
            job: "nope".into(),
            format: cli_trace::ExportFormat::Csv,
            output: None,
        }),
    };
    let e = cli_trace::run(args(), &db).expect_err("no store");
    assert!(format!("{e:#}").contains("no store at"), "{e:#}");
    Store::open(&db).expect("create");
    let e = cli_trace::run(args(), &db).expect_err("no trace");
    assert!(
        format!("{e:#}").contains("no trace stored for job 'nope'"),
        "{e:#}"
    );
}

#[test]
fn xml_checker_rejects_broken_documents() {
    assert!(parse_xml("<svg><g></svg>").is_err());
    assert!(parse_xml("<svg a=b/>").is_err());
    assert!(parse_xml("<svg>&nbsp;</svg>").is_err());
    assert!(
        parse_xml("<?xml version=\"1.0\"?><svg x='1'><!-- c --><t>a &amp; b</t></svg>").is_ok()
    );
}
