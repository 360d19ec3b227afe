//! Clean stops in every state (issue 14): the real `edgewatt daemon` binary, a real
//! Mosquitto, the real model. Each test puts the daemon in one state, sends SIGTERM
//! and checks: exit 0 (no panic in its stderr), `STOPPING=1` on NOTIFY_SOCKET, the
//! retained board status `offline` afterwards, all within the drain timeout (plus the
//! fixed outbox/offline/disconnect allowances). Where a job was cut off by the drain
//! timeout, a restart answers it exactly once.
//!
//! `cargo test --release --test daemon_stop`

mod daemon_support;

use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::json;

/// The daemon binary: `EDGEWATT_BIN` when set (a copy taken right after the build,
/// where several worktrees share one target directory), else the one cargo built.
fn bin() -> String {
    std::env::var("EDGEWATT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_edgewatt").to_string())
}
/// `jobs.drain_timeout_s` of these daemons.
const DRAIN_S: u64 = 3;
/// What a stop may take beyond the drain: outbox flush (5 s), offline + DISCONNECT,
/// the task tracker (10 s), process exit.
const STOP_SLACK: Duration = Duration::from_secs(25);

/// A daemon process with its notify socket and stderr file.
struct Daemon {
    child: Option<Child>,
    /// Everything the daemon sent to NOTIFY_SOCKET.
    notified: Arc<Mutex<Vec<String>>>,
    stop_listener: Arc<AtomicBool>,
    listener: Option<std::thread::JoinHandle<()>>,
    stderr: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, broker_url: &str, device: &str, tag: &str) -> Daemon {
        let mut cfg = daemon_config(broker_url, device, dir);
        cfg.jobs.drain_timeout_s = DRAIN_S;
        cfg.power.thermal_interval_ms = 0;
        let cfg_path = dir.join("edgewatt.toml");
        std::fs::write(&cfg_path, toml::to_string(&cfg).unwrap()).unwrap();
        let sock_path = dir.join(format!("notify-{tag}.sock"));
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let notified = Arc::new(Mutex::new(Vec::new()));
        let stop_listener = Arc::new(AtomicBool::new(false));
        let listener = {
            let (notified, stop) = (notified.clone(), stop_listener.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                        notified
                            .lock()
                            .unwrap()
                            .extend(msg.lines().map(str::to_string));
                    }
                }
            })
        };
        let stderr = dir.join(format!("daemon-{tag}.stderr"));
        let child = Command::new(bin())
            .arg("--config")
            .arg(&cfg_path)
            .arg("daemon")
            .env("NOTIFY_SOCKET", &sock_path)
            .env("RUST_LOG", "info")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .env_remove("EDGEWATT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start edgewatt daemon");
        Daemon {
            child: Some(child),
            notified,
            stop_listener,
            listener: Some(listener),
            stderr,
        }
    }

    fn notified(&self, line: &str) -> bool {
        self.notified.lock().unwrap().iter().any(|l| l == line)
    }

    /// SIGTERM, then waits for the exit; checks exit 0, no panic, STOPPING=1 and the
    /// time. Returns how long the stop took.
    async fn sigterm_and_check(&mut self, what: &str) -> Duration {
        let child = self.child.as_mut().unwrap();
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let t0 = Instant::now();
        let limit = Duration::from_secs(DRAIN_S) + STOP_SLACK;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                t0.elapsed() < limit,
                "{what}: daemon still running {limit:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let took = t0.elapsed();
        self.child = None;
        let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(
            !log.contains("panicked"),
            "{what}: the daemon panicked:\n{log}"
        );
        assert!(
            status.success(),
            "{what}: exit after SIGTERM {status}\n{log}"
        );
        // The datagram is sent before the drain; give the listener one read timeout.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            self.notified("STOPPING=1"),
            "{what}: no STOPPING=1; got {:?}",
            self.notified.lock().unwrap()
        );
        eprintln!("{what}: SIGTERM → exit 0 in {took:?}");
        took
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stop_listener.store(true, Ordering::Relaxed);
        if let Some(l) = self.listener.take() {
            let _ = l.join();
        }
    }
}

/// The retained board status, as a fresh subscriber sees it.
async fn retained_state(broker_url: &str, device: &str) -> String {
    let topic = format!("{P}/{device}/status");
    let mut c = Client::connect(broker_url, &[&topic], false).await;
    let m = c
        .wait_for(Duration::from_secs(5), "retained status", |m| {
            m.topic == topic
        })
        .await;
    c.close().await;
    m.json()["state"].as_str().unwrap_or("").to_string()
}

fn long_job(id: &str, prompt: &str, tokens: u32) -> String {
    json!({"id": id, "model": MODEL, "prompt": prompt, "max_tokens": tokens,
           "ignore_eos": true, "n_ctx": 2048, "threads": 1})
    .to_string()
}

