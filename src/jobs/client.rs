//! The submitting side of the job protocol, shared by `edgewatt submit` and
//! `edgewatt study run`: connect to a broker, read the boards' retained statuses,
//! publish a job to a board (or the fleet queue), and follow its status, tokens and
//! result until it is terminal, with timeouts.
//!
//! Every job is published with an MQTT v5 Response Topic (`PREFIX/reply/<uuid>`, this
//! client's alone) and Correlation Data (the job id), so the result comes back here
//! whichever board ran it. States come from `PREFIX/+/job/ID/status` and streamed text
//! from `PREFIX/+/job/ID/tokens`.
//!
//! Fleets (docs/protocol.md, "Fleets"): Mosquitto 2.0 hands shared-subscription
//! messages out round-robin, blind to load, and keeps a dead member's share queued
//! until its session expires. So [`pick_board`] sends each job straight to the online
//! board with the fewest jobs (its queue + running + ours in flight); the shared queue
//! `PREFIX/jobs` is for when no board has published a status.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::jobs::mqtt::{
    self, BrokerUrl, MqttError, OutMessage, SessionEvent, SessionHandle, SessionOptions, TlsFiles,
};
use crate::jobs::protocol::{
    validate_id, BoardLimits, DeviceStatus, JobState, StatusMsg, TokenMsg,
};

/// What can go wrong talking to the fleet.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The session could not be set up or a publish failed.
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    /// No SUBACK within the connect timeout.
    #[error("cannot reach the broker within {0} s")]
    ConnectTimeout(u64),
    /// The session task stopped.
    #[error("the MQTT session ended")]
    SessionEnded,
    /// The job's id is not a valid protocol id.
    #[error("{0}")]
    InvalidId(String),
    /// The job could not be serialised.
    #[error("cannot encode the job: {0}")]
    Encode(#[from] serde_json::Error),
    /// The job is larger than the board (or, for the shared queue, the smallest
    /// board) announces it accepts; it was not published.
    #[error("job '{id}' is not sent: {what} is {size} bytes; {board} accepts at most {limit} bytes ({key} in its status); make the job smaller or raise {raise} on the board")]
    TooLarge {
        id: String,
        what: &'static str,
        size: usize,
        limit: usize,
        key: &'static str,
        /// The configuration key that sets the limit on the board.
        raise: &'static str,
        board: String,
    },
    /// A password file could not be read.
    #[error("cannot read the password file '{path}': {source}")]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The configuration's password could not be resolved.
    #[error(transparent)]
    Password(#[from] crate::config::ConfigError),
}

/// How to reach the broker, and what to listen to.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The broker.
    pub url: BrokerUrl,
    /// Topic prefix (`mqtt.prefix`).
    pub prefix: String,
    /// User name and password, when the broker wants them.
    pub credentials: Option<(String, String)>,
    /// CA, certificate and key for mqtts://.
    pub tls: TlsFiles,
    /// Subscribe to streamed tokens (`PREFIX/+/job/+/tokens`).
    pub tokens: bool,
    /// Subscribe to the boards' retained statuses (`PREFIX/+/status`).
    pub board_statuses: bool,
    /// How long [`Client::connect`] waits for the broker's SUBACK.
    pub connect_timeout: Duration,
}

impl ClientOptions {
    /// The broker, prefix, credentials and TLS files of a configuration's `[mqtt]`.
    pub fn from_config(cfg: &Config) -> Result<ClientOptions, ClientError> {
        let credentials = match &cfg.mqtt.username {
            Some(u) => Some((u.clone(), cfg.mqtt.resolve_password()?.unwrap_or_default())),
            None => None,
        };
        Ok(ClientOptions {
            url: BrokerUrl::parse(&cfg.mqtt.url)?,
            prefix: cfg.mqtt.prefix.clone(),
            credentials,
            tls: TlsFiles {
                ca_file: cfg.mqtt.tls_ca.clone(),
                cert_file: cfg.mqtt.tls_cert.clone(),
                key_file: cfg.mqtt.tls_key.clone(),
            },
            tokens: false,
            board_statuses: true,
            connect_timeout: Duration::from_secs(15),
        })
    }

