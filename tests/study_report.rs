//! The study report on real results (tests/fixtures/study: result JSONs captured
//! from `edgewatt generate --json --trace` on SmolLM2-135M with the simulated INA219
//! of scripts/demo.sh, boards `sim-a` and `sim-b` with different power profiles).
//!
//! - every number in the JSON and CSV equals what this test recomputes from the runs;
//! - the SVG figures are valid XML with the expected series;
//! - the HTML page, opened in headless Chromium, renders every figure (screenshots
//!   decoded: not one colour, the figure's series colours present) with no console errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use edgewatt::study::cost::CostConfig;
use edgewatt::study::report::{self, figures, html, StudyMeta};
use edgewatt::study::{Configuration, StoredRun};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/study")
}

fn runs() -> Vec<StoredRun> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            let result: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            let device = if stem.starts_with("runb_") {
                "sim-b"
            } else {
                "sim-a"
            };
            let configuration = Configuration {
                device: device.into(),
                model: result["model"]["name"].as_str().unwrap().into(),
                threads: Some(result["params"]["threads"].as_u64().unwrap() as u32),
                prompt_tokens: result["tokens"]["prompt"].as_u64().unwrap() as u32,
                gen_tokens: 24,
                depth: 0,
                n_ctx: result["params"]["n_ctx"].as_u64().unwrap() as u32,
                batch: None,
                n_gpu_layers: 0,
                power_mode: None,
                quality: None,
            };
            let rep: u32 = stem.rsplit('r').next().unwrap().parse().unwrap();
            StoredRun {
                config_hash: configuration.hash(),
                configuration,
                repetition: rep,
                job_id: result["id"].as_str().unwrap().into(),
                stored_unix_ns: result["finished_unix_ns"].as_u64().unwrap(),
                result: Some(result),
                error: None,
            }
        })
        .collect()
}

fn meta() -> StudyMeta {
    StudyMeta {
        name: "fixtures".into(),
        plan_sha256: "ab".repeat(32),
        cost: Some(CostConfig {
            energy_price_per_kwh: 0.30,
            currency: "EUR".into(),
            board_price: Some(80.0),
            board_lifetime_h: Some(20_000.0),
            utilization: 0.5,
            cloud_price_per_mtok: Some(0.60),
        }),
        board_status: Default::default(),
    }
}

fn close(a: f64, b: f64) {
    // Relative 1e-9, and absolute 1e-12 for values that are round-off (an sd of equal values).
    assert!((a - b).abs() <= (1e-9 * b.abs()).max(1e-12), "{a} vs {b}");
}

/// Reads a number at a JSON pointer of a result.
fn at(r: &Value, p: &str) -> f64 {
    r.pointer(p)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{p}"))
}

