//! Acceptance: a study over a real Mosquitto on two in-process daemons standing for
//! two boards (different simulated power profiles), the real models. Board b lacks
//! Gemma (its runs fail with `model_not_found`, are stored with the error, and the
//! rest completes). The study is stopped mid-way and run again: complete, no run twice.

mod daemon_support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use daemon_support::*;
use edgewatt::jobs::client::{Client, ClientOptions};
use edgewatt::study::expand::expand;
use edgewatt::study::plan::{parse, LoadedPlan};
use edgewatt::study::remote::RemoteBoard;
use edgewatt::study::run::{run_study, Board, Event, RunOptions};
use edgewatt::study::StudyDb;
use tokio_util::sync::CancellationToken;

const GEMMA: &str = "gemma-3-270m-q4_k_m";

fn plan(models: &[&str]) -> LoadedPlan {
    let models: Vec<String> = models.iter().map(|m| format!("\"{m}\"")).collect();
    let text = format!(
        "[study]\nname = \"fleet\"\nseed = 5\nrepetitions = {{ min = 2, max = 2 }}\n\
         [axes]\ndevice = [\"board-a\", \"board-b\"]\nmodel = [{}]\nthreads = [1, 2]\n\
         prompt_tokens = [32, 128]\ngen_tokens = [32]\nn_ctx = [256]\n",
        models.join(", ")
    );
    LoadedPlan {
        sha256: "0123456789abcdef".repeat(4),
        plan: parse(&text).unwrap(),
        text,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_study_on_two_boards_completes_resumes_and_stores_failures() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let mut models = vec![MODEL];
    if model_dir().join(format!("{GEMMA}.gguf")).exists() {
        models.push(GEMMA);
    } else {
        eprintln!("{GEMMA}.gguf not in models/: SmolLM2 only, and no failing runs");
    }
    // Board a: the real model directory. Board b: only SmolLM2 (hard link).
    let a_cfg = daemon_config(&broker.url(), "board-a", &dir.path().join("a"));
    let b_models = dir.path().join("b-models");
    std::fs::create_dir_all(&b_models).unwrap();
    let smol = format!("{MODEL}.gguf");
    std::fs::hard_link(model_dir().join(&smol), b_models.join(&smol))
        .or_else(|_| std::fs::copy(model_dir().join(&smol), b_models.join(&smol)).map(|_| ()))
        .unwrap();
    let mut b_cfg = daemon_config(&broker.url(), "board-b", &dir.path().join("b"));
    b_cfg.models.dir = b_models;
    // A different power profile for board b.
    b_cfg.power.sensors = vec![toml::from_str(
        r#"
        kind = "sim"
        chip = "ina219"
        shunt_ohms = 0.1
        max_current_a = 3.2
        rate_hz = 200.0
        rails = ["VDD_IN"]
        total = true
        load = [{ source = "cpu", idle_w = 4.0, max_w = 11.0, bus_v = 5.0 }]
        "#,
    )
    .unwrap()];
    for d in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let da = InProcessDaemon::start(a_cfg.clone());
    let db_ = InProcessDaemon::start(b_cfg);
    let mut watch =
        daemon_support::Client::connect(&broker.url(), &["edgewatt/+/status"], false).await;
    wait_online(&mut watch, "edgewatt", "board-a").await;
    wait_online(&mut watch, "edgewatt", "board-b").await;

    let opts = ClientOptions::from_config(&a_cfg).unwrap();
    let mut status_client = Client::connect(&ClientOptions {
        board_statuses: true,
        ..opts.clone()
    })
    .await
    .unwrap();
    let statuses = status_client
        .read_statuses(Duration::from_secs(1))
        .await
        .clone();
    status_client.close().await;
    let status = |d: &str| serde_json::to_value(&statuses[d]).unwrap();
    let a = RemoteBoard::connect(
        &opts,
        "board-a",
        status("board-a"),
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    let b = RemoteBoard::connect(
        &opts,
        "board-b",
        status("board-b"),
        Duration::from_secs(600),
    )
    .await
    .unwrap();

    let loaded = plan(&models);
    let cfgs = expand(&loaded.plan).unwrap();
    let db_path = dir.path().join("fleet.study.db");
    let (loaded2, cfgs2, db_path2) = (loaded.clone(), cfgs.clone(), db_path.clone());
    let (a, b) = tokio::task::spawn_blocking(move || {
        run_three_passes(&a, &b, &loaded2, &cfgs2, &db_path2);
        (a, b)
    })
    .await
    .unwrap();

    let db = StudyDb::open(&db_path).unwrap();
    let runs = db.runs().unwrap();
    let ids: BTreeSet<&str> = runs.iter().map(|r| r.job_id.as_str()).collect();
    assert_eq!(ids.len(), runs.len(), "one job per stored run");
    for c in &cfgs {
        let mine: Vec<_> = runs.iter().filter(|r| r.configuration == *c).collect();
        if c.device == "board-b" && c.model == GEMMA {
            assert_eq!(mine.len(), 1, "a failure stops its configuration: {c:?}");
            assert_eq!(mine[0].error.as_ref().unwrap().code, "model_not_found");
            continue;
        }
        assert_eq!(mine.len(), 2, "n >= 2 for {c:?}");
        for r in mine {
            let res = r.result.as_ref().expect("succeeded");
            assert_eq!(res["tokens"]["prompt"], c.prompt_tokens, "{c:?}");
            assert_eq!(res["tokens"]["generated"], c.gen_tokens, "{c:?}");
            assert_eq!(res["device"], c.device.as_str());
            assert_eq!(res["energy"]["simulated"], true);
            let rail = if c.device == "board-a" {
                "5V_IN"
            } else {
                "VDD_IN"
            };
            assert_eq!(res["energy"]["rails"][0]["name"], rail);
        }
    }
    let boards = db.boards().unwrap();
    assert_eq!(boards.len(), 2);
    assert_eq!(db.plan().unwrap().2, "fleet");

    a.close().await;
    b.close().await;
    watch.close().await;
    da.stop().await.unwrap();
    db_.stop().await.unwrap();
    drop(broker);
}

/// Stopped after 5 finished runs (a kill of `study run` between runs), run again to
/// the end, run a third time (nothing left).
fn run_three_passes(
    a: &RemoteBoard,
    b: &RemoteBoard,
    loaded2: &LoadedPlan,
    cfgs2: &[edgewatt::study::Configuration],
    db_path2: &std::path::Path,
) {
    let boards: Vec<&dyn Board> = vec![a, b];
    // First pass: stopped after 5 finished runs (a kill of `study run` between runs).
    let cancel = CancellationToken::new();
    let seen = AtomicU32::new(0);
    let stop = |ev: &Event| {
        if let Event::Run(_) = ev {
            if seen.fetch_add(1, Ordering::SeqCst) + 1 >= 5 {
                cancel.cancel();
            }
        }
    };
    let first = run_study(
        loaded2,
        cfgs2,
        db_path2,
        &boards,
        RunOptions::default(),
        &stop,
        &cancel,
    )
    .unwrap();
    assert!(
        first.runs >= 5 && first.runs < 7,
        "stopped early: {first:?}"
    );
    // Second pass: continues to the end.
    let cancel = CancellationToken::new();
    let second = run_study(
        loaded2,
        cfgs2,
        db_path2,
        &boards,
        RunOptions::default(),
        &|_| {},
        &cancel,
    )
    .unwrap();
    assert!(second.runs > 0);
    // Third: nothing left.
    let third = run_study(
        loaded2,
        cfgs2,
        db_path2,
        &boards,
        RunOptions::default(),
        &|_| {},
        &cancel,
    )
    .unwrap();
    assert_eq!(third.runs, 0, "nothing run twice");
}