    /// The first line of a password file.
    pub fn password_from_file(path: &std::path::Path) -> Result<String, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientError::PasswordFile {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(text.lines().next().unwrap_or("").to_string())
    }

    fn session_options(&self) -> SessionOptions {
        let client_id = format!("edgewatt-submit-{}", uuid::Uuid::new_v4().simple());
        let mut o = SessionOptions::new(self.url.clone(), client_id);
        o.clean_start = true;
        o.session_expiry_s = 0;
        o.manual_acks = false;
        o.receive_maximum = 1024;
        o.backoff_min = Duration::from_millis(200);
        o.backoff_max = Duration::from_secs(5);
        o.max_packet_bytes = 64 * 1024 * 1024;
        o.tls = self.tls.clone();
        o.credentials = self.credentials.clone();
        o
    }
}

/// One job's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Job id.
    pub id: String,
    /// Final state; `None` on timeout.
    pub state: Option<JobState>,
    /// The result object (or a timeout stand-in).
    pub result: Value,
}

impl Outcome {
    /// The stand-in for a job whose result did not come within `timeout`.
    pub fn timed_out(id: String, device: Option<String>, timeout: Duration) -> Outcome {
        Outcome {
            result: json!({
                "id": id,
                "device": device,
                "state": "timeout",
                "error": {"code": "timeout", "message": format!("no result within {} s", timeout.as_secs())},
            }),
            id,
            state: None,
        }
    }
}

/// What arrived for the jobs this client follows.
#[derive(Debug)]
pub enum JobEvent {
    /// A job's result, on our reply topic (each id once, however often it comes).
    Result(Outcome),
    /// A job's state change.
    Status(StatusMsg),
    /// Streamed text.
    Tokens(TokenMsg),
    /// A board's retained status (also kept in [`Client::boards`]).
    Board(DeviceStatus),
    /// The broker went away; the session reconnects by itself.
    Disconnected(String),
}

/// A connected submitter.
pub struct Client {
    /// The broker session.
    session: SessionHandle,
    /// Its event stream.
    events: mpsc::Receiver<SessionEvent>,
    /// Stops the session tasks.
    cancel: CancellationToken,
    /// The session tasks, awaited by [`Client::close`].
    tracker: TaskTracker,
    /// Topic prefix.
    prefix: String,
    /// Where results come back (`PREFIX/reply/<uuid>`).
    reply_topic: String,
    /// The boards' latest retained statuses.
    boards: BTreeMap<String, DeviceStatus>,
    /// Ids whose result was already handed out (results come at least once).
    seen: HashSet<String>,
}