#[test]
fn json_and_csv_numbers_equal_a_recomputation_from_the_runs() {
    let rs = runs();
    assert_eq!(rs.len(), 18);
    let rep = report::build(&meta(), &rs);
    let json: Value = serde_json::from_str(&report::json::to_json(&rep)).unwrap();

    // The contract's shape.
    assert_eq!(json["study"]["name"], "fixtures");
    assert_eq!(json["study"]["plan_sha256"], "ab".repeat(32));
    assert_eq!(json["runs"], 18);
    let confs = json["configurations"].as_array().unwrap();
    assert_eq!(confs.len(), 6);
    for key in [
        "device",
        "model",
        "quant",
        "threads",
        "prompt_tokens",
        "gen_tokens",
        "depth",
        "n_ctx",
        "batch",
        "n_gpu_layers",
        "power_mode",
    ] {
        assert!(confs[0]["config"].get(key).is_some(), "config.{key}");
    }
    for key in [
        "n",
        "mean",
        "sd",
        "ci95_low",
        "ci95_high",
        "median",
        "cv",
        "min",
        "max",
        "outliers",
    ] {
        assert!(
            confs[0]["metrics"]["decode_tps"].get(key).is_some(),
            "decode_tps.{key}"
        );
    }

    // The CSV, parsed back by header name.
    let csv = report::csv::to_csv(&rep);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<BTreeMap<&str, &str>> = lines
        .map(|l| header.iter().copied().zip(l.split(',')).collect())
        .collect();
    assert_eq!(rows.len(), 6);

    // t(0.975, 2) for n = 3 (mpmath).
    const T_975_DF2: f64 = 4.302_652_729_749_464;
    for (c, row) in confs.iter().zip(&rows) {
        let k = &c["config"];
        let mine: Vec<&Value> = rs
            .iter()
            .filter(|r| {
                r.configuration.device == k["device"]
                    && Some(r.configuration.threads.unwrap() as u64) == k["threads"].as_u64()
                    && r.configuration.n_ctx as u64 == k["n_ctx"].as_u64().unwrap()
            })
            .filter_map(|r| r.result.as_ref())
            .collect();
        assert_eq!(mine.len(), 3);
        assert_eq!(c["n"], 3);
        // Exact token counts.
        for r in &mine {
            assert_eq!(r["tokens"]["generated"], 24);
            assert_eq!(r["tokens"]["prompt"].as_u64(), k["prompt_tokens"].as_u64());
        }
        for (metric, pointer) in [
            ("decode_tps", "/timings/decode_tps"),
            ("prefill_tps", "/timings/prefill_tps"),
            ("ttft_ms", "/timings/ttft_ms"),
            ("load_ms", "/timings/load_ms"),
            ("rss_peak_bytes", "/memory/rss_peak_bytes"),
            ("avg_w", "/energy/avg_w"),
            ("idle_w", "/energy/idle_w"),
            ("j_per_token_decode", "/energy/j_per_token/decode"),
            ("j_per_token_e2e", "/energy/j_per_token/e2e"),
            (
                "j_per_token_decode_net",
                "/energy/active_j_per_token/decode",
            ),
            ("j_per_token_e2e_net", "/energy/active_j_per_token/e2e"),
            ("tokens_per_j", "/energy/tokens_per_j"),
            ("energy_decode_j", "/energy/energy_j/decode"),
        ] {
            let v: Vec<f64> = mine.iter().map(|r| at(r, pointer)).collect();
            let mean = v.iter().sum::<f64>() / 3.0;
            let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let m = &c["metrics"][metric];
            close(m["mean"].as_f64().unwrap(), mean);
            close(m["sd"].as_f64().unwrap(), sd);
            close(
                m["ci95_high"].as_f64().unwrap(),
                mean + T_975_DF2 * sd / 3f64.sqrt(),
            );
            close(
                m["ci95_low"].as_f64().unwrap(),
                mean - T_975_DF2 * sd / 3f64.sqrt(),
            );
            close(m["median"].as_f64().unwrap(), sorted[1]);
            close(m["min"].as_f64().unwrap(), sorted[0]);
            close(m["max"].as_f64().unwrap(), sorted[2]);
            close(m["cv"].as_f64().unwrap(), sd / mean);
            // CSV carries the same numbers.
            close(
                row[format!("{metric}_mean").as_str()].parse().unwrap(),
                mean,
            );
            close(row[format!("{metric}_sd").as_str()].parse().unwrap(), sd);
        }
        // EDP and cost from the e2e figures.
        let s_tok: Vec<f64> = mine
            .iter()
            .map(|r| {
                (at(r, "/energy/duration_s/prefill") + at(r, "/energy/duration_s/decode"))
                    / at(r, "/energy/tokens/generated")
            })
            .collect();
        let j_tok: Vec<f64> = mine
            .iter()
            .map(|r| at(r, "/energy/j_per_token/e2e"))
            .collect();
        let edp: f64 = s_tok.iter().zip(&j_tok).map(|(s, j)| s * j).sum::<f64>() / 3.0;
        close(c["metrics"]["edp"]["mean"].as_f64().unwrap(), edp);
        let (j, s) = (
            j_tok.iter().sum::<f64>() / 3.0,
            s_tok.iter().sum::<f64>() / 3.0,
        );
        let energy = j * 1e6 / 3.6e6 * 0.30;
        let board = 80.0 / (20_000.0 * 3600.0 * 0.5) * s * 1e6;
        close(c["cost"]["energy_per_mtok"].as_f64().unwrap(), energy);
        close(c["cost"]["board_per_mtok"].as_f64().unwrap(), board);
        close(
            c["cost"]["total_per_mtok"].as_f64().unwrap(),
            energy + board,
        );
        close(
            c["cost"]["vs_cloud"].as_f64().unwrap(),
            (energy + board) / 0.6,
        );
        close(row["cost_energy_per_mtok"].parse().unwrap(), energy);
        // Memory: model + KV at this n_ctx.
        let r0 = mine[0];
        assert_eq!(
            c["model_kv_bytes"].as_u64().unwrap(),
            r0["memory"]["model_bytes"].as_u64().unwrap()
                + r0["memory"]["kv_bytes"].as_u64().unwrap()
        );
        assert_eq!(c["model_size_bytes"], r0["model"]["size_bytes"]);
        assert!(c["flags"]
            .as_array()
            .unwrap()
            .contains(&Value::from("simulated")));
    }
    // KV grows with n_ctx on the same board and model.
    let kv = |ctx: u64| {
        confs
            .iter()
            .find(|c| c["config"]["device"] == "sim-a" && c["config"]["n_ctx"] == ctx)
            .unwrap()["kv_bytes"]
            .as_u64()
            .unwrap()
    };
    assert!(kv(2048) > kv(512));
}

