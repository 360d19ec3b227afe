//! The settle gate (job field `settle`) on a real daemon over a real Mosquitto, with
//! the real model: a fake thermal-zone tree that is hot and cools (written by the
//! test while the job waits), a simulated INA219 whose power is a square wave (a
//! previous job's tail, then idle), and `study run --local`'s board with the same gate.

mod daemon_support;

use std::path::Path;
use std::time::{Duration, Instant};

use daemon_support::*;
use edgewatt::config::Config;
use serde_json::{json, Value};

/// A sysfs tree with one thermal zone at `temp_c`.
fn thermal_tree(root: &Path, temp_c: f64) {
    let z = root.join("class/thermal/thermal_zone0");
    std::fs::create_dir_all(&z).unwrap();
    std::fs::write(z.join("type"), "cpu-thermal\n").unwrap();
    set_temp(root, temp_c);
}

fn set_temp(root: &Path, temp_c: f64) {
    // Write-then-rename: the recorder never reads a half-written file.
    let z = root.join("class/thermal/thermal_zone0");
    let tmp = z.join("temp.tmp");
    std::fs::write(&tmp, format!("{}\n", (temp_c * 1000.0) as i64)).unwrap();
    std::fs::rename(tmp, z.join("temp")).unwrap();
}

/// Cools the zone from `from_c` by 1 °C every 100 ms down to `to_c`, on a thread.
fn cool(root: &Path, from_c: f64, to_c: f64) -> std::thread::JoinHandle<()> {
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        let mut t = from_c;
        while t > to_c {
            set_temp(&root, t);
            std::thread::sleep(Duration::from_millis(100));
            t -= 1.0;
        }
        set_temp(&root, to_c);
    })
}

/// The daemon configuration: the fake thermal tree, and 6 W for 4 s then 2.5 W for
/// 4 s, looping (a square wave from the sampler's start).
fn config(broker: &str, dev: &str, state: &Path, sysfs: &Path) -> Config {
    let mut c = daemon_config(broker, dev, state);
    c.power.sensors = vec![toml::from_str(
        r#"
        kind = "sim"
        chip = "ina219"
        shunt_ohms = 0.1
        max_current_a = 3.2
        rate_hz = 200.0
        rails = ["5V_IN"]
        total = true
        load = [{ source = "square", low_a = 0.5, high_a = 1.2, period_ms = 8000.0, duty = 0.5, bus_v = 5.0 }]
        "#,
    )
    .unwrap()];
    c.power.thermal_sysfs_root = sysfs.to_path_buf();
    c
}