impl Client {
    /// Connects and waits for the SUBACK (statuses published before it would be missed).
    pub async fn connect(opts: &ClientOptions) -> Result<Client, ClientError> {
        let prefix = opts.prefix.clone();
        let reply_topic = format!("{prefix}/reply/{}", uuid::Uuid::new_v4().simple());
        let mut subs = vec![reply_topic.clone(), format!("{prefix}/+/job/+/status")];
        if opts.tokens {
            subs.push(format!("{prefix}/+/job/+/tokens"));
        }
        if opts.board_statuses {
            subs.push(format!("{prefix}/+/status"));
        }
        let mut so = opts.session_options();
        so.subscriptions = subs;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (session, events) = mqtt::start(so, cancel.clone(), &tracker)?;
        let mut c = Client {
            session,
            events,
            cancel,
            tracker,
            prefix,
            reply_topic,
            boards: BTreeMap::new(),
            seen: HashSet::new(),
        };
        let deadline = Instant::now() + opts.connect_timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline.into(), c.events.recv()).await;
            match ev {
                Err(_) => {
                    c.close().await;
                    return Err(ClientError::ConnectTimeout(opts.connect_timeout.as_secs()));
                }
                Ok(Some(SessionEvent::Subscribed)) => break,
                Ok(Some(SessionEvent::Disconnected { reason })) => {
                    tracing::warn!("broker: {reason}")
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(ClientError::SessionEnded),
            }
        }
        Ok(c)
    }

    /// The topic prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Collects retained board statuses for `wait` (they arrive right after the
    /// SUBACK) and returns all known so far.
    pub async fn read_statuses(&mut self, wait: Duration) -> &BTreeMap<String, DeviceStatus> {
        let until = Instant::now() + wait;
        while let Ok(Some(ev)) = tokio::time::timeout_at(until.into(), self.events.recv()).await {
            if let SessionEvent::Message(p) = ev {
                if let Ok(s) = serde_json::from_slice::<DeviceStatus>(&p.payload) {
                    self.boards.insert(s.device.clone(), s);
                }
            }
        }
        &self.boards
    }

    /// The boards' latest retained statuses.
    pub fn boards(&self) -> &BTreeMap<String, DeviceStatus> {
        &self.boards
    }

    /// Gives the job an id when it has none, checks it, and publishes it to
    /// `PREFIX/DEV/jobs` (or the shared `PREFIX/jobs` for `None`) with our Response
    /// Topic and the id as Correlation Data. Returns the id.
    pub async fn publish_job(
        &self,
        device: Option<&str>,
        mut job: Map<String, Value>,
    ) -> Result<String, ClientError> {
        let id = match job.get("id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => {
                let id = format!("{}", uuid::Uuid::new_v4().simple());
                job.insert("id".into(), json!(id));
                id
            }
        };
        validate_id(&id).map_err(|e| ClientError::InvalidId(e.to_string()))?;
        let topic = match device {
            Some(d) => format!("{}/{d}/jobs", self.prefix),
            None => format!("{}/jobs", self.prefix),
        };
        let payload = serde_json::to_vec(&Value::Object(job))?;
        if let Some((board, limits)) = self.limits_for(device) {
            check_limits(&id, &payload, &board, &limits)?;
        }
        let msg = OutMessage {
            topic,
            payload: Bytes::from(payload),
            qos: rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            retain: false,
            properties: Some(PublishProperties {
                response_topic: Some(self.reply_topic.clone()),
                correlation_data: Some(Bytes::from(id.clone().into_bytes())),
                content_type: Some("application/json".into()),
                payload_format_indicator: Some(1),
                ..PublishProperties::default()
            }),
            confirm: None,
        };
        self.session.publish(msg).await?;
        Ok(id)
    }

    /// The limits a job to `device` must meet: that board's, or for the shared queue
    /// the smallest of every board's (any member may get it). `None` when no status
    /// announced limits (older daemons).
    pub fn limits_for(&self, device: Option<&str>) -> Option<(String, BoardLimits)> {
        match device {
            Some(d) => self
                .boards
                .get(d)
                .and_then(|b| b.limits)
                .map(|l| (format!("board '{d}'"), l)),
            None => {
                let all: Vec<BoardLimits> = self.boards.values().filter_map(|b| b.limits).collect();
                let first = all.first().copied()?;
                let min = all.iter().fold(first, |a, l| BoardLimits {
                    max_payload_bytes: a.max_payload_bytes.min(l.max_payload_bytes),
                    max_packet_bytes: a.max_packet_bytes.min(l.max_packet_bytes),
                    max_prompt_bytes: a.max_prompt_bytes.min(l.max_prompt_bytes),
                });
                Some(("the fleet's smallest board".to_string(), min))
            }
        }
    }

    /// The next event, or `Ok(None)` once `deadline` passed.
    pub async fn next_event(&mut self, deadline: Instant) -> Result<Option<JobEvent>, ClientError> {
        loop {
            let ev = match tokio::time::timeout_at(deadline.into(), self.events.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Err(ClientError::SessionEnded),
                Ok(Some(ev)) => ev,
            };
            let p = match ev {
                SessionEvent::Message(p) => p,
                SessionEvent::Disconnected { reason } => {
                    return Ok(Some(JobEvent::Disconnected(reason)))
                }
                _ => continue,
            };
            let topic = String::from_utf8_lossy(&p.topic);
            if topic == self.reply_topic {
                let Ok(result) = serde_json::from_slice::<Value>(&p.payload) else {
                    continue;
                };
                let id = p
                    .properties
                    .as_ref()
                    .and_then(|pr| pr.correlation_data.as_ref())
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .or_else(|| result.get("id").and_then(Value::as_str).map(str::to_string));
                // At-least-once: a result may come twice; hand it out once.
                if let Some(id) = id.filter(|id| self.seen.insert(id.clone())) {
                    let state = result
                        .get("state")
                        .and_then(Value::as_str)
                        .and_then(JobState::parse);
                    return Ok(Some(JobEvent::Result(Outcome { id, state, result })));
                }
            } else if topic.ends_with("/status") && topic.contains("/job/") {
                if let Ok(s) = serde_json::from_slice::<StatusMsg>(&p.payload) {
                    return Ok(Some(JobEvent::Status(s)));
                }
            } else if topic.ends_with("/tokens") {
                if let Ok(t) = serde_json::from_slice::<TokenMsg>(&p.payload) {
                    return Ok(Some(JobEvent::Tokens(t)));
                }
            } else if let Ok(s) = serde_json::from_slice::<DeviceStatus>(&p.payload) {
                self.boards.insert(s.device.clone(), s.clone());
                return Ok(Some(JobEvent::Board(s)));
            }
        }
    }

    /// Publishes one job and follows it until its result comes or `timeout` passes;
    /// `observe` sees every status and token message of this job on the way.
    pub async fn run_job(
        &mut self,
        device: Option<&str>,
        job: Map<String, Value>,
        timeout: Duration,
        mut observe: impl FnMut(&JobEvent),
    ) -> Result<Outcome, ClientError> {
        let id = self.publish_job(device, job).await?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_event(deadline).await? {
                None => return Ok(Outcome::timed_out(id, device.map(str::to_string), timeout)),
                Some(JobEvent::Result(o)) if o.id == id => return Ok(o),
                Some(ev @ JobEvent::Status(_)) | Some(ev @ JobEvent::Tokens(_)) => {
                    let ours = match &ev {
                        JobEvent::Status(s) => s.id == id,
                        JobEvent::Tokens(t) => t.id == id,
                        _ => false,
                    };
                    if ours {
                        observe(&ev);
                    }
                }
                Some(JobEvent::Disconnected(reason)) => {
                    tracing::warn!("lost the broker ({reason}); reconnecting")
                }
                Some(_) => {}
            }
        }
    }

    /// Disconnects and waits (up to 3 s) for the session tasks.
    pub async fn close(self) {
        let _ = self.session.disconnect().await;
        drop(self.session);
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.tracker.wait()).await;
        self.cancel.cancel();
    }
}

