//! Power modes through a real daemon (issue 13): real Mosquitto, the real model, a
//! fake cpufreq tree (`Settings::power_mode_root`) with a fake kernel thread that
//! brings `scaling_cur_freq` under a lowered `scaling_max_freq` 50 ms later.
//!
//! - the start restores a mode journaled by a daemon that "crashed" with it applied;
//! - the retained status lists the modes and what each sets;
//! - a job under `eco` runs with it applied (the result says so) and the tree is
//!   back afterwards; a job naming no mode records the board as it is;
//! - an unknown mode and one the board cannot apply are `rejected` with their codes;
//! - on a fake Jetson, an nvpmodel mode goes through the request file to the packaged
//!   root script (run here by a stand-in for `edgewatt-power-mode.path`, with a fake
//!   `nvpmodel`), is read back, recorded and restored; a mode nvpmodel refuses
//!   (reboot required) fails with nvpmodel's words and the job does not run.
//!
//! `cargo test --release --test daemon_power_mode`

mod daemon_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use daemon_support::*;
use edgewatt::daemon::Settings;
use edgewatt::powermode::PowerModeSpec;
use serde_json::{json, Value};

const POLICY: &str = "sys/devices/system/cpu/cpufreq/policy0";

fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, format!("{text}\n")).unwrap();
}

fn get(root: &Path, file: &str) -> String {
    std::fs::read_to_string(root.join(POLICY).join(file))
        .unwrap()
        .trim()
        .to_string()
}

/// One policy of two CPUs, 0.6–2.4 GHz, left by a crashed daemon in `performance`
/// at 1.5 GHz.
fn board(root: &Path) {
    put(root, &format!("{POLICY}/related_cpus"), "0 1");
    put(
        root,
        &format!("{POLICY}/scaling_available_governors"),
        "performance powersave schedutil",
    );
    put(root, &format!("{POLICY}/scaling_governor"), "performance");
    put(root, &format!("{POLICY}/cpuinfo_min_freq"), "600000");
    put(root, &format!("{POLICY}/cpuinfo_max_freq"), "2400000");
    put(root, &format!("{POLICY}/scaling_min_freq"), "600000");
    put(root, &format!("{POLICY}/scaling_max_freq"), "1500000");
    put(root, &format!("{POLICY}/scaling_cur_freq"), "1200000");
}

