//! The broker session: rumqttc's MQTT v5 client with a persistent session, manual
//! acks, publish confirmation on PUBACK, and reconnects with backoff.
//!
//! Two tasks, neither ever waits on inference:
//! - the **poll task** owns rumqttc's `EventLoop` and does nothing but `poll()` it and
//!   forward what happened. rumqttc reconnects immediately and forever when polled
//!   after an error; this task sleeps an exponential backoff with full jitter first.
//! - the **session task** owns the `AsyncClient`. Callers talk to it over a bounded
//!   channel ([`SessionHandle`]); it feeds rumqttc's request channel with `try_*` calls
//!   only (keeping its own queue when that channel is full, e.g. while disconnected),
//!   so it can never block on rumqttc, and it matches PUBACKs to confirmations.
//!
//! Matching PUBACKs: rumqttc gives a publish its packet id only when the event loop
//! takes it from the request channel, and reports that as `Outgoing::Publish(pkid)` in
//! request order. The session task is the only producer of that channel, so it keeps
//! a FIFO of the confirmations it sent and pairs each `Outgoing::Publish` with the
//! front one; `Incoming::PubAck(pkid)` then fires the confirmation. After a reconnect
//! rumqttc re-sends unacked publishes with their old packet ids first; those ids are
//! already in the in-flight map and are recognised as re-sends.
//!
//! - `mod.rs`     — options, events, messages, the [`SessionHandle`], backoff, properties
//! - `session.rs` — [`start`]: the rumqttc options, the poll task and the session task

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::{mpsc, watch};

mod session;

pub use session::start;

/// Broker session errors.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error(
        "invalid broker URL '{url}': {reason} (expected mqtt://HOST:PORT or mqtts://HOST:PORT)"
    )]
    BadUrl { url: String, reason: String },
    #[error("cannot read {what} '{path}': {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the MQTT session has stopped")]
    Closed,
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS (`mqtts://`, `ssl://`).
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:1883]`, `tcp://…`, `mqtts://host[:8883]`, `ssl://…`, or a bare `host:port`.
    pub fn parse(url: &str) -> Result<BrokerUrl, MqttError> {
        let bad = |reason: &str| MqttError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (tls, rest) = match url.split_once("://") {
            Some(("mqtt" | "tcp", r)) => (false, r),
            Some(("mqtts" | "ssl" | "tls", r)) => (true, r),
            Some((scheme, _)) => return Err(bad(&format!("unknown scheme '{scheme}'"))),
            None => (false, url),
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(bad("expected HOST or HOST:PORT after the scheme"));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(h) = rest.strip_prefix('[') {
            // [v6addr]:port
            let (h, p) = h.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match p.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("port is not a number 1-65535"))?,
                None => default_port,
            };
            (h.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| bad("port is not a number 1-65535"))?,
                ),
                None => (rest.to_string(), default_port),
            }
        };
        if host.is_empty() || port == 0 {
            return Err(bad("empty host or port 0"));
        }
        Ok(BrokerUrl { host, port, tls })
    }
}

/// TLS material (PEM files). No CA file = the system's CA bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) to trust.
    pub ca_file: Option<PathBuf>,
    /// Client certificate, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client key, for mutual TLS.
    pub key_file: Option<PathBuf>,
}

/// The Will: what the broker publishes for us if we vanish.
#[derive(Debug, Clone, PartialEq)]
pub struct Will {
    /// Topic (our retained status topic).
    pub topic: String,
    /// Payload (our status with `state: offline`).
    pub payload: Vec<u8>,
}

