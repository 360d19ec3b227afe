//! No job lost in silence (issue 14): the board announces its limits in its retained
//! status; `edgewatt submit` refuses an oversize job before publishing it, naming
//! the limit; a payload the broker still delivers but over `limits.max_payload_bytes`
//! is rejected by the daemon with `payload_too_large`. Real Mosquitto, real model.
//!
//! `cargo test --release --test daemon_limits`

mod daemon_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatt");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_jobs_are_refused_by_submit_and_rejected_by_the_daemon() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let dev = "limits";
    let mut cfg = daemon_config(&broker.url(), dev, state.path());
    cfg.power.thermal_interval_ms = 0;
    let max_payload = cfg.limits.max_payload_bytes;
    let reply = "test/reply/limits";
    let mut c = Client::connect(&broker.url(), &[&format!("{P}/{dev}/#"), reply], false).await;
    let daemon = InProcessDaemon::start(cfg.clone());
    wait_online(&mut c, P, dev).await;

    // The retained status announces the limits.
    let st = format!("{P}/{dev}/status");
    let status = c.on(&st).into_iter().last().unwrap();
    let limits = &status["limits"];
    assert_eq!(limits["max_payload_bytes"], max_payload, "{status}");
    assert_eq!(limits["max_prompt_bytes"], cfg.limits.max_prompt_bytes);
    let max_packet = limits["max_packet_bytes"].as_u64().unwrap() as usize;
    assert!(max_packet > max_payload, "{status}");

    // A payload between the payload limit and the packet size reaches the daemon and
    // is rejected with `payload_too_large` (on the Response Topic: it has no usable id).
    let size = (max_payload + max_packet) / 2;
    let body = json!({"id": "big-raw", "model": MODEL, "prompt": "x".repeat(size)}).to_string();
    c.submit_job(P, dev, body, reply, b"big-raw").await;
    let r = c
        .wait_reply(
            Duration::from_secs(30),
            "payload_too_large",
            reply,
            b"big-raw",
        )
        .await;
    assert_eq!(r["error"]["code"], "payload_too_large", "{r}");

    // `edgewatt submit` with a 3 MB prompt (over the packet size: the broker would drop
    // it without a word) and with 300 KB (over the payload limit): refused before
    // publishing, fast, naming the limit. `--file`: one argument cannot hold 3 MB.
    let mut sub_cfg = cfg.clone();
    sub_cfg.mqtt.url = broker.url();
    let sub_path = state.path().join("submit.toml");
    std::fs::write(&sub_path, toml::to_string(&sub_cfg).unwrap()).unwrap();
    for (n, (bytes, key, fleet)) in [
        (3 * 1024 * 1024, "max_packet_bytes", false),
        (300 * 1024, "limits.max_payload_bytes", false),
        (300 * 1024, "limits.max_payload_bytes", true),
    ]
    .into_iter()
    .enumerate()
    {
        let jobs = state.path().join(format!("big-{n}.jsonl"));
        std::fs::write(
            &jobs,
            json!({"id": format!("big-{n}"), "model": MODEL, "prompt": "y".repeat(bytes)})
                .to_string(),
        )
        .unwrap();
        let t0 = Instant::now();
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&sub_path)
            .args(["submit", "--timeout-s", "60", "--file"])
            .arg(&jobs)
            .stdin(Stdio::null());
        if !fleet {
            cmd.args(["--device", dev]);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bytes} bytes: submit succeeded");
        assert!(
            stderr.contains(key) && stderr.contains("is not sent"),
            "{bytes} bytes: {stderr}"
        );
        assert!(t0.elapsed() < Duration::from_secs(20), "{bytes}: waited");
        eprintln!(
            "{bytes} bytes ({}) refused in {:?}: {}",
            if fleet { "fleet" } else { "--device" },
            t0.elapsed(),
            stderr.trim()
        );
    }
    // Nothing of those reached the board.
    c.pump(Duration::from_millis(500)).await;
    assert!(c.msgs.iter().all(|m| !m.topic.contains("/job/big-")));

    daemon.stop().await.unwrap();
    c.close().await;
}
