//! sd_notify as systemd sees it: a unix datagram socket stands in for the service
//! manager (issue 6).
//!
//! - `wrapper_sends_each_state`: the `daemon::systemd` functions, in this process.
//! - `daemon_notifies_ready_watchdog_stopping`: the real `edgewatt daemon` against a
//!   real Mosquitto: READY=1 only after the broker is reachable, WATCHDOG=1 at the
//!   interval WATCHDOG_USEC asks for, STOPPING=1 on SIGTERM, then a clean exit.

use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgewatt::daemon::systemd;

/// Receives one datagram as text, or None on timeout.
fn recv(sock: &UnixDatagram) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv: {e}"),
    }
}

fn lines(msg: &str) -> Vec<&str> {
    msg.lines().filter(|l| !l.is_empty()).collect()
}

// The only test in this binary that changes the environment (tests run on threads).
#[test]
fn wrapper_sends_each_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::env::set_var("NOTIFY_SOCKET", &path);

    systemd::ready();
    assert_eq!(lines(&recv(&sock).unwrap()), ["READY=1"]);
    systemd::status("loading model\nSmolLM2");
    assert_eq!(
        lines(&recv(&sock).unwrap()),
        ["STATUS=loading model SmolLM2"]
    );
    systemd::extend_timeout(Duration::from_secs(90));
    assert_eq!(
        lines(&recv(&sock).unwrap()),
        ["EXTEND_TIMEOUT_USEC=90000000"]
    );
    systemd::watchdog();
    assert_eq!(lines(&recv(&sock).unwrap()), ["WATCHDOG=1"]);
    systemd::reloading();
    let msg = recv(&sock).unwrap();
    let l = lines(&msg);
    assert_eq!(l[0], "RELOADING=1");
    assert!(l[1].starts_with("MONOTONIC_USEC="), "{msg}");
    systemd::stopping();
    assert_eq!(lines(&recv(&sock).unwrap()), ["STOPPING=1"]);

    // The watchdog applies to us only when WATCHDOG_PID (if set) is our pid.
    std::env::set_var("WATCHDOG_USEC", "4000000");
    std::env::remove_var("WATCHDOG_PID");
    assert_eq!(systemd::watchdog_interval(), Some(Duration::from_secs(4)));
    assert_eq!(
        systemd::watchdog_ping_period(),
        Some(Duration::from_secs(2))
    );
    std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    assert_eq!(systemd::watchdog_interval(), Some(Duration::from_secs(4)));
    std::env::set_var("WATCHDOG_PID", "1");
    assert_eq!(systemd::watchdog_interval(), None);

    // Without NOTIFY_SOCKET nothing is sent (and nothing fails).
    std::env::remove_var("NOTIFY_SOCKET");
    systemd::ready();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert_eq!(recv(&sock), None);
    std::env::remove_var("WATCHDOG_USEC");
    std::env::remove_var("WATCHDOG_PID");
}

/// Kills (by pid) and reaps the processes this test started.
struct Reap(Vec<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mosquitto() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto not installed (apt-get install mosquitto)")
}

/// Datagrams until `pred` matches one of their lines or `within` passes.
fn wait_for(
    sock: &UnixDatagram,
    within: Duration,
    seen: &mut Vec<(Instant, String)>,
    pred: impl Fn(&str) -> bool,
) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        let left = end
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(left.min(Duration::from_millis(500))))
            .unwrap();
        if let Some(msg) = recv(sock) {
            let hit = msg.lines().any(&pred);
            seen.push((Instant::now(), msg));
            if hit {
                return true;
            }
        }
    }
    false
}

fn write_config(dir: &Path) -> PathBuf {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let cfg = dir.join("edgewatt.toml");
    std::fs::write(
        &cfg,
        format!(
            "[device]\nid = \"notify-test\"\n\
             [mqtt]\nbackoff_min_ms = 100\nbackoff_max_ms = 500\n\
             [models]\ndir = \"{}\"\n\
             [store]\npath = \"{}\"\n",
            models.display(),
            dir.join("edgewatt.db").display()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn daemon_notifies_ready_watchdog_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let cfg = write_config(dir.path());
    let port = free_port();
    let mut reap = Reap(Vec::new());

    // The daemon first, the broker not yet up: it must not say READY=1.
    let daemon = Command::new(env!("CARGO_BIN_EXE_edgewatt"))
        .arg("daemon")
        .arg("--config")
        .arg(&cfg)
        .arg("--broker")
        .arg(format!("mqtt://127.0.0.1:{port}"))
        .env("NOTIFY_SOCKET", &sock_path)
        // 2 s watchdog: the daemon should ping at least every second.
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM")
        .env_remove("EDGEWATT_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start edgewatt daemon");
    let pid = daemon.id();
    reap.0.push(daemon);

    let mut seen = Vec::new();
    assert!(
        !wait_for(&sock, Duration::from_secs(4), &mut seen, |l| l == "READY=1"),
        "READY=1 before the broker was up: {seen:?}"
    );

    let broker = Command::new(mosquitto())
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto");
    reap.0.push(broker);
    let broker_up = Instant::now();

    assert!(
        wait_for(&sock, Duration::from_secs(60), &mut seen, |l| l
            == "READY=1"),
        "no READY=1 within 60 s of the broker starting: {seen:?}"
    );
    eprintln!("READY=1 {:?} after the broker started", broker_up.elapsed());

    // Watchdog pings: at least 4 in 5 s, never more than the 2 s interval apart.
    let start = Instant::now();
    let mut pings = vec![start];
    while start.elapsed() < Duration::from_secs(5) {
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        if let Some(msg) = recv(&sock) {
            if msg.lines().any(|l| l == "WATCHDOG=1") {
                pings.push(Instant::now());
            }
        }
    }
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        pings.len() >= 5,
        "only {} WATCHDOG=1 in 5 s",
        pings.len() - 1
    );
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(2000)),
        "watchdog gap over the interval: {gaps:?}"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    // SAFETY: kill(2) on the pid of the child we spawned and still own.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let mut seen = Vec::new();
    assert!(
        wait_for(&sock, Duration::from_secs(10), &mut seen, |l| l
            == "STOPPING=1"),
        "no STOPPING=1 after SIGTERM: {seen:?}"
    );
    let daemon = &mut reap.0[0];
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < end,
            "daemon still running 60 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "daemon exit after SIGTERM: {status}");
}