/// The regression test for the panic: a broker port that accepts the TCP connection
/// but never answers CONNECT (the daemon waits for its first CONNACK), then SIGTERM.
/// Before the fix this exited 101 with "`async fn` resumed after completion".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_waiting_for_a_broker_that_never_answers_exits_0_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("mqtt://{}", silent.local_addr().unwrap());
    let mut d = Daemon::start(dir.path(), &url, "never", "never");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!d.notified("READY=1"), "READY=1 without a broker");
    let took = d.sigterm_and_check("broker never answers").await;
    assert!(took < Duration::from_secs(DRAIN_S) + STOP_SLACK);
}

/// Connection refused: the session is backing off between attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_backing_off_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let mut d = Daemon::start(dir.path(), &url, "backoff", "backoff");
    tokio::time::sleep(Duration::from_secs(3)).await;
    d.sigterm_and_check("backing off").await;
}

/// Connected and idle: exit 0, and the retained status says `offline`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_when_connected_and_idle_leaves_offline_retained() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let dev = "idle";
    let mut c = Client::connect(&broker.url(), &[&format!("{P}/{dev}/status")], false).await;
    let mut d = Daemon::start(dir.path(), &broker.url(), dev, "idle");
    wait_online(&mut c, P, dev).await;
    assert!(d.notified("READY=1"));
    d.sigterm_and_check("connected, idle").await;
    c.close().await;
    assert_eq!(retained_state(&broker.url(), dev).await, "offline");
}

/// SIGTERM in each phase of a job: the daemon says `draining`, lets the job finish if
/// it can within the drain timeout or requeues it, exits 0 with `offline` retained;
/// a restart then answers a requeued job; every job is answered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_load_prefill_and_decode_then_restart_answers_each_job_once() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let dev = "phases";
    let reply = "test/reply/phases";
    let mut c = Client::connect(&broker.url(), &[&format!("{P}/{dev}/#"), reply], false).await;
    // A prompt long enough that prefill on one thread is seen as its own phase.
    let long_prompt = "The quick brown fox jumps over the lazy dog. ".repeat(120);
    let cases = [
        ("load", "stop-load", "Hello".to_string(), 8u32),
        ("prefill", "stop-prefill", long_prompt, 4),
        ("decode", "stop-decode", "Count: 1, 2, 3,".to_string(), 600),
    ];
    // Results per id over the whole test (the message log is cleared per daemon).
    let mut replies: std::collections::HashMap<&str, usize> = Default::default();
    let count = |c: &Client, replies: &mut std::collections::HashMap<&str, usize>| {
        for (_, id, _, _) in &cases {
            let n = c
                .msgs
                .iter()
                .filter(|m| m.is_reply(reply, id.as_bytes()))
                .count();
            *replies.entry(id).or_default() += n;
        }
    };
    for (n, (phase, id, prompt, tokens)) in cases.iter().enumerate() {
        count(&c, &mut replies);
        c.msgs.clear();
        let mut d = Daemon::start(dir.path(), &broker.url(), dev, &format!("{phase}-{n}"));
        wait_online(&mut c, P, dev).await;
        c.submit_job(P, dev, long_job(id, prompt, *tokens), reply, id.as_bytes())
            .await;
        let st = format!("{P}/{dev}/job/{id}/status");
        c.wait_for(Duration::from_secs(60), &format!("{id} in {phase}"), |m| {
            m.topic == st && m.json()["phase"] == *phase
        })
        .await;
        d.sigterm_and_check(&format!("job in {phase}")).await;
        c.pump(Duration::from_millis(300)).await;
        let board = c.on(&format!("{P}/{dev}/status"));
        assert!(
            board.iter().any(|s| s["state"] == "draining"),
            "{phase}: no draining status: {board:?}"
        );
        assert_eq!(retained_state(&broker.url(), dev).await, "offline");
    }
    count(&c, &mut replies);
    c.msgs.clear();
    // The decode job cannot finish its tokens within the 3 s drain: it was requeued.
    assert_eq!(replies.get("stop-decode").copied().unwrap_or(0), 0);
    // Restart: whatever the drain timeout cut off is run again and answered.
    let mut d = Daemon::start(dir.path(), &broker.url(), dev, "restart");
    for (_, id, _, _) in &cases {
        if replies.get(id).copied().unwrap_or(0) > 0 {
            continue;
        }
        let r = c
            .wait_reply(
                Duration::from_secs(240),
                &format!("{id} after restart"),
                reply,
                id.as_bytes(),
            )
            .await;
        assert_eq!(r["state"], "succeeded", "{id}: {r}");
    }
    c.pump(Duration::from_secs(2)).await;
    d.sigterm_and_check("after restart").await;
    count(&c, &mut replies);
    for (_, id, _, _) in &cases {
        assert_eq!(replies[id], 1, "{id}: answered {} times", replies[id]);
    }
    c.close().await;
}