/// All text of an SVG document, for finding legend entries and titles.
fn svg_texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("figure is valid XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.tag_name().name() == "text")
        .map(|n| n.text().unwrap_or_default().trim().to_string())
        .collect()
}

#[test]
fn figures_are_valid_svg_with_the_expected_series() {
    let rep = report::build(&meta(), &runs());
    let figs = figures::all(&rep).unwrap();
    let names: Vec<&str> = figs.iter().map(|f| f.name).collect();
    assert_eq!(names, ["pareto", "threads", "memory", "energy_phases"]);
    let expected: [(&str, &[&str]); 4] = [
        (
            "pareto",
            &["sim-a", "sim-a Pareto front", "sim-b", "sim-b Pareto front"],
        ),
        ("threads", &[]),
        (
            "memory",
            &[
                "weights",
                "KV cache",
                "512",
                "2048",
                "SmolLM2-135M-Instruct.Q4_1",
            ],
        ),
        ("energy_phases", &["load", "prefill", "decode"]),
    ];
    for (f, (name, series)) in figs.iter().zip(expected) {
        assert_eq!(f.name, name);
        let texts = svg_texts(&f.svg);
        assert!(
            texts.iter().any(|t| t.contains("SIMULATED")),
            "{name}: title"
        );
        for s in series {
            assert!(
                texts.iter().any(|t| t == s),
                "{name}: no '{s}' in {texts:?}"
            );
        }
        for s in &f.series {
            assert!(
                texts.iter().any(|t| t == s),
                "{name}: series '{s}' not drawn"
            );
        }
    }
    // Thread scaling: one line per model × device (× n_ctx, which varies on sim-a).
    let threads = &figs[1];
    assert_eq!(threads.series.len(), 3, "{:?}", threads.series);
    assert!(threads.series.iter().any(|s| s.starts_with("sim-b")));
    let texts = svg_texts(&threads.svg);
    assert!(texts.iter().any(|t| t == "threads"));
    assert!(
        texts.iter().any(|t| t.contains("tokens/s")) && texts.iter().any(|t| t.contains("J/token"))
    );
    // Pareto: one point per configuration (plus the two legend markers).
    let doc = roxmltree::Document::parse(&figs[0].svg).unwrap();
    let circles = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "circle")
        .count();
    assert_eq!(circles, 6 + 2);
    // Energy per phase: three stacked bars per configuration.
    let doc = roxmltree::Document::parse(&figs[3].svg).unwrap();
    let bar_fill = |rgb: &str| {
        doc.descendants()
            .filter(|n| n.tag_name().name() == "rect" && n.attribute("fill") == Some(rgb))
            .count()
    };
    assert_eq!(bar_fill("#E69F00"), 6 + 1, "load bars + legend");
    assert_eq!(bar_fill("#009E73"), 6 + 1, "decode bars + legend");
}

