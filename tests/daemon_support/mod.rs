//! Test helpers for the daemon tests: a real Mosquitto on a free loopback port, the
//! daemon's configuration with the simulated sensor and the real model, and an MQTT
//! test client that records everything it receives.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgewatt::config::Config;
use edgewatt::jobs::mqtt::{
    self, BrokerUrl, OutMessage, SessionEvent, SessionHandle, SessionOptions,
};
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// The topic prefix the daemon configurations use.
pub const P: &str = "edgewatt";
pub const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

/// The repository's model directory.
pub fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A Mosquitto broker owned by the test; killed on drop.
pub struct Broker {
    /// The broker process.
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// Conf, persistence and log.
    pub dir: tempfile::TempDir,
}

impl Broker {
    /// Starts Mosquitto with persistence (so sessions survive a restart) on a free port.
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        // Mosquitto started as root drops to the `mosquitto` user, which cannot write
        // into a 0700 root tempdir: the log and the persistence file were silently not
        // written, so a restart lost every session and queued message (found by the
        // soak, issue 14). World-writable, so it can.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod broker dir");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence true\npersistence_location {}/\n\
                 autosave_interval 1\nmax_queued_messages 100000\nmax_inflight_messages 20\n\
                 log_dest file {}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n",
                dir.path().display(),
                dir.path().display()
            ),
        )
        .expect("write conf");
        let mut b = Broker {
            child: None,
            port,
            dir,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto (is /usr/sbin/mosquitto installed?)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops the broker with SIGTERM (it saves its persistence file) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    /// Stops and starts the broker on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The daemon's configuration for tests: the real model, the simulated sensor, a
/// fresh state directory, fast reconnects.
pub fn daemon_config(broker_url: &str, device: &str, state_dir: &Path) -> Config {
    let mut c = Config::default();
    c.device.id = device.to_string();
    c.mqtt.url = broker_url.to_string();
    c.mqtt.backoff_min_ms = 100;
    c.mqtt.backoff_max_ms = 1000;
    c.mqtt.keep_alive_s = 5;
    c.models.dir = model_dir();
    c.models.keep_alive_s = -1;
    c.store.path = state_dir.join("edgewatt.db");
    c.limits.queue_capacity = 64;
    c.power.sensors = vec![toml::from_str(
        r#"
        kind = "sim"
        chip = "ina219"
        shunt_ohms = 0.1
        max_current_a = 3.2
        rate_hz = 200.0
        rails = ["5V_IN"]
        total = true
        load = [{ source = "cpu", idle_w = 2.5, max_w = 6.0, bus_v = 5.0 }]
        "#,
    )
    .expect("sim sensor spec")];
    c.power.idle_window_ms = 500;
    c.power.live_interval_ms = 1000;
    c.power.thermal_interval_ms = 100;
    c
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Bytes,
    pub correlation: Option<Bytes>,
    /// When it arrived.
    pub at: Instant,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }

    /// Whether this is a reply on `topic` carrying Correlation Data `corr`.
    pub fn is_reply(&self, topic: &str, corr: &[u8]) -> bool {
        self.topic == topic && self.correlation.as_deref() == Some(corr)
    }
}

/// An MQTT client for tests (our own session code, clean or persistent).
pub struct Client {
    pub session: SessionHandle,
    rx: mpsc::Receiver<SessionEvent>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// Everything received so far.
    pub msgs: Vec<Msg>,
}

impl Client {
    /// Connects, subscribes to `subs`, and waits for the SUBACK. `persistent` keeps
    /// the session across broker restarts (clean_start = false, 5 min expiry).
    pub async fn connect(url: &str, subs: &[&str], persistent: bool) -> Client {
        let id = format!("test-{}", uuid::Uuid::new_v4().simple());
        let mut o = SessionOptions::new(BrokerUrl::parse(url).unwrap(), id);
        o.clean_start = !persistent;
        o.session_expiry_s = if persistent { 300 } else { 0 };
        o.manual_acks = false;
        o.receive_maximum = 1000;
        o.backoff_min = Duration::from_millis(100);
        o.backoff_max = Duration::from_millis(500);
        o.subscriptions = subs.iter().map(|s| s.to_string()).collect();
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (session, rx) = mqtt::start(o, cancel.clone(), &tracker).unwrap();
        let mut c = Client {
            session,
            rx,
            cancel,
            tracker,
            msgs: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ev = tokio::time::timeout_at(deadline.into(), c.rx.recv())
                .await
                .expect("no SUBACK within 10 s")
                .expect("session ended");
            if matches!(ev, SessionEvent::Subscribed) {
                break;
            }
        }
        c
    }