/// Draining with the broker gone: the job is decoding, the broker dies, SIGTERM. The
/// daemon still exits 0 within the drain timeout + slack; after the broker and the
/// daemon come back, the job is answered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_draining_with_the_broker_gone_then_restart_answers_once() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let dev = "nobroker";
    let reply = "test/reply/nobroker";
    let id = "gone-1";
    let mut c = Client::connect(&broker.url(), &[&format!("{P}/{dev}/#"), reply], true).await;
    let mut d = Daemon::start(dir.path(), &broker.url(), dev, "first");
    wait_online(&mut c, P, dev).await;
    c.submit_job(
        P,
        dev,
        long_job(id, "Count: 1, 2, 3,", 600),
        reply,
        id.as_bytes(),
    )
    .await;
    let st = format!("{P}/{dev}/job/{id}/status");
    c.wait_for(Duration::from_secs(60), "decoding", |m| {
        m.topic == st && m.json()["phase"] == "decode"
    })
    .await;
    broker.stop();
    d.sigterm_and_check("draining, broker gone").await;
    broker.restart();
    let mut d = Daemon::start(dir.path(), &broker.url(), dev, "second");
    let r = c
        .wait_reply(
            Duration::from_secs(240),
            "result after restart",
            reply,
            id.as_bytes(),
        )
        .await;
    assert_eq!(r["state"], "succeeded", "{r}");
    c.pump(Duration::from_secs(2)).await;
    let n = c
        .msgs
        .iter()
        .filter(|m| m.is_reply(reply, id.as_bytes()))
        .count();
    assert_eq!(n, 1, "answered {n} times");
    d.sigterm_and_check("after restart").await;
    c.close().await;
}

/// Rows of the daemon's outbox not yet acknowledged by the broker (read beside the
/// running daemon: the file is in WAL mode).
fn unsent_rows(dir: &Path) -> i64 {
    let Ok(c) = rusqlite::Connection::open(dir.join("edgewatt.db")) else {
        return 0;
    };
    c.query_row(
        "SELECT count(*) FROM outbox WHERE sent_unix_ns IS NULL",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

/// Writing the outbox: jobs were accepted, then the broker went away, so every
/// result the daemon finishes piles up in its outbox; it is stopped (SIGTERM or
/// `kill -9`) while it still finishes jobs and waits for the outbox to drain. After
/// the broker and the daemon come back, every job is answered exactly once.
async fn stop_while_writing_the_outbox(kill9: bool) {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let dev = if kill9 { "outbox-kill" } else { "outbox-term" };
    let reply = format!("test/reply/{dev}");
    let mut c = Client::connect(&broker.url(), &[&format!("{P}/{dev}/#"), &reply], true).await;
    let mut d = Daemon::start(dir.path(), &broker.url(), dev, "first");
    wait_online(&mut c, P, dev).await;
    let ids: Vec<String> = (0..8).map(|i| format!("{dev}-{i}")).collect();
    for id in &ids {
        c.submit_job(
            P,
            dev,
            long_job(id, "Count: 1, 2, 3,", 24),
            &reply,
            id.as_bytes(),
        )
        .await;
    }
    for id in &ids {
        let st = format!("{P}/{dev}/job/{id}/status");
        c.wait_for(Duration::from_secs(60), &format!("{id} accepted"), |m| {
            m.topic == st && m.json()["state"] == "accepted"
        })
        .await;
    }
    broker.stop();
    // Results pile up in the outbox while the rest of the queue still runs.
    let t0 = Instant::now();
    while unsent_rows(dir.path()) < 6 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no results in the outbox after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "outbox rows unsent at the stop: {}",
        unsent_rows(dir.path())
    );
    if kill9 {
        let mut child = d.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let log = std::fs::read_to_string(&d.stderr).unwrap_or_default();
        assert!(!log.contains("panicked"), "panicked:\n{log}");
    } else {
        d.sigterm_and_check("writing the outbox, broker gone").await;
    }
    assert!(
        unsent_rows(dir.path()) > 0,
        "the outbox was emptied without a broker"
    );
    drop(d);
    broker.restart();
    let mut d = Daemon::start(dir.path(), &broker.url(), dev, "second");
    for id in &ids {
        let r = c
            .wait_reply(Duration::from_secs(240), id, &reply, id.as_bytes())
            .await;
        assert_eq!(r["state"], "succeeded", "{id}: {r}");
    }
    c.pump(Duration::from_secs(3)).await;
    for id in &ids {
        let n = c
            .msgs
            .iter()
            .filter(|m| m.is_reply(&reply, id.as_bytes()))
            .count();
        assert_eq!(n, 1, "{id}: answered {n} times");
    }
    assert_eq!(
        unsent_rows(dir.path()),
        0,
        "outbox not drained after restart"
    );
    d.sigterm_and_check("after restart").await;
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_writing_the_outbox_then_restart_answers_each_job_once() {
    stop_while_writing_the_outbox(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_writing_the_outbox_then_restart_answers_each_job_once() {
    stop_while_writing_the_outbox(true).await;
}
