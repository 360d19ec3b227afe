//! End to end through the binary: `edgewatt daemon` and `edgewatt submit` as separate
//! processes over a real Mosquitto, with the real model and the simulated sensor.
//!
//! `cargo test --release --test daemon_submit`

mod daemon_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use daemon_support::*;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatt");

fn submit(cfg: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .arg("submit")
        .args(["--timeout-s", "120"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run edgewatt submit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_and_submit_binaries_end_to_end() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let dev = "subdev";
    // The file says another broker and device: the daemon's flags override them.
    let mut cfg = daemon_config("mqtt://127.0.0.1:1", "not-this-one", state.path());
    cfg.power.thermal_interval_ms = 0;
    let cfg_path = state.path().join("edgewatt.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg).unwrap()).unwrap();
    let mut daemon = Command::new(BIN)
        .arg("--config")
        .arg(&cfg_path)
        .args(["daemon", "--broker", &broker.url(), "--device", dev])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut c = Client::connect(&broker.url(), &[&format!("edgewatt/{dev}/status")], false).await;
    wait_online(&mut c, "edgewatt", dev).await;

    // The submitter reads the broker from the same file: point it at the real one.
    let mut sub_cfg = cfg.clone();
    sub_cfg.mqtt.url = broker.url();
    let sub_path = state.path().join("submit.toml");
    std::fs::write(&sub_path, toml::to_string(&sub_cfg).unwrap()).unwrap();

    // --json to one board.
    let out = submit(
        &sub_path,
        &[
            "--model", MODEL, "--prompt", "Hello", "-n", "8", "--json", "--device", dev,
        ],
    );
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["state"], "succeeded");
    assert_eq!(r["device"], dev);
    assert!(r["energy"]["rails"].is_array());

    // Tables, fleet dispatch (the board is found from its retained status), streaming.
    let out = submit(
        &sub_path,
        &["--model", MODEL, "--prompt", "Hello", "-n", "8"],
    );
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("decode") && stdout.contains("J/token"),
        "{stdout}"
    );
    assert!(
        stderr.contains("[accepted on subdev]") && stderr.contains("[running on subdev: decode]"),
        "{stderr}"
    );

    // A rejected job: non-zero exit, the code in the message.
    let out = submit(
        &sub_path,
        &[
            "--model",
            MODEL,
            "--prompt",
            "Hi",
            "--extra",
            r#"{"temperature": 9}"#,
            "--json",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("out_of_range") && stderr.contains("'temperature'"),
        "{stderr}"
    );

    // --file: many jobs, results as JSONL.
    let jobs = state.path().join("jobs.jsonl");
    let lines: Vec<String> = (0..6)
        .map(|i| format!(r#"{{"id": "file-{i}", "prompt": "Number {i}", "max_tokens": 2}}"#))
        .collect();
    std::fs::write(&jobs, lines.join("\n")).unwrap();
    let results = state.path().join("results.jsonl");
    let out = submit(
        &sub_path,
        &[
            "--model",
            MODEL,
            "--file",
            jobs.to_str().unwrap(),
            "-o",
            results.to_str().unwrap(),
            "--device",
            dev,
        ],
    );
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&results).unwrap();
    let rs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rs.len(), 6);
    assert!(rs.iter().all(|r| r["state"] == "succeeded"));

    // A quality job and a synthetic prompt from the flags alone (no --prompt).
    let out = submit(
        &sub_path,
        &[
            "--model",
            MODEL,
            "--kind",
            "perplexity",
            "--text",
            "licenses",
            "--n-ctx",
            "128",
            "--max-chunks",
            "1",
            "--json",
            "--device",
            dev,
        ],
    );
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["state"], "succeeded");
    assert_eq!(r["quality"]["kind"], "perplexity");
    assert_eq!(r["quality"]["chunks"], 1);
    assert!(
        r["quality"]["ppl"].as_f64().unwrap() > 1.0,
        "{}",
        r["quality"]
    );
    let out = submit(
        &sub_path,
        &[
            "--model",
            MODEL,
            "--prompt-tokens",
            "16",
            "-n",
            "4",
            "--extra",
            r#"{"ignore_eos": true}"#,
            "--json",
            "--device",
            dev,
        ],
    );
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["tokens"]["prompt"], 16);
    assert_eq!(r["tokens"]["generated"], 4);

    // SIGTERM: graceful drain, exit 0, `offline` retained.
    unsafe {
        libc::kill(daemon.id() as i32, libc::SIGTERM);
    }
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status:?}");
    c.wait_for(Duration::from_secs(5), "offline", |m| {
        m.json()["state"] == "offline"
    })
    .await;
    c.close().await;
}
