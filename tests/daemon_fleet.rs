//! A fleet: three daemons in one shared-subscription group, 60 jobs on the fleet
//! queue. Every job is answered, none runs twice. Real Mosquitto, real model.
//!
//! `cargo test --release --test daemon_fleet`

mod daemon_support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use daemon_support::*;
use serde_json::json;

const JOBS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_sixty_jobs_every_job_answered_none_twice() {
    let broker = Broker::start();
    let reply = "test/reply/fleet";
    let mut c = Client::connect(
        &broker.url(),
        &[
            reply,
            &format!("{P}/+/job/+/status"),
            &format!("{P}/+/status"),
        ],
        false,
    )
    .await;
    let mut states = Vec::new();
    let mut daemons = Vec::new();
    for dev in ["fleet-a", "fleet-b", "fleet-c"] {
        let state = tempfile::tempdir().unwrap();
        let mut cfg = daemon_config(&broker.url(), dev, state.path());
        cfg.mqtt.group = "testfleet".into();
        cfg.power.thermal_interval_ms = 0;
        daemons.push(InProcessDaemon::start(cfg));
        states.push(state);
    }
    for dev in ["fleet-a", "fleet-b", "fleet-c"] {
        wait_online(&mut c, P, dev).await;
    }

    for i in 0..JOBS {
        let id = format!("fleet-{i:03}");
        let job = json!({"id": id, "model": MODEL, "prompt": "Hi", "max_tokens": 1 + (i % 2), "threads": 1});
        c.publish(
            &format!("{P}/jobs"),
            job.to_string(),
            Some((reply, id.as_bytes())),
        )
        .await;
    }

    let mut answered: HashSet<String> = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while answered.len() < JOBS {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {JOBS} answered",
            answered.len()
        );
        c.pump(Duration::from_millis(500)).await;
        for m in c.msgs.iter().filter(|m| m.topic == reply) {
            answered.insert(
                String::from_utf8_lossy(m.correlation.as_deref().unwrap_or_default()).into_owned(),
            );
        }
    }
    c.pump(Duration::from_secs(2)).await;

    let mut results: HashMap<String, usize> = HashMap::new();
    let mut by_device: HashMap<String, usize> = HashMap::new();
    for m in c.msgs.iter().filter(|m| m.topic == reply) {
        let r = m.json();
        assert_eq!(r["state"], "succeeded", "{r}");
        *results
            .entry(r["id"].as_str().unwrap().to_string())
            .or_default() += 1;
        *by_device
            .entry(r["device"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(results.len(), JOBS, "every job answered");
    assert!(
        results.values().all(|&n| n == 1),
        "a job answered twice: {results:?}"
    );
    // None ran twice: one start (running, phase load) per job, across the fleet.
    let mut starts: HashMap<String, usize> = HashMap::new();
    for m in c
        .msgs
        .iter()
        .filter(|m| m.topic.contains("/job/") && m.topic.ends_with("/status"))
    {
        let s = m.json();
        if s["state"] == "running" && s["phase"] == "load" {
            *starts
                .entry(s["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(starts.len(), JOBS);
    assert!(
        starts.values().all(|&n| n == 1),
        "a job ran twice: {starts:?}"
    );
    eprintln!("jobs per board: {by_device:?}");
    assert_eq!(
        by_device.len(),
        3,
        "all three boards took jobs: {by_device:?}"
    );

    for d in daemons {
        d.stop().await.unwrap();
    }
    c.close().await;
}