/// Everything the session needs to connect.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Broker address.
    pub url: BrokerUrl,
    /// MQTT client id; stable across restarts so the broker keeps our session.
    pub client_id: String,
    /// Username and password.
    pub credentials: Option<(String, String)>,
    /// TLS files (used when `url.tls`).
    pub tls: TlsFiles,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Start a fresh session (false for the daemon: the broker keeps our queued jobs).
    pub clean_start: bool,
    /// How long the broker keeps our session while we are away, seconds.
    pub session_expiry_s: u32,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Most unacked QoS 1 messages the broker may send us (MQTT v5 Receive Maximum);
    /// with manual acks this bounds what we hold in memory.
    pub receive_maximum: u16,
    /// Largest packet we accept (MQTT v5 Maximum Packet Size).
    pub max_packet_bytes: u32,
    /// Most of our QoS 1 publishes awaiting PUBACK at once (the broker's Receive
    /// Maximum lowers it further); more wait in the session's queue.
    pub max_inflight: u16,
    /// Ack incoming QoS 1 messages only when told to ([`SessionHandle::ack`]).
    pub manual_acks: bool,
    /// Will message (retained, QoS 1).
    pub will: Option<Will>,
    /// Filters to subscribe with QoS 1 after every connect.
    pub subscriptions: Vec<String>,
}

impl SessionOptions {
    /// Options with the protocol's defaults: persistent session (7 days), manual acks.
    pub fn new(url: BrokerUrl, client_id: impl Into<String>) -> Self {
        SessionOptions {
            url,
            client_id: client_id.into(),
            credentials: None,
            tls: TlsFiles::default(),
            keep_alive: Duration::from_secs(30),
            clean_start: false,
            session_expiry_s: 7 * 24 * 3600,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            receive_maximum: 32,
            max_packet_bytes: 4 * 1024 * 1024,
            max_inflight: 64,
            manual_acks: true,
            will: None,
            subscriptions: Vec::new(),
        }
    }
}

/// What the session reports to its owner.
#[derive(Debug)]
pub enum SessionEvent {
    /// CONNACK received; `session_present` says the broker kept our session.
    Connected {
        /// The broker resumed our session (queued messages will follow).
        session_present: bool,
    },
    /// The connection dropped; the session reconnects on its own.
    Disconnected {
        /// Why, for the log.
        reason: String,
    },
    /// An incoming PUBLISH. With manual acks, call [`SessionHandle::ack`] when done.
    Message(Publish),
    /// The broker granted a SUBSCRIBE (messages on those filters flow from now on).
    Subscribed,
}

/// A confirmation: `tag` is sent on `tx` when the broker acknowledges the publish.
#[derive(Debug, Clone)]
pub struct Confirm {
    /// Caller's identifier (an outbox sequence number).
    pub tag: i64,
    /// Where to send it.
    pub tx: mpsc::Sender<i64>,
}

impl Confirm {
    fn fire(self) {
        // The receiver's capacity bounds the caller's in-flight window; a full or
        // closed channel only means the caller will republish (at-least-once).
        let _ = self.tx.try_send(self.tag);
    }
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct OutMessage {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS 0 or 1.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// MQTT v5 properties (Response Topic, Correlation Data, content type).
    pub properties: Option<PublishProperties>,
    /// Fired on PUBACK (QoS 1 only).
    pub confirm: Option<Confirm>,
}

impl OutMessage {
    /// A QoS 1 JSON message.
    pub fn json(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        OutMessage {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            confirm: None,
        }
    }
}

enum Command {
    Publish(OutMessage),
    Ack(Publish),
    Subscribe(Vec<String>),
    Unsubscribe(String),
    Disconnect,
}

/// A cheap, clonable handle to the session task.
#[derive(Clone)]
pub struct SessionHandle {
    /// Commands to the session task (bounded; the task drains it promptly).
    tx: mpsc::Sender<Command>,
    /// True while connected.
    connected: watch::Receiver<bool>,
}

impl SessionHandle {
    /// Queues a publish. Returns once the session task has it (not on PUBACK; use
    /// `confirm` for that).
    pub async fn publish(&self, msg: OutMessage) -> Result<(), MqttError> {
        self.tx
            .send(Command::Publish(msg))
            .await
            .map_err(|_| MqttError::Closed)
    }