/// Refuses a job payload that `limits` says the board would not accept: over the
/// packet size (the broker would drop it silently), over the payload limit
/// (`payload_too_large`), or with a prompt over the prompt limit (`prompt_too_large`).
pub fn check_limits(
    id: &str,
    payload: &[u8],
    board: &str,
    limits: &BoardLimits,
) -> Result<(), ClientError> {
    let too_large = |what, size, limit, key: &'static str| ClientError::TooLarge {
        id: id.to_string(),
        what,
        size,
        limit,
        key,
        // The packet size is derived (4 × limits.max_payload_bytes, settings.rs).
        raise: if key == "max_packet_bytes" {
            "limits.max_payload_bytes"
        } else {
            key
        },
        board: board.to_string(),
    };
    // PUBLISH overhead beyond the payload: fixed header, topic, properties (the
    // Response Topic and Correlation Data); 1 KiB covers it.
    let packet = payload.len() + 1024;
    if packet > limits.max_packet_bytes as usize {
        return Err(too_large(
            "the packet",
            packet,
            limits.max_packet_bytes as usize,
            "max_packet_bytes",
        ));
    }
    if payload.len() > limits.max_payload_bytes {
        return Err(too_large(
            "the payload",
            payload.len(),
            limits.max_payload_bytes,
            "limits.max_payload_bytes",
        ));
    }
    let prompt = prompt_bytes(payload);
    if prompt > limits.max_prompt_bytes {
        return Err(too_large(
            "the prompt",
            prompt,
            limits.max_prompt_bytes,
            "limits.max_prompt_bytes",
        ));
    }
    Ok(())
}

