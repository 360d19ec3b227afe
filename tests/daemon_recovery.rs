//! No lost jobs: the daemon killed with SIGKILL mid-job and restarted, and the broker
//! restarted mid-job. Real Mosquitto, real model.
//!
//! `cargo test --release --test daemon_recovery`

mod daemon_support;

use std::process::Child;
use std::time::Duration;

use daemon_support::*;
use serde_json::json;

const CHILD_ENV: &str = "EDGEWATT_TEST_DAEMON_CONFIG";

/// Not a test: the daemon process the kill -9 test starts (this test binary re-run
/// with `--ignored --exact child_daemon`), so it can be killed without killing the test.
#[test]
#[ignore]
fn child_daemon() {
    run_child_daemon(CHILD_ENV);
}

fn spawn_child(config_path: &std::path::Path) -> Child {
    spawn_child_daemon(CHILD_ENV, config_path)
}

fn long_job(id: &str, tokens: u32) -> String {
    json!({"id": id, "model": MODEL, "prompt": "Count: 1, 2, 3,", "max_tokens": tokens,
           "ignore_eos": true, "n_ctx": 1024, "threads": 1})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_job_then_restart_completes_the_job_once() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let dev = "crashy";
    let cfg = daemon_config(&broker.url(), dev, state.path());
    let cfg_path = state.path().join("config.json");
    std::fs::write(&cfg_path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let reply = "test/reply/crash";
    let mut c = Client::connect(&broker.url(), &[&format!("{P}/{dev}/#"), reply], false).await;

    let mut child = spawn_child(&cfg_path);
    wait_online(&mut c, P, dev).await;
    c.submit_job(P, dev, long_job("crash-1", 400), reply, b"crash-1")
        .await;
    let s1 = format!("{P}/{dev}/job/crash-1/status");
    c.wait_for(Duration::from_secs(60), "crash-1 decoding", |m| {
        m.topic == s1 && m.json()["phase"] == "decode"
    })
    .await;
    // A second job waits in the queue (accepted, acked) when the daemon dies.
    c.submit_job(P, dev, long_job("crash-2", 4), reply, b"crash-2")
        .await;
    let s2 = format!("{P}/{dev}/job/crash-2/status");
    c.wait_for(Duration::from_secs(10), "crash-2 accepted", |m| {
        m.topic == s2 && m.json()["state"] == "accepted"
    })
    .await;

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The broker publishes our Will.
    let st = format!("{P}/{dev}/status");
    c.wait_for(Duration::from_secs(10), "Will: offline", |m| {
        m.topic == st && m.json()["state"] == "offline"
    })
    .await;

    let mut child = spawn_child(&cfg_path);
    for id in ["crash-1", "crash-2"] {
        let r = c
            .wait_reply(
                Duration::from_secs(240),
                &format!("{id} result after restart"),
                reply,
                id.as_bytes(),
            )
            .await;
        assert_eq!(r["state"], "succeeded", "{id}: {r}");
    }
    c.pump(Duration::from_secs(2)).await;
    // Completed once: one result, one `succeeded`.
    for id in ["crash-1", "crash-2"] {
        let results = c
            .msgs
            .iter()
            .filter(|m| m.is_reply(reply, id.as_bytes()))
            .count();
        assert_eq!(results, 1, "{id}: exactly one result reached the submitter");
        let succeeded = c
            .on(&format!("{P}/{dev}/job/{id}/status"))
            .iter()
            .filter(|s| s["state"] == "succeeded")
            .count();
        assert_eq!(succeeded, 1, "{id}: one succeeded status");
    }
    // crash-1 ran twice (interrupted, then re-run once); crash-2 once.
    let starts = |id: &str| {
        c.on(&format!("{P}/{dev}/job/{id}/status"))
            .iter()
            .filter(|s| s["state"] == "running" && s["phase"] == "load")
            .count()
    };
    assert_eq!(starts("crash-1"), 2);
    assert_eq!(starts("crash-2"), 1);

    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit after SIGTERM: {status:?}");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_job_result_arrives_after_reconnect() {
    let mut broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let dev = "bouncy";
    let daemon = InProcessDaemon::start(daemon_config(&broker.url(), dev, state.path()));
    let reply = "test/reply/bounce";
    // Persistent: the broker keeps our subscription (and queued messages) across its restart.
    let mut c = Client::connect(&broker.url(), &[&format!("{P}/{dev}/#"), reply], true).await;
    wait_online(&mut c, P, dev).await;

    c.submit_job(P, dev, long_job("bounce-1", 300), reply, b"bounce-1")
        .await;
    let s = format!("{P}/{dev}/job/bounce-1/status");
    c.wait_for(Duration::from_secs(60), "bounce-1 decoding", |m| {
        m.topic == s && m.json()["phase"] == "decode"
    })
    .await;
    broker.restart();
    let r = c
        .wait_reply(
            Duration::from_secs(180),
            "bounce-1 result after the broker restart",
            reply,
            b"bounce-1",
        )
        .await;
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(r["tokens"]["generated"], 300);
    // The daemon keeps working on the new connection.
    c.submit_job(P, dev, job("bounce-2", 2), reply, b"bounce-2")
        .await;
    let r = c
        .wait_reply(
            Duration::from_secs(60),
            "bounce-2 result",
            reply,
            b"bounce-2",
        )
        .await;
    assert_eq!(r["state"], "succeeded");
    daemon.stop().await.unwrap();
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_requeues_an_unfinished_job_and_the_next_start_runs_it() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let dev = "drainy";
    let cfg = daemon_config(&broker.url(), dev, state.path());
    let start = |cfg: &edgewatt::config::Config| {
        let mut settings = edgewatt::daemon::Settings::from_config(cfg).unwrap();
        settings.drain_timeout = Duration::from_millis(500);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(edgewatt::daemon::run_with(settings, async {
            let _ = rx.await;
        }));
        (tx, task)
    };
    let reply = "test/reply/drain";
    let mut c = Client::connect(&broker.url(), &[&format!("{P}/{dev}/#"), reply], false).await;
    let (stop, task) = start(&cfg);
    wait_online(&mut c, P, dev).await;
    c.submit_job(P, dev, long_job("drain-1", 500), reply, b"drain-1")
        .await;
    let s = format!("{P}/{dev}/job/drain-1/status");
    c.wait_for(Duration::from_secs(60), "drain-1 decoding", |m| {
        m.topic == s && m.json()["phase"] == "decode"
    })
    .await;

    // SIGTERM equivalent: draining, then offline; the job is not finished, not failed.
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let st = format!("{P}/{dev}/status");
    let states: Vec<String> = c
        .on(&st)
        .iter()
        .map(|v| v["state"].as_str().unwrap_or("").to_string())
        .collect();
    c.wait_for(Duration::from_secs(5), "offline", |m| {
        m.topic == st && m.json()["state"] == "offline"
    })
    .await;
    let all: Vec<String> = c
        .on(&st)
        .iter()
        .map(|v| v["state"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        all.iter().any(|s| s == "draining"),
        "draining announced: {states:?} / {all:?}"
    );
    assert!(
        !c.on(&s).iter().any(|v| v["state"]
            .as_str()
            .is_some_and(|x| x != "accepted" && x != "running")),
        "no terminal state before the restart"
    );

    // The next start runs it to the end.
    let (stop, task) = start(&cfg);
    let r = c
        .wait_reply(
            Duration::from_secs(180),
            "drain-1 result after restart",
            reply,
            b"drain-1",
        )
        .await;
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(r["tokens"]["generated"], 500);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    c.close().await;
}
