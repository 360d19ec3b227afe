//! Acceptance: a study survives kill -9. Real Mosquitto, the real model, the real
//! `edgewatt study run` binary and a daemon in its own process:
//! 1. `study run` is SIGKILLed after two finished runs (with the next run in flight);
//! 2. run again, and the daemon is SIGKILLed while it decodes one of the study's runs,
//!    then restarted: the study completes (the daemon's journal re-runs the cut-off job
//!    under the same id and answers it), no configuration × repetition twice; the
//!    broker is restarted while a later run decodes;
//! 3. a third `study run` runs nothing.
//!
//! The daemon's journal says every job of the study was started once (the cut-off
//! one twice) and succeeded.
//! A failing run stored with its error while the rest completes is tests/study_fleet.rs.

mod daemon_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::*;
use edgewatt::study::StudyDb;

const CHILD_ENV: &str = "EDGEWATT_TEST_RESUME_DAEMON_CONFIG";
const DEV: &str = "board-k";

/// Not a test: the daemon process (this test binary re-run with `--ignored --exact
/// child_daemon`), so it can be killed without killing the test.
#[test]
#[ignore]
fn child_daemon() {
    run_child_daemon(CHILD_ENV);
}

fn spawn_daemon(config_path: &Path) -> Child {
    spawn_child_daemon(CHILD_ENV, config_path)
}