/// Bytes of `prompt`, or of all `messages[].content` together (as the board counts).
fn prompt_bytes(payload: &[u8]) -> usize {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        return 0;
    };
    if let Some(p) = v.get("prompt").and_then(Value::as_str) {
        return p.len();
    }
    v.get("messages")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m.get("content").and_then(Value::as_str))
                .map(str::len)
                .sum()
        })
        .unwrap_or(0)
}

/// The online board with the fewest jobs (its queue, its running job, and what we
/// have in flight to it, `in_flight[device]`); `None` (shared queue) when no board is
/// online.
pub fn pick_board(
    boards: &BTreeMap<String, DeviceStatus>,
    in_flight: &HashMap<String, usize>,
) -> Option<String> {
    boards
        .values()
        .filter(|b| b.state == "online")
        .min_by_key(|b| {
            let ours = in_flight.get(&b.device).copied().unwrap_or(0);
            // The board's own count already includes some of ours; take the larger.
            let theirs = b.queue_length + usize::from(b.running.is_some());
            theirs.max(ours)
        })
        .map(|b| b.device.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_least_loaded_online_board() {
        let mk = |d: &str, state: &str, q: usize| DeviceStatus {
            device: d.into(),
            state: state.into(),
            version: "0".into(),
            at_unix_ns: 0,
            models: vec![],
            rails: vec![],
            simulated: true,
            queue_length: q,
            running: None,
            limits: None,
            power_modes: Default::default(),
        };
        let mut boards = BTreeMap::new();
        boards.insert("a".into(), mk("a", "online", 3));
        boards.insert("b".into(), mk("b", "online", 1));
        boards.insert("c".into(), mk("c", "offline", 0));
        assert_eq!(pick_board(&boards, &HashMap::new()).as_deref(), Some("b"));
        assert_eq!(pick_board(&BTreeMap::new(), &HashMap::new()), None);
        // Ours in flight count when the board's own status lags behind.
        let in_flight = HashMap::from([("b".to_string(), 5)]);
        assert_eq!(pick_board(&boards, &in_flight).as_deref(), Some("a"));
    }

    #[test]
    fn oversize_jobs_are_refused_naming_the_limit() {
        let l = BoardLimits {
            max_payload_bytes: 1000,
            max_packet_bytes: 4000,
            max_prompt_bytes: 100,
        };
        let job = |prompt: &str| serde_json::to_vec(&json!({"id": "j", "prompt": prompt})).unwrap();
        assert!(check_limits("j", &job("hi"), "board 'b'", &l).is_ok());
        let e = check_limits("j", &job(&"x".repeat(200)), "board 'b'", &l).unwrap_err();
        assert!(e.to_string().contains("limits.max_prompt_bytes"), "{e}");
        let e = check_limits("j", &job(&"x".repeat(2000)), "board 'b'", &l).unwrap_err();
        assert!(
            e.to_string()
                .contains("at most 1000 bytes (limits.max_payload_bytes"),
            "{e}"
        );
        let e = check_limits("j", &job(&"x".repeat(5000)), "board 'b'", &l).unwrap_err();
        assert!(e.to_string().contains("max_packet_bytes"), "{e}");
        let msgs = serde_json::to_vec(
            &json!({"messages": [{"role": "user", "content": "x".repeat(150)}]}),
        )
        .unwrap();
        assert_eq!(prompt_bytes(&msgs), 150);
    }
}
