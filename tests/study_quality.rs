//! Acceptance: a `--local` study with a `[quality]` section on the real models, through
//! the binary. SmolLM2 Q4_1, a Q8_0 requantized from it here (`edgewatt quantize
//! --allow-requantize`, scored as `kld` against its Q4_1 source), and Gemma 3 when it is
//! in models/. Each model gets one quality run (stored like any run; a re-run adds
//! nothing), the report joins its score onto every configuration row of that model
//! (PPL equal to the stored result's, requantized rows marked), and the quality figure
//! draws one point per model × quant plus the Pareto front. Over MQTT: the quality run
//! goes to a real daemon through a real Mosquitto like any run.

mod daemon_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgewatt::study::report::{self, figures, StudyMeta};
use edgewatt::study::StudyDb;
use serde_json::Value;

const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1";
const REQ: &str = "smol-q8-requant";
const GEMMA: &str = "gemma-3-270m-q4_k_m";

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn edgewatt(config: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_edgewatt"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "edgewatt {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn link(model: &str, dir: &Path) {
    let f = format!("{model}.gguf");
    std::fs::hard_link(models_dir().join(&f), dir.join(&f))
        .or_else(|_| std::fs::copy(models_dir().join(&f), dir.join(&f)).map(|_| ()))
        .unwrap();
}

#[test]
fn a_local_study_scores_each_model_once_and_the_report_joins_the_scores() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    link(SMOL, &models);
    let mut names = vec![SMOL, REQ];
    if models_dir().join(format!("{GEMMA}.gguf")).exists() {
        link(GEMMA, &models);
        names.push(GEMMA);
    } else {
        eprintln!("{GEMMA}.gguf not in models/: SmolLM2 only");
    }
    let config = dir.path().join("edgewatt.toml");
    std::fs::write(
        &config,
        format!(
            "[models]\ndir = \"{}\"\n[store]\npath = \"{}\"\n[power]\nidle_window_ms = 100\n\
             [[power.sensors]]\nkind = \"sim\"\nchip = \"ina219\"\nshunt_ohms = 0.1\n\
             max_current_a = 3.2\nadc_bits = 12\nrails = [\"5V_IN\"]\ntotal = true\n\
             load = [{{ source = \"cpu\", idle_w = 2.5, max_w = 7.0, bus_v = 5.1 }}]\n",
            models.display(),
            dir.path().join("edgewatt.db").display()
        ),
    )
    .unwrap();
    edgewatt(
        &config,
        &[
            "quantize",
            SMOL,
            "--type",
            "Q8_0",
            "--out",
            REQ,
            "--allow-requantize",
        ],
    );

    let list: Vec<String> = names.iter().map(|m| format!("\"{m}\"")).collect();
    let plan = dir.path().join("q.toml");
    std::fs::write(
        &plan,
        format!(
            "[study]\nname = \"q\"\nrepetitions = {{ min = 1, max = 1 }}\n[axes]\n\
             device = [\"local\"]\nmodel = [{}]\nthreads = [1, 2]\nprompt_tokens = [16]\n\
             gen_tokens = [8]\nn_ctx = [128]\n[quality]\nn_ctx = 128\nmax_chunks = 2\n\
             reference = {{ \"{REQ}\" = \"{SMOL}\" }}\n",
            list.join(", ")
        ),
    )
    .unwrap();
    let plan_s = plan.to_str().unwrap();
    let dry = edgewatt(&config, &["study", "plan", "--local", plan_s]);
    let dry = String::from_utf8_lossy(&dry.stdout).to_string();
    let n = names.len();
    assert!(
        dry.contains(&format!("{} configurations + {n} quality runs", 2 * n)),
        "{dry}"
    );
    assert!(dry.contains("quality: kld on 'licenses'"), "{dry}");
    assert!(
        dry.contains(&format!("total: {} runs at least", 3 * n)),
        "{dry}"
    );

    let run = edgewatt(&config, &["study", "run", "--local", "--json", plan_s]);
    let lines: Vec<Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3 * n, "{lines:?}");
    assert!(lines.iter().all(|l| l["state"] == "succeeded"), "{lines:?}");
    // Resume: nothing is run twice.
    let again = edgewatt(&config, &["study", "run", "--local", "--json", plan_s]);
    assert!(String::from_utf8_lossy(&again.stdout).trim().is_empty());

    let db = StudyDb::open(&dir.path().join("q.study.db")).unwrap();
    let runs = db.runs().unwrap();
    assert_eq!(runs.len(), 3 * n);
    let stored = |model: &str| -> Value {
        let q: Vec<_> = runs
            .iter()
            .filter(|r| r.configuration.model == model && r.configuration.quality.is_some())
            .collect();
        assert_eq!(q.len(), 1, "one quality run of {model}");
        q[0].result.clone().unwrap()
    };
    let smol = stored(SMOL);
    assert_eq!(smol["quality"]["kind"], "perplexity");
    assert_eq!(smol["quality"]["chunks"], 2);
    assert_eq!(smol["quality"]["n_ctx"], 128);
    let req = stored(REQ);
    assert_eq!(req["quality"]["kind"], "kld");
    assert_eq!(req["quality"]["reference"], SMOL);
    assert!(req["model"]["requantized_from"].is_string(), "{req}");

    // The report through the binary (the JSON contract).
    let out = dir.path().join("report");
    edgewatt(
        &config,
        &[
            "study",
            "report",
            "--format",
            "json",
            "-o",
            out.to_str().unwrap(),
            plan_s,
        ],
    );
    let rep: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let rows = rep["configurations"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * n, "quality runs are not configuration rows");
    assert_eq!(rep["quality"].as_array().unwrap().len(), n);
    for row in rows {
        let model = row["config"]["model"].as_str().unwrap();
        let q = stored(model);
        assert_eq!(row["quality"]["ppl"], q["quality"]["ppl"], "{model}");
        assert_eq!(row["quality"]["ppl_stderr"], q["quality"]["ppl_stderr"]);
        assert_eq!(row["quality"]["result"], q["quality"]);
        let flags: Vec<&str> = row["flags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if model == REQ {
            let kld = row["quality"]["kld_mean"].as_f64().unwrap();
            assert!(kld >= 0.0 && kld.is_finite(), "{kld}");
            let top1 = q["quality"]["top1_agreement"].as_f64().unwrap();
            assert!(top1 > 0.0 && top1 <= 1.0, "{top1}");
            assert!(row["requantized_from"].is_string(), "{row}");
            assert!(flags.contains(&"requantized"), "{flags:?}");
            assert_eq!(row["quality"]["requantized_from"], row["requantized_from"]);
        } else {
            assert!(row["quality"]["kld_mean"].is_null());
            assert!(row["requantized_from"].is_null());
            assert!(!flags.contains(&"requantized"), "{flags:?}");
        }
    }

    // The CSV carries the score on every row of its model.
    let csv = edgewatt(&config, &["study", "report", "--format", "csv", plan_s]);
    let csv = String::from_utf8_lossy(&csv.stdout).to_string();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let mut csv_rows = 0;
    for l in lines {
        let cells: Vec<&str> = l.split(',').collect();
        let q = stored(cells[col("model")]);
        let ppl: f64 = cells[col("quality_ppl")].parse().unwrap();
        assert_eq!(ppl, q["quality"]["ppl"].as_f64().unwrap());
        assert_eq!(
            cells[col("requantized_from")].is_empty(),
            cells[col("model")] != REQ
        );
        csv_rows += 1;
    }
    assert_eq!(csv_rows, 2 * n);

    // The markdown table shows PPL ± and KLD; the quality figure one point per model ×
    // quant and the Pareto front.
    let md = edgewatt(&config, &["study", "report", plan_s]);
    let md = String::from_utf8_lossy(&md.stdout).to_string();
    assert!(md.contains("perplexity") && md.contains("KLD"), "{md}");
    let smol_ppl = smol["quality"]["ppl"].as_f64().unwrap();
    assert!(
        md.contains(&edgewatt::study::report::table::fmt_sig(smol_ppl, 4)),
        "{md}"
    );
    // The HTML page inlines the quality figure with its series.
    let html_dir = dir.path().join("html");
    edgewatt(
        &config,
        &[
            "study",
            "report",
            "--format",
            "html",
            "-o",
            html_dir.to_str().unwrap(),
            plan_s,
        ],
    );
    let html = std::fs::read_to_string(html_dir.join("report.html")).unwrap();
    assert!(
        html.contains("Energy per token against perplexity"),
        "no quality figure in the HTML"
    );
    assert!(
        html.contains(&format!("{REQ} Q8_0 (requantized)")),
        "{html}"
    );
    assert!(html_dir.join("fig_quality.svg").exists());
    let meta = StudyMeta {
        name: "q".into(),
        ..Default::default()
    };
    let built = report::build(&meta, &runs);
    let figs = figures::all(&built).unwrap();
    let fig = figs
        .iter()
        .find(|f| f.name == "quality")
        .expect("quality figure");
    let quant = |r: &Value| r["model"]["quant"].as_str().unwrap().to_string();
    let mut want = vec![
        format!("{SMOL} {}", quant(&smol)),
        format!("{REQ} {} (requantized)", quant(&req)),
    ];
    if n == 3 {
        want.push(format!("{GEMMA} {}", quant(&stored(GEMMA))));
    }
    want.sort();
    want.push("Pareto front".into());
    assert_eq!(fig.series, want);
    let doc = roxmltree::Document::parse(&fig.svg).unwrap();
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|d| d.tag_name().name() == "text")
        .filter_map(|d| d.text())
        .map(str::trim)
        .collect();
    for s in &fig.series {
        assert!(
            texts.contains(&s.as_str()),
            "series '{s}' not drawn: {texts:?}"
        );
    }
    let circles = doc
        .descendants()
        .filter(|d| d.tag_name().name() == "circle")
        .count();
    assert_eq!(
        circles,
        2 * n,
        "a point and a legend marker per model × quant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_mqtt_the_quality_run_is_a_daemon_job_stored_once() {
    use daemon_support::{daemon_config, wait_online, Broker, InProcessDaemon};
    use edgewatt::jobs::client::{Client, ClientOptions};
    use edgewatt::study::plan::{parse, LoadedPlan};
    use edgewatt::study::remote::RemoteBoard;
    use edgewatt::study::run::{run_study, Board, RunOptions};
    use tokio_util::sync::CancellationToken;

    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = daemon_config(&broker.url(), "board-q", dir.path());
    let daemon = InProcessDaemon::start(cfg.clone());
    let mut watch =
        daemon_support::Client::connect(&broker.url(), &["edgewatt/+/status"], false).await;
    wait_online(&mut watch, "edgewatt", "board-q").await;
    let opts = ClientOptions::from_config(&cfg).unwrap();
    let mut sc = Client::connect(&ClientOptions {
        board_statuses: true,
        ..opts.clone()
    })
    .await
    .unwrap();
    let statuses = sc.read_statuses(Duration::from_secs(1)).await.clone();
    sc.close().await;
    let status = serde_json::to_value(&statuses["board-q"]).unwrap();
    let board = RemoteBoard::connect(&opts, "board-q", status, Duration::from_secs(600))
        .await
        .unwrap();

    let text = format!(
        "[study]\nname = \"mq\"\nrepetitions = {{ min = 1, max = 1 }}\n[axes]\n\
         device = [\"board-q\"]\nmodel = [\"{SMOL}\"]\nthreads = [2]\nprompt_tokens = [16]\n\
         gen_tokens = [8]\nn_ctx = [128]\n[quality]\nn_ctx = 128\nmax_chunks = 2\n"
    );
    let loaded = LoadedPlan {
        sha256: "ab".repeat(32),
        plan: parse(&text).unwrap(),
        text,
    };
    let mut cfgs = edgewatt::study::expand::expand(&loaded.plan).unwrap();
    let q = edgewatt::study::quality::quality_runs(&loaded.plan, &cfgs);
    assert_eq!(q.len(), 1);
    cfgs.extend(q);
    let db_path = dir.path().join("mq.study.db");
    let db2 = db_path.clone();
    let board = tokio::task::spawn_blocking(move || {
        let boards: Vec<&dyn Board> = vec![&board];
        let cancel = CancellationToken::new();
        for pass in 0..2 {
            let s = run_study(
                &loaded,
                &cfgs,
                &db2,
                &boards,
                RunOptions::default(),
                &|_| {},
                &cancel,
            )
            .unwrap();
            assert_eq!((s.runs, s.failed), (if pass == 0 { 2 } else { 0 }, 0));
        }
        board
    })
    .await
    .unwrap();
    let runs = StudyDb::open(&db_path).unwrap().runs().unwrap();
    assert_eq!(runs.len(), 2);
    let qr = runs
        .iter()
        .find(|r| r.configuration.quality.is_some())
        .unwrap();
    let res = qr.result.as_ref().unwrap();
    assert_eq!(res["device"], "board-q");
    assert_eq!(res["quality"]["kind"], "perplexity");
    assert_eq!(res["quality"]["chunks"], 2);
    assert!(
        res["energy"]["j_per_token"].is_object(),
        "measured like any job: {res}"
    );
    let rep = report::build(&StudyMeta::default(), &runs);
    assert_eq!(rep.configurations.len(), 1);
    let row = rep.configurations[0].quality.as_ref().unwrap();
    assert_eq!(row.ppl, res["quality"]["ppl"].as_f64());
    assert_eq!(row.job_id, qr.job_id);

    board.close().await;
    watch.close().await;
    daemon.stop().await.unwrap();
    drop(broker);
}
