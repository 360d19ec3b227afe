//! Prometheus metrics (issue 14): a real daemon over real Mosquitto runs a real job on
//! SmolLM2 with `[metrics] listen` set; then (1) its `GET /metrics` body passes
//! `promtool check metrics`, and (2) a real Prometheus started here, scraping it every
//! second, answers an HTTP API query for the job counter with the job that ran.
//! Skips (loudly) only when promtool or prometheus is not installed; CI installs the
//! Debian `prometheus` package.
//!
//! `cargo test --release --test daemon_metrics`

mod daemon_support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROMTOOL: &str = "/usr/bin/promtool";
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// `GET path` over HTTP/1.0 (no chunked answers); (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// The value of the series line that starts with `prefix`.
fn series(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A Prometheus server owned by the test; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        let port = free_port();
        let conf = dir.join("prometheus.yml");
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: edgewatt\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_a_real_prometheus_scrapes_the_job_counter() {
    for bin in [PROMTOOL, PROMETHEUS] {
        if !Path::new(bin).exists() {
            eprintln!(
                "SKIPPED: {bin} is not installed (Debian package 'prometheus'); this test needs it"
            );
            return;
        }
    }
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let dev = "metrics";
    let mut cfg = daemon_config(&broker.url(), dev, state.path());
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    cfg.metrics.listen = metrics_addr.to_string();
    let reply = "test/reply/metrics";
    let mut c = Client::connect(&broker.url(), &[&format!("{P}/{dev}/#"), reply], false).await;
    let daemon = InProcessDaemon::start(cfg);
    wait_online(&mut c, P, dev).await;

    // Before any job: the endpoint answers, other paths are 404.
    let (status, before) = http_get(metrics_addr, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{before}");
    let ok_series =
        format!(r#"edgewatt_jobs_total{{device="{dev}",model="{MODEL}",state="succeeded"}}"#);
    assert_eq!(series(&before, &ok_series), None, "{before}");
    let (status, _) = http_get(metrics_addr, "/").await.unwrap();
    assert_eq!(status, 404);

    // A real job on the real model.
    c.submit_job(P, dev, job("m-1", 16), reply, b"m-1").await;
    let r = c
        .wait_reply(Duration::from_secs(120), "result of m-1", reply, b"m-1")
        .await;
    assert_eq!(r["state"], "succeeded", "{r}");
    // An invalid job: counted as rejected.
    c.submit_job(
        P,
        dev,
        r#"{"id":"m-bad","model":"no-such-model","prompt":"x"}"#,
        reply,
        b"m-bad",
    )
    .await;
    let bad = c
        .wait_reply(
            Duration::from_secs(30),
            "rejection of m-bad",
            reply,
            b"m-bad",
        )
        .await;
    assert_eq!(bad["state"], "rejected", "{bad}");

    // The rail counter is fed once a second: wait for one more read after the job.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = http_get(metrics_addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(series(&body, &ok_series), Some(1.0), "{body}");
    assert_eq!(
        series(
            &body,
            &format!(r#"edgewatt_jobs_total{{device="{dev}",model="",state="rejected"}}"#)
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        series(
            &body,
            &format!(r#"edgewatt_broker_connected{{device="{dev}"}}"#)
        ),
        Some(1.0)
    );
    assert!(
        series(
            &body,
            &format!(r#"edgewatt_model_cache_bytes{{device="{dev}"}}"#)
        )
        .unwrap()
            > 1e6,
        "the model stays loaded (keep_alive_s = -1): {body}"
    );
    // The simulated 5 V rail idles at 2.5 W: after several seconds, joules and watts.
    let rail = format!(r#"{{device="{dev}",rail="5V_IN"}}"#);
    let energy_j = series(&body, &format!("edgewatt_rail_energy_joules_total{rail}")).unwrap();
    assert!(energy_j > 2.5, "{body}");
    let power_w = series(&body, &format!("edgewatt_rail_power_watts{rail}")).unwrap();
    assert!((2.0..=7.0).contains(&power_w), "{body}");
    assert!(
        series(
            &body,
            &format!("edgewatt_sampler_effective_rate_hertz{rail}")
        )
        .unwrap()
            > 0.0
    );
    assert!(series(&body, &format!("edgewatt_sampler_samples_total{rail}")).unwrap() > 100.0);
    let m = format!(r#"{{device="{dev}",model="{MODEL}"}}"#);
    assert_eq!(
        series(
            &body,
            &format!("edgewatt_decode_tokens_per_second_count{m}")
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        series(&body, &format!("edgewatt_energy_per_token_joules_count{m}")),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        series(&body, &format!("edgewatt_generated_tokens_total{m}")),
        r["tokens"]["generated"].as_f64(),
        "{body}"
    );
    assert_eq!(
        series(&body, &format!("edgewatt_prompt_tokens_total{m}")),
        r["tokens"]["prompt"].as_f64(),
        "{body}"
    );
    let jpt = r["energy"]["j_per_token"]["e2e"].as_f64().unwrap();
    let jpt_sum = series(&body, &format!("edgewatt_energy_per_token_joules_sum{m}")).unwrap();
    assert!(
        (jpt_sum - jpt).abs() < 1e-9,
        "{jpt_sum} vs the result's {jpt}"
    );
    assert!(
        series(
            &body,
            &format!(
                r#"edgewatt_job_phase_duration_seconds_count{{device="{dev}",model="{MODEL}",phase="decode"}}"#
            )
        ) == Some(1.0),
        "{body}"
    );
    assert!(
        body.contains(&format!(r#"edgewatt_build_info{{device="{dev}",version="#)),
        "{body}"
    );

    // (1) promtool accepts the exposition.
    let mut check = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{said}\n---\n{body}"
    );
    assert!(said.trim().is_empty(), "promtool lint findings:\n{said}");

    // (2) A real Prometheus scrapes it and answers a query for the job counter.
    let prom_dir = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(prom_dir.path(), metrics_addr);
    let query = format!(
        "/api/v1/query?query=edgewatt_jobs_total%7Bstate%3D%22succeeded%22%2Cdevice%3D%22{dev}%22%7D"
    );
    let t0 = Instant::now();
    let answer = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "prometheus never answered with the job; log:\n{}",
            std::fs::read_to_string(prom_dir.path().join("prometheus.log")).unwrap_or_default()
        );
        if let Ok((200, b)) = http_get(prom.addr, &query).await {
            let v: Value = serde_json::from_str(&b).unwrap_or(Value::Null);
            if v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                break v;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(answer["status"], "success", "{answer}");
    let sample = &answer["data"]["result"][0];
    assert_eq!(sample["metric"]["model"], MODEL, "{answer}");
    assert_eq!(sample["metric"]["job"], "edgewatt", "{answer}");
    assert_eq!(sample["value"][1], "1", "{answer}");
    // And `up` says the scrape itself succeeded.
    let (_, up) = http_get(prom.addr, "/api/v1/query?query=up").await.unwrap();
    let up: Value = serde_json::from_str(&up).unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    drop(prom);

    // The endpoint stops with the daemon.
    daemon.stop().await.unwrap();
    assert!(
        http_get(metrics_addr, "/metrics").await.is_err(),
        "the metrics endpoint outlived the daemon"
    );
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_port_in_use_stops_the_start_naming_the_key() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = daemon_config(&broker.url(), "metrics-busy", state.path());
    cfg.metrics.listen = taken.local_addr().unwrap().to_string();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        edgewatt::daemon::run(cfg, std::future::pending()),
    )
    .await
    .expect("the start fails instead of hanging")
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("metrics.listen") && msg.contains(&taken.local_addr().unwrap().to_string()),
        "{msg}"
    );
}