/// `edgewatt study run --json`: the child and a channel of its output lines.
fn spawn_study(cfg: &Path, db: &Path, plan: &Path) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgewatt"))
        .arg("--config")
        .arg(cfg)
        .args(["study", "run", "--json", "--db"])
        .arg(db)
        .arg(plan)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            t0.elapsed() < timeout,
            "study run did not finish within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_study_and_killed_daemon_resume_with_no_run_twice() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let dcfg = daemon_config(&broker.url(), DEV, &state);
    let dcfg_path = dir.path().join("daemon.json");
    std::fs::write(&dcfg_path, serde_json::to_string(&dcfg).unwrap()).unwrap();
    let cli_cfg = dir.path().join("edgewatt.toml");
    std::fs::write(&cli_cfg, format!("[mqtt]\nurl = \"{}\"\n", broker.url())).unwrap();
    // 2 configurations × 3 repetitions; runs long enough (96 tokens, 1 thread) to be
    // caught decoding.
    let plan = dir.path().join("resume.toml");
    std::fs::write(
        &plan,
        format!(
            "[study]\nname = \"resume\"\nseed = 3\nrepetitions = {{ min = 3, max = 3 }}\n\
             [axes]\ndevice = [\"{DEV}\"]\nmodel = [\"{MODEL}\"]\nthreads = [1]\n\
             prompt_tokens = [16, 32]\ngen_tokens = [96]\nn_ctx = [256]\n"
        ),
    )
    .unwrap();
    let db = dir.path().join("resume.study.db");

    let mut watch = Client::connect(
        &broker.url(),
        &[
            &format!("{P}/{DEV}/status"),
            &format!("{P}/{DEV}/job/+/status"),
        ],
        false,
    )
    .await;
    let mut daemon = spawn_daemon(&dcfg_path);
    wait_online(&mut watch, P, DEV).await;

    // 1. study run killed after two finished runs.
    let (mut study, lines) = spawn_study(&cli_cfg, &db, &plan);
    let mut finished = Vec::new();
    while finished.len() < 2 {
        let l = lines
            .recv_timeout(Duration::from_secs(240))
            .expect("a finished run");
        finished.push(l);
    }
    study.kill().unwrap(); // SIGKILL
    study.wait().unwrap();
    let stored = StudyDb::open(&db).unwrap().runs().unwrap();
    assert!(
        stored.len() >= 2,
        "the finished runs are stored: {}",
        stored.len()
    );

    // 2. Re-run; the daemon is killed while decoding one of the study's runs.
    // Statuses so far are recorded before the mark (later arrivals count as new).
    watch.pump(Duration::from_millis(300)).await;
    let rerun = Instant::now();
    let (mut study, lines) = spawn_study(&cli_cfg, &db, &plan);
    let decoding = watch
        .wait_for(Duration::from_secs(240), "a study run decoding", |m| {
            m.at > rerun && m.topic.contains("/job/st-") && m.json()["phase"] == "decode"
        })
        .await;
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();
    let cut_id = decoding.json()["id"].as_str().unwrap().to_string();
    let killed = Instant::now();
    watch
        .wait_for(Duration::from_secs(10), "Will: offline", |m| {
            m.at >= killed
                && m.topic == format!("{P}/{DEV}/status")
                && m.json()["state"] == "offline"
        })
        .await;
    let restarted = Instant::now();
    let mut daemon = spawn_daemon(&dcfg_path);
    // The broker goes away while a later run decodes (the study's client, the daemon's
    // session and outbox reconnect; a result not seen is re-asked after 30 s).
    watch
        .wait_for(Duration::from_secs(240), "a later run decoding", |m| {
            m.at > restarted && m.topic.contains("/job/st-") && m.json()["phase"] == "decode"
        })
        .await;
    broker.restart();
    let status = tokio::task::spawn_blocking(move || {
        let s = wait_exit(&mut study, Duration::from_secs(600));
        (s, lines.try_iter().collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "the resumed study completes: {:?}",
        status.0
    );
    finished.extend(status.1);

    // 3. Nothing left to run.
    let (mut study, lines) = spawn_study(&cli_cfg, &db, &plan);
    let s = tokio::task::spawn_blocking(move || wait_exit(&mut study, Duration::from_secs(120)))
        .await
        .unwrap();
    assert!(s.success());
    assert_eq!(lines.try_iter().count(), 0, "a complete study runs nothing");
    watch.pump(Duration::from_secs(1)).await;

    // The database: every configuration × repetition once, all succeeded.
    let runs = StudyDb::open(&db).unwrap().runs().unwrap();
    assert_eq!(runs.len(), 6, "2 configurations × 3 repetitions");
    let keys: BTreeSet<_> = runs
        .iter()
        .map(|r| (r.config_hash.clone(), r.repetition))
        .collect();
    assert_eq!(keys.len(), 6);
    let ids: BTreeSet<_> = runs.iter().map(|r| r.job_id.clone()).collect();
    assert_eq!(ids.len(), 6, "one job id per run");
    for r in &runs {
        let res = r
            .result
            .as_ref()
            .unwrap_or_else(|| panic!("{} failed: {:?}", r.job_id, r.error));
        assert_eq!(res["tokens"]["generated"], 96, "{}", r.job_id);
        assert_eq!(
            res["tokens"]["prompt"], r.configuration.prompt_tokens,
            "{}",
            r.job_id
        );
    }
    assert!(ids.contains(&cut_id), "the cut-off run is stored: {cut_id}");

    // On the board (its journal, after a graceful stop): each job succeeded, started
    // once; the cut-off one twice.
    unsafe {
        libc::kill(daemon.id() as i32, libc::SIGTERM);
    }
    assert!(daemon.wait().unwrap().success());
    let journal = rusqlite::Connection::open(state.join("edgewatt.db")).unwrap();
    let mut q = journal
        .prepare("SELECT id, state, attempts FROM journal WHERE id LIKE 'st-%'")
        .unwrap();
    let jobs: BTreeMap<String, (String, i64)> = q
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        jobs.keys().cloned().collect::<BTreeSet<_>>(),
        ids,
        "{jobs:?}"
    );
    for (id, (state, attempts)) in &jobs {
        assert_eq!(state, "succeeded", "{id}");
        let expected = if *id == cut_id { 2 } else { 1 };
        assert_eq!(
            *attempts, expected,
            "{id} started {attempts} times: {jobs:?}"
        );
    }
    // The --json lines name each run once (a run answered twice would print twice).
    let printed: Vec<String> = finished
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["job_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let distinct: BTreeSet<_> = printed.iter().collect();
    assert_eq!(distinct.len(), printed.len(), "{printed:?}");
    watch.close().await;
}