/// Lowers `scaling_cur_freq` to `scaling_max_freq` 50 ms after it exceeds it.
fn fake_kernel(root: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let p = root.join(POLICY);
        while !stop.load(Ordering::Relaxed) {
            let read = |f: &str| -> Option<u64> {
                std::fs::read_to_string(p.join(f)).ok()?.trim().parse().ok()
            };
            if let (Some(max), Some(cur)) = (read("scaling_max_freq"), read("scaling_cur_freq")) {
                if cur > max {
                    std::thread::sleep(Duration::from_millis(50));
                    let _ = std::fs::write(p.join("scaling_cur_freq"), format!("{max}\n"));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

fn mode(toml_text: &str) -> PowerModeSpec {
    toml::from_str(toml_text).unwrap()
}

/// A daemon on `broker` for board `dev` with `modes` (`NAME`, TOML of the mode) and
/// its power-mode root at `root`, and a client subscribed to its topics and `reply`.
async fn start_daemon(
    broker: &Broker,
    state: &Path,
    root: &Path,
    dev: &str,
    modes: &[(&str, &str)],
    reply: &str,
) -> (
    Client,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut cfg = daemon_config(&broker.url(), dev, state);
    cfg.power.thermal_interval_ms = 0;
    for (name, spec) in modes {
        cfg.power_modes.insert((*name).into(), mode(spec));
    }
    cfg.validate().unwrap();
    let mut settings = Settings::from_config(&cfg).unwrap();
    settings.power_mode_root = root.to_path_buf();
    let mut c = Client::connect(&broker.url(), &[&format!("{P}/{dev}/#"), reply], false).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(edgewatt::daemon::run_with(settings, async {
        let _ = rx.await;
    }));
    wait_online(&mut c, P, dev).await;
    (c, tx, daemon)
}

/// A 4-token job, under `mode` when given.
fn submit(id: &str, mode: Option<&str>) -> String {
    let mut j: Value = serde_json::from_str(&job(id, 4)).unwrap();
    if let Some(m) = mode {
        j["power_mode"] = json!(m);
    }
    j.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_under_their_power_mode_and_the_board_is_put_back() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path().to_path_buf();
    board(&root);
    // What the crashed daemon journaled before applying its mode.
    let journal = state.path().join("power-mode-restore.json");
    std::fs::write(
        &journal,
        json!({"mode": "crashed", "nvpmodel": null, "policies": [
            {"policy": 0, "governor": "schedutil", "min_khz": 600000, "max_khz": 2400000}]})
        .to_string(),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let kernel = fake_kernel(root.clone(), stop.clone());

    let dev = "pmode";
    let reply = "test/reply/pmode";
    let modes = [
        ("eco", "governor = \"powersave\"\nmax_freq_khz = 1000000"),
        ("tuned", "governor = \"ondemand\""),
        ("maxn", "nvpmodel = 0"),
    ];
    let (mut c, tx, daemon) = start_daemon(&broker, state.path(), &root, dev, &modes, reply).await;

    // The start put the crashed daemon's mode back and cleared the journal.
    assert_eq!(get(&root, "scaling_governor"), "schedutil");
    assert_eq!(get(&root, "scaling_max_freq"), "2400000");
    assert!(!journal.exists());

    // The retained status says what each mode sets.
    let status = c
        .on(&format!("{P}/{dev}/status"))
        .into_iter()
        .last()
        .unwrap();
    assert_eq!(
        status["power_modes"]["eco"],
        json!({"governor": "powersave", "max_freq_khz": 1000000}),
        "{status}"
    );
    assert_eq!(status["power_modes"]["maxn"], json!({"nvpmodel": 0}));

    let wait = Duration::from_secs(180);

    // Under `eco`: applied and read back before the job, recorded, restored after.
    c.submit_job(P, dev, submit("pm-eco", Some("eco")), reply, b"eco")
        .await;
    let r = c.wait_reply(wait, "pm-eco result", reply, b"eco").await;
    assert_eq!(r["state"], "succeeded", "{r}");
    let pm = &r["power_mode"];
    assert_eq!(pm["name"], "eco", "{r}");
    let p0 = &pm["cpufreq"][0];
    assert_eq!(p0["policy"], 0);
    assert_eq!(p0["cpus"], json!([0, 1]));
    assert_eq!(p0["governor"], "powersave", "{pm}");
    assert_eq!(p0["max_khz"], 1_000_000);
    assert!(p0["seen_max_khz"].as_u64().unwrap() <= 1_000_000, "{pm}");
    assert_eq!(pm["freq_samples"], 2);
    assert!(
        pm.get("nvpmodel").is_none() && pm.get("arm_freq_mhz").is_none(),
        "{pm}"
    );
    assert_eq!(get(&root, "scaling_governor"), "schedutil");
    assert_eq!(get(&root, "scaling_max_freq"), "2400000");
    assert!(!journal.exists());

    // No mode named: the board as it is.
    c.submit_job(P, dev, submit("pm-none", None), reply, b"none")
        .await;
    let r = c.wait_reply(wait, "pm-none result", reply, b"none").await;
    assert_eq!(r["state"], "succeeded", "{r}");
    assert!(r["power_mode"].get("name").is_none(), "{r}");
    assert_eq!(r["power_mode"]["cpufreq"][0]["governor"], "schedutil");
    assert_eq!(r["power_mode"]["cpufreq"][0]["max_khz"], 2_400_000);

    // Refusals, before anything runs, each with its code.
    c.submit_job(P, dev, submit("pm-unknown", Some("turbo")), reply, b"unk")
        .await;
    let r = c.wait_reply(wait, "pm-unknown", reply, b"unk").await;
    assert_eq!(r["state"], "rejected", "{r}");
    assert_eq!(r["error"]["code"], "unknown_power_mode");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("'turbo'") && msg.contains("eco, maxn, tuned"),
        "{msg}"
    );
    c.submit_job(P, dev, submit("pm-gov", Some("tuned")), reply, b"gov")
        .await;
    let r = c.wait_reply(wait, "pm-gov", reply, b"gov").await;
    assert_eq!(r["error"]["code"], "power_mode_unavailable", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("does not offer governor 'ondemand'"), "{msg}");
    c.submit_job(P, dev, submit("pm-nvp", Some("maxn")), reply, b"nvp")
        .await;
    let r = c.wait_reply(wait, "pm-nvp", reply, b"nvp").await;
    assert_eq!(r["error"]["code"], "power_mode_unavailable", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nvpmodel.conf"),
        "{r}"
    );
    assert_eq!(get(&root, "scaling_governor"), "schedutil");

    let _ = tx.send(());
    daemon.await.unwrap().unwrap();
    stop.store(true, Ordering::Relaxed);
    kernel.join().unwrap();
    c.close().await;
}

/// A Jetson's nvpmodel files: three modes, the board in MAXN (0); the shared fake
/// `nvpmodel` (tests/fixtures/fake-nvpmodel: writes the status file as the real one
/// does, asks for a reboot for 3), its calls logged to `var/lib/nvpmodel/calls`.
fn jetson(root: &Path) {
    put(
        root,
        "etc/nvpmodel.conf",
        "< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=1 NAME=15W >\n\
         < POWER_MODEL ID=3 NAME=7W >\n< PM_CONFIG DEFAULT=0 >",
    );
    put(root, "var/lib/nvpmodel/status", "pmode:0000 fmode:quiet");
    std::fs::create_dir_all(root.join("var/lib/edgewatt")).unwrap();
    let fake = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-nvpmodel"),
    )
    .unwrap()
    .replace(
        "@DIR@",
        &root.join("var/lib/nvpmodel").display().to_string(),
    );
    put(root, "usr/sbin/nvpmodel", &fake);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("usr/sbin/nvpmodel"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

/// Stands in for `edgewatt-power-mode.path`: whenever the request file changes, runs
/// the packaged script (as `edgewatt-power-mode.service` would) on the fake board.
fn path_unit(root: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/edgewatt-power-mode");
    std::thread::spawn(move || {
        let request = root.join("var/lib/edgewatt/power-mode.request");
        let mut seen = String::new();
        while !stop.load(Ordering::Relaxed) {
            let now = std::fs::read_to_string(&request).unwrap_or_default();
            if now != seen {
                seen = now;
                let _ = std::process::Command::new("sh")
                    .arg(&script)
                    .arg(&request)
                    .arg(root.join("var/lib/edgewatt-power-mode"))
                    .arg(root.join("usr/sbin/nvpmodel"))
                    .arg(root.join("etc/nvpmodel.conf"))
                    .status();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nvpmodel_modes_go_through_the_request_file_and_the_root_script() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path().to_path_buf();
    jetson(&root);
    let stop = Arc::new(AtomicBool::new(false));
    let unit = path_unit(root.clone(), stop.clone());

    let dev = "pmode-jetson";
    let reply = "test/reply/pmode-jetson";
    let modes = [("15w", "nvpmodel = 1"), ("7w", "nvpmodel = 3")];
    let (mut c, tx, daemon) = start_daemon(&broker, state.path(), &root, dev, &modes, reply).await;
    let wait = Duration::from_secs(180);
    let status = || std::fs::read_to_string(root.join("var/lib/nvpmodel/status")).unwrap();

    c.submit_job(P, dev, submit("pm-15w", Some("15w")), reply, b"15w")
        .await;
    let r = c.wait_reply(wait, "pm-15w result", reply, b"15w").await;
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(r["power_mode"]["name"], "15w", "{r}");
    assert_eq!(
        r["power_mode"]["nvpmodel"],
        json!({"id": 1, "name": "15W"}),
        "{r}"
    );
    // Restored through the same path, and the script answered both requests.
    assert_eq!(status(), "pmode:0000 fmode:quiet\n");
    let calls = std::fs::read_to_string(root.join("var/lib/nvpmodel/calls")).unwrap();
    assert_eq!(calls, "-m 1\n-m 0\n");
    let answer = std::fs::read_to_string(root.join("var/lib/edgewatt-power-mode/result")).unwrap();
    assert!(answer.ends_with(" 0 ok \n"), "{answer}");

    // nvpmodel wants a reboot: the job does not run, nvpmodel's words reach the sender.
    c.submit_job(P, dev, submit("pm-7w", Some("7w")), reply, b"7w")
        .await;
    let r = c.wait_reply(wait, "pm-7w", reply, b"7w").await;
    assert_eq!(r["state"], "rejected", "{r}");
    assert_eq!(r["error"]["code"], "power_mode_failed", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("takes effect only after a reboot") && msg.contains("Reboot required"),
        "{msg}"
    );
    assert_eq!(status(), "pmode:0000 fmode:quiet\n");

    let _ = tx.send(());
    daemon.await.unwrap().unwrap();
    stop.store(true, Ordering::Relaxed);
    unit.join().unwrap();
    c.close().await;
}