/// Headless Chromium, run the way the brief says (root, no sandbox, no network).
fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run /usr/bin/chromium (Debian's chromium package)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Decodes a PNG into RGB pixels.
fn pixels(path: &Path) -> Vec<[u8; 3]> {
    let dec = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    buf[..info.buffer_size()]
        .chunks(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect()
}

fn no_console_errors(stderr: &[u8]) {
    let log = String::from_utf8_lossy(stderr);
    for line in log.lines() {
        let console_error = line.contains("CONSOLE") && line.to_lowercase().contains("error");
        assert!(
            !console_error && !line.contains("Uncaught"),
            "console error: {line}"
        );
    }
}

#[test]
fn html_renders_every_figure_in_headless_chromium() {
    let rep = report::build(&meta(), &runs());
    let figs = figures::all(&rep).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let html_text = html::to_html(&rep, &figs);
    // Self-contained: nothing to fetch (the SVG namespace URI is a name, not a fetch).
    for fetch in ["<script", "<link", "<img", "src=", "@import", "url("] {
        assert!(!html_text.contains(fetch), "page contains '{fetch}'");
    }
    std::fs::write(&page, &html_text).unwrap();
    let url = format!("file://{}", page.display());

    // The DOM Chromium built has every figure as an inline SVG.
    let dom = chromium(&["--dump-dom"], &url);
    no_console_errors(&dom.stderr);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom_text.matches("<svg").count(), figs.len());
    for f in &figs {
        assert!(dom_text.contains(&format!("id=\"fig-{}\"", f.name)));
    }

    // The page's screenshot is not blank.
    let shot = dir.path().join("page.png");
    let out = chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,2000",
        ],
        &url,
    );
    no_console_errors(&out.stderr);
    let px = pixels(&shot);
    assert!(
        px.iter().any(|p| *p != px[0]),
        "page screenshot is one colour"
    );

    // Each figure, on a page of its own, renders its series' colours.
    let colours: [(&str, &[[u8; 3]]); 4] = [
        ("pareto", &[[0, 114, 178], [213, 94, 0]]),
        ("threads", &[[0, 114, 178], [213, 94, 0], [0, 158, 115]]),
        ("memory", &[[0, 114, 178], [213, 94, 0]]),
        ("energy_phases", &[[230, 159, 0], [0, 158, 115]]),
    ];
    for (f, (name, want)) in figs.iter().zip(colours) {
        assert_eq!(f.name, name);
        let p = dir.path().join(format!("{name}.html"));
        std::fs::write(&p, html::figure_page(f)).unwrap();
        let shot = dir.path().join(format!("{name}.png"));
        let out = chromium(
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1200,700",
            ],
            &format!("file://{}", p.display()),
        );
        no_console_errors(&out.stderr);
        let px = pixels(&shot);
        assert!(px.iter().any(|p| *p != px[0]), "{name}: blank");
        for c in want {
            let n = px.iter().filter(|p| *p == c).count();
            assert!(n > 20, "{name}: colour {c:?} drawn on {n} pixels");
        }
    }
    // EDGEWATT_KEEP_REPORT=DIR keeps the page and its screenshots to look at.
    if let Some(keep) = std::env::var_os("EDGEWATT_KEEP_REPORT") {
        std::fs::create_dir_all(&keep).unwrap();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, Path::new(&keep).join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn report_and_compare_read_the_study_database() {
    use edgewatt::cli::study_report::{
        compare, database_path, load_report, report, CompareArgs, Format, ReportArgs,
    };
    use edgewatt::study::StudyDb;

    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("fixtures.toml");
    let plan_text = "[study]\nname = \"fixtures\"\n\n[cost]\nenergy_price_per_kwh = 0.30\ncurrency = \"EUR\"\nboard_price = 80.0\nboard_lifetime_h = 20000.0\nutilization = 0.5\ncloud_price_per_mtok = 0.60\n";
    std::fs::write(&plan, plan_text).unwrap();
    let db_path = database_path(&plan).unwrap();
    assert_eq!(db_path, dir.path().join("fixtures.study.db"));
    let db = StudyDb::open(&db_path).unwrap();
    db.set_plan(plan_text, &"ab".repeat(32), "fixtures")
        .unwrap();
    db.record_board(
        "sim-a",
        &serde_json::json!({"device": "sim-a", "version": "0.1.0"}),
    )
    .unwrap();
    let rs = runs();
    for r in &rs {
        assert!(db.put_run(r).unwrap());
    }
    drop(db);

    // The report from the database is the report of its runs.
    let from_db = load_report(&plan).unwrap();
    let direct = report::build(&meta(), &rs);
    assert_eq!(from_db.configurations, direct.configurations);
    assert_eq!(from_db.study.cost, direct.study.cost);
    assert_eq!(from_db.study.board_status["sim-a"]["version"], "0.1.0");

    for format in [Format::Md, Format::Csv, Format::Json, Format::Html] {
        let out = dir.path().join("out");
        report(&ReportArgs {
            input: db_path.clone(),
            format,
            out: Some(out.clone()),
        })
        .unwrap();
        let ext = match format {
            Format::Md => "md",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Html => "html",
        };
        let text = std::fs::read_to_string(out.join(format!("report.{ext}"))).unwrap();
        assert!(!text.is_empty());
        if format == Format::Json {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["configurations"].as_array().unwrap().len(), 6);
        }
    }
    for name in ["pareto", "threads", "memory", "energy_phases"] {
        let svg = std::fs::read_to_string(dir.path().join(format!("out/fig_{name}.svg"))).unwrap();
        roxmltree::Document::parse(&svg).unwrap();
    }
    compare(&CompareArgs {
        a: plan.clone(),
        b: db_path.clone(),
        threshold: 0.02,
        json: false,
    })
    .unwrap();
    let e = compare(&CompareArgs {
        a: plan.clone(),
        b: db_path,
        threshold: -1.0,
        json: true,
    })
    .unwrap_err();
    assert!(e.to_string().contains("--threshold is '-1'"));
    let missing = load_report(&dir.path().join("nope.study.db")).unwrap_err();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
}