    /// Publishes bytes (QoS 1) with an optional Response Topic and Correlation Data.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        response: Option<(&str, &[u8])>,
    ) {
        let properties = response.map(|(rt, corr)| PublishProperties {
            response_topic: Some(rt.to_string()),
            correlation_data: Some(Bytes::copy_from_slice(corr)),
            ..PublishProperties::default()
        });
        self.session
            .publish(OutMessage {
                topic: topic.to_string(),
                payload: payload.into(),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties,
                confirm: None,
            })
            .await
            .unwrap();
    }

    /// Publishes a job to `{prefix}/{device}/jobs`, asking for the result on `reply`
    /// with Correlation Data `corr`.
    pub async fn submit_job(
        &self,
        prefix: &str,
        device: &str,
        payload: impl Into<Bytes>,
        reply: &str,
        corr: &[u8],
    ) {
        self.publish(
            &format!("{prefix}/{device}/jobs"),
            payload,
            Some((reply, corr)),
        )
        .await;
    }

    /// Receives for up to `dur`, recording messages.
    pub async fn pump(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
            self.record(ev);
        }
    }

    fn record(&mut self, ev: SessionEvent) {
        if let SessionEvent::Message(p) = ev {
            self.msgs.push(Msg {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload.clone(),
                correlation: p
                    .properties
                    .as_ref()
                    .and_then(|pr| pr.correlation_data.clone()),
                at: Instant::now(),
            });
        }
    }

    /// Waits until a received message satisfies `pred`; returns it. Panics on timeout
    /// with the topics seen, to make failures readable.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Msg) -> bool,
    ) -> Msg {
        if let Some(m) = self.msgs.iter().find(|m| pred(m)) {
            return m.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
                Ok(Some(ev)) => {
                    let before = self.msgs.len();
                    self.record(ev);
                    if self.msgs.len() > before && pred(&self.msgs[before]) {
                        return self.msgs[before].clone();
                    }
                }
                Ok(None) => panic!("session ended while waiting for {what}"),
                Err(_) => {
                    let seen: Vec<String> = self
                        .msgs
                        .iter()
                        .rev()
                        .take(20)
                        .map(|m| {
                            format!(
                                "{} {}",
                                m.topic,
                                String::from_utf8_lossy(&m.payload)
                                    .chars()
                                    .take(200)
                                    .collect::<String>()
                            )
                        })
                        .collect();
                    panic!(
                        "timed out after {timeout:?} waiting for {what}; last messages:\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
    }

    /// Waits for the reply on `reply` with Correlation Data `corr`; returns its JSON.
    pub async fn wait_reply(
        &mut self,
        timeout: Duration,
        what: &str,
        reply: &str,
        corr: &[u8],
    ) -> Value {
        self.wait_for(timeout, what, |m| m.is_reply(reply, corr))
            .await
            .json()
    }

    /// The JSON payloads received on `topic`, in order.
    pub fn on(&self, topic: &str) -> Vec<Value> {
        self.msgs
            .iter()
            .filter(|m| m.topic == topic)
            .map(Msg::json)
            .collect()
    }

    pub async fn close(self) {
        let _ = self.session.disconnect().await;
        drop(self.session);
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.tracker.wait()).await;
        self.cancel.cancel();
    }
}

/// A daemon running in this process on its own task; stopped (gracefully) on `stop`.
pub struct InProcessDaemon {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl InProcessDaemon {
    pub fn start(config: Config) -> InProcessDaemon {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(edgewatt::daemon::run(config, async {
            let _ = rx.await;
        }));
        InProcessDaemon {
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await.expect("daemon task panicked"),
            None => Ok(()),
        }
    }
}

/// Waits for the board's retained status to say `online`.
pub async fn wait_online(client: &mut Client, prefix: &str, device: &str) {
    let topic = format!("{prefix}/{device}/status");
    client
        .wait_for(Duration::from_secs(60), &format!("{device} online"), |m| {
            m.topic == topic && m.json()["state"] == "online"
        })
        .await;
}

/// A small valid job.
pub fn job(id: &str, max_tokens: u32) -> String {
    serde_json::json!({
        "id": id,
        "model": MODEL,
        "prompt": "The capital of France is",
        "max_tokens": max_tokens,
        "temperature": 0,
    })
    .to_string()
}

/// The body of a `child_daemon` pseudo-test (a test binary re-run as a daemon process,
/// so a test can kill -9 it): runs the daemon whose config (JSON) the file named by
/// `env` holds until SIGTERM; returns at once when `env` is unset (a plain test run).
pub fn run_child_daemon(env: &str) {
    let Ok(path) = std::env::var(env) else {
        return;
    };
    let cfg: edgewatt::config::Config =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        edgewatt::daemon::run(cfg, async move {
            term.recv().await;
        })
        .await
        .unwrap();
    });
}

/// Starts this test binary again as a `child_daemon` process (see [`run_child_daemon`])
/// with `env` naming its config file, so a test can kill -9 it.
pub fn spawn_child_daemon(env: &str, config_path: &Path) -> std::process::Child {
    use std::process::{Command, Stdio};
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_daemon",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(env, config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}
