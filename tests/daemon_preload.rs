//! `models.preload`: the model is loaded before the board says `online`, so the first
//! job's result reports no load time; a name that does not load stops the start with
//! an error naming the key. Real Mosquitto, real model.
//!
//! `cargo test --release --test daemon_preload`

mod daemon_support;

use std::time::Duration;

use daemon_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preloaded_model_serves_the_first_job_without_loading() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let dev = "preload";
    let mut cfg = daemon_config(&broker.url(), dev, state.path());
    cfg.models.preload = vec![MODEL.into()];
    cfg.power.thermal_interval_ms = 0;
    let reply = "test/reply/preload";
    let mut c = Client::connect(&broker.url(), &[reply, &format!("{P}/{dev}/status")], false).await;
    let daemon = InProcessDaemon::start(cfg);
    wait_online(&mut c, P, dev).await;

    c.submit_job(P, dev, job("first", 4), reply, b"first").await;
    let r = c
        .wait_reply(Duration::from_secs(120), "result", reply, b"first")
        .await;
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(r["timings"]["load_ms"], 0.0, "loaded before the job: {r}");
    assert_eq!(r["tokens"]["generated"], 4, "{r}");

    c.close().await;
    daemon.stop().await.expect("daemon stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_of_a_missing_model_stops_the_start() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(&broker.url(), "preload-bad", state.path());
    cfg.models.preload = vec!["no-such-model".into()];
    cfg.power.thermal_interval_ms = 0;
    let daemon = InProcessDaemon::start(cfg);
    let err = tokio::time::timeout(Duration::from_secs(60), daemon.stop())
        .await
        .expect("the start fails promptly")
        .expect_err("a missing preload model is an error");
    let text = format!("{err:#}");
    assert!(
        text.contains("models.preload") && text.contains("no-such-model"),
        "{text}"
    );
}