    /// Publishes without waiting; drops the message when the session's queue is full
    /// (for QoS 0 streams: tokens, live power).
    pub fn try_publish(&self, msg: OutMessage) -> bool {
        self.tx.try_send(Command::Publish(msg)).is_ok()
    }

    /// Acknowledges an incoming QoS 1 message (manual acks).
    pub async fn ack(&self, publish: Publish) -> Result<(), MqttError> {
        self.tx
            .send(Command::Ack(publish))
            .await
            .map_err(|_| MqttError::Closed)
    }

    /// Subscribes (QoS 1) now, in addition to the filters of every reconnect.
    pub async fn subscribe(&self, filters: Vec<String>) -> Result<(), MqttError> {
        self.tx
            .send(Command::Subscribe(filters))
            .await
            .map_err(|_| MqttError::Closed)
    }

    /// Unsubscribes one filter.
    pub async fn unsubscribe(&self, filter: String) -> Result<(), MqttError> {
        self.tx
            .send(Command::Unsubscribe(filter))
            .await
            .map_err(|_| MqttError::Closed)
    }

    /// Sends DISCONNECT (normal: the broker keeps the session and does not publish
    /// the Will) and ends the session's tasks once it is on the wire.
    pub async fn disconnect(&self) -> Result<(), MqttError> {
        self.tx
            .send(Command::Disconnect)
            .await
            .map_err(|_| MqttError::Closed)
    }

    /// Connection state, updated on every CONNACK and every drop.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Waits until connected (or the session ends).
    pub async fn wait_connected(&self) -> Result<(), MqttError> {
        let mut rx = self.connected.clone();
        rx.wait_for(|c| *c).await.map_err(|_| MqttError::Closed)?;
        Ok(())
    }
}

/// Delay before reconnect attempt `attempt` (0-based): exponential from `min`, capped at
/// `max`, with full jitter over the upper half so a fleet that lost its broker does not
/// reconnect in lockstep.
pub fn backoff_delay(attempt: u32, min: Duration, max: Duration) -> Duration {
    let exp = min
        .checked_mul(1u32 << attempt.min(20))
        .unwrap_or(max)
        .min(max)
        .max(min);
    let lo = exp / 2;
    let jitter = rand::thread_rng().gen_range(0..=(exp - lo).as_millis() as u64);
    lo + Duration::from_millis(jitter)
}

fn valid_publish_topic(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#', '\0'])
}

/// The MQTT v5 properties for a JSON message, with Correlation Data when given.
pub fn json_properties(correlation: Option<Vec<u8>>) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        correlation_data: correlation.map(Bytes::from),
        ..PublishProperties::default()
    }
}

/// The Response Topic and Correlation Data of an incoming PUBLISH.
pub fn reply_of(p: &Publish) -> crate::jobs::journal::Reply {
    let props = p.properties.as_ref();
    crate::jobs::journal::Reply {
        response_topic: props
            .and_then(|p| p.response_topic.clone())
            .filter(|t| valid_publish_topic(t)),
        correlation: props.and_then(|p| p.correlation_data.as_ref().map(|b| b.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = BrokerUrl::parse("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 1884, false));
        let u = BrokerUrl::parse("mqtts://broker.local").unwrap();
        assert_eq!((u.port, u.tls), (8883, true));
        assert_eq!(BrokerUrl::parse("localhost").unwrap().port, 1883);
        assert_eq!(BrokerUrl::parse("tcp://[::1]:99").unwrap().host, "::1");
        assert!(BrokerUrl::parse("http://x").is_err());
        assert!(BrokerUrl::parse("mqtt://x:notaport").is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for attempt in 0..40 {
            let d = backoff_delay(attempt, min, max);
            assert!(d >= min / 2 && d <= max, "{attempt}: {d:?}");
        }
        let late = backoff_delay(10, min, max);
        assert!(late >= Duration::from_millis(2500));
    }
}