fn run_job(id: &str, settle: Value) -> String {
    json!({"id": id, "model": MODEL, "prompt_tokens": 16, "max_tokens": 4,
           "ignore_eos": true, "temperature": 0, "settle": settle})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_waits_until_cool_and_idle_and_reports_it() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let sysfs = tempfile::tempdir().unwrap();
    thermal_tree(sysfs.path(), 45.0);
    let dev = "settle";
    let started = Instant::now();
    let daemon = InProcessDaemon::start(config(&broker.url(), dev, state.path(), sysfs.path()));
    let reply = "test/reply/settle";
    let mut c = Client::connect(
        &broker.url(),
        &[
            &format!("{P}/{dev}/job/+/status"),
            reply,
            &format!("{P}/{dev}/status"),
        ],
        false,
    )
    .await;
    wait_online(&mut c, P, dev).await;
    // The rings then hold a whole low (idle) half of the square wave.
    tokio::time::sleep(Duration::from_secs(9).saturating_sub(started.elapsed())).await;

    // 1. Hot (85 °C, cooling 1 °C / 100 ms) with max_temp_c 60: waits ≥ 2.5 s for
    //    the temperature, and for a 2.5 W stretch of power held 1 s.
    thermal_tree(sysfs.path(), 85.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cooling = cool(sysfs.path(), 85.0, 45.0);
    let settle = json!({"max_temp_c": 60, "idle_rel": 0.1, "settle_s": 1, "timeout_s": 60});
    c.submit_job(P, dev, run_job("settle-hot", settle), reply, b"hot")
        .await;
    let r = c
        .wait_reply(
            Duration::from_secs(180),
            "the hot job's result",
            reply,
            b"hot",
        )
        .await;
    cooling.join().unwrap();
    assert_eq!(r["state"], "succeeded", "{r}");
    let s = &r["settle"];
    assert_eq!(s["settled"], true, "{s}");
    assert!(s["temp_c_start"].as_f64().unwrap() >= 75.0, "{s}");
    assert!(s["temp_c_end"].as_f64().unwrap() <= 60.0, "{s}");
    let ms = s["settle_ms"].as_f64().unwrap();
    assert!((2400.0..60_000.0).contains(&ms), "{s}");
    // Power: idle is the low half (2.5 W), and the run started there.
    let idle = s["power_w_idle"].as_f64().unwrap();
    assert!((2.3..2.7).contains(&idle), "{s}");
    let end = s["power_w_end"].as_f64().unwrap();
    assert!(end <= idle * 1.1, "{s}");
    assert_eq!(s["unchecked"], json!([]), "{s}");
    assert!(s["reason"].is_null(), "{s}");
    // The wait is announced as a phase before the load.
    let seq: Vec<String> = c
        .on(&format!("{P}/{dev}/job/settle-hot/status"))
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m["state"].as_str().unwrap(),
                m["phase"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        seq[..3],
        ["accepted:", "running:settle", "running:load"],
        "{seq:?}"
    );

    // 2. Never cool enough (45 °C against 30 °C): the gate gives up at timeout_s and
    //    the run starts flagged, with the reason.
    let settle = json!({"max_temp_c": 30, "settle_s": 0.5, "timeout_s": 1.5});
    c.submit_job(P, dev, run_job("settle-timeout", settle), reply, b"to")
        .await;
    let r = c
        .wait_reply(
            Duration::from_secs(120),
            "the timed-out job's result",
            reply,
            b"to",
        )
        .await;
    assert_eq!(r["state"], "succeeded", "{r}");
    let s = &r["settle"];
    assert_eq!(s["settled"], false, "{s}");
    let ms = s["settle_ms"].as_f64().unwrap();
    assert!((1500.0..5000.0).contains(&ms), "{s}");
    assert_eq!(s["temp_c_end"], 45.0, "{s}");
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.contains("temperature 45.0 °C is above max_temp_c 30 °C"),
        "{reason}"
    );

    // 3. Within delta_c of the coolest idle temperature the daemon has seen (45 °C).
    set_temp(sysfs.path(), 47.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settle = json!({"delta_c": 3, "idle_rel": 5, "settle_s": 0.3, "timeout_s": 20});
    c.submit_job(P, dev, run_job("settle-delta", settle), reply, b"d")
        .await;
    let r = c
        .wait_reply(
            Duration::from_secs(120),
            "the delta job's result",
            reply,
            b"d",
        )
        .await;
    let s = &r["settle"];
    assert_eq!(s["settled"], true, "{s}");
    assert_eq!(s["temp_c_idle"], 45.0, "{s}");
    assert_eq!(s["temp_c_start"], 47.0, "{s}");

    // 4. A malformed settle is rejected with its field named.
    let bad = json!({"id": "settle-bad", "model": MODEL, "prompt": "x",
                     "settle": {"settle_s": 10, "timeout_s": 5}});
    c.submit_job(P, dev, bad.to_string(), reply, b"bad").await;
    let r = c
        .wait_reply(Duration::from_secs(30), "the rejection", reply, b"bad")
        .await;
    assert_eq!(r["state"], "rejected", "{r}");
    assert_eq!(r["error"]["code"], "out_of_range", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'settle.settle_s'"),
        "{r}"
    );

    // A job without `settle` reports none and has no settle phase.
    c.submit_job(P, dev, job("settle-none", 2), reply, b"none")
        .await;
    let r = c
        .wait_reply(
            Duration::from_secs(120),
            "the plain job's result",
            reply,
            b"none",
        )
        .await;
    assert!(r.get("settle").is_none(), "{r}");
    c.close().await;
    daemon.stop().await.unwrap();
}

#[test]
fn the_local_board_runs_the_same_gate() {
    use edgewatt::study::run::Board;
    let state = tempfile::tempdir().unwrap();
    let sysfs = tempfile::tempdir().unwrap();
    thermal_tree(sysfs.path(), 75.0);
    let mut cfg = config("mqtt://127.0.0.1:1", "local", state.path(), sysfs.path());
    cfg.power.sensors[0] = toml::from_str(
        r#"
        kind = "sim"
        chip = "ina219"
        shunt_ohms = 0.1
        max_current_a = 3.2
        rate_hz = 200.0
        rails = ["5V_IN"]
        total = true
        load = [{ source = "constant", current_a = 0.5, bus_v = 5.0 }]
        "#,
    )
    .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let board = edgewatt::study::local::LocalBoard::start(&cfg, cancel.clone()).unwrap();
    let cooling = cool(sysfs.path(), 75.0, 50.0);
    let payload: Value = serde_json::from_str(&run_job(
        "local-settle",
        json!({"max_temp_c": 65, "settle_s": 0.5, "timeout_s": 60}),
    ))
    .unwrap();
    let r = board.run(&payload).unwrap();
    cooling.join().unwrap();
    let s = &r["settle"];
    assert_eq!(s["settled"], true, "{s}");
    assert!(s["temp_c_start"].as_f64().unwrap() >= 70.0, "{s}");
    assert!(s["temp_c_end"].as_f64().unwrap() <= 65.0, "{s}");
    assert!(s["settle_ms"].as_f64().unwrap() >= 900.0, "{s}");
    assert!(
        (2.3..2.7).contains(&s["power_w_idle"].as_f64().unwrap()),
        "{s}"
    );
    assert_eq!(r["tokens"]["generated"], 4, "{r}");
    cancel.cancel();
}
