//! The two tasks of a broker session (see the parent module for why two): the poll
//! task that owns rumqttc's `EventLoop`, and the session task that owns the
//! `AsyncClient`, keeps the overflow queue and matches PUBACKs to confirmations.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Filter, LastWill, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ClientError, Event, EventLoop, MqttOptions};
use rumqttc::{Outgoing as RumqttOutgoing, TlsConfiguration, Transport};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    backoff_delay, valid_publish_topic, Command, Confirm, MqttError, SessionEvent, SessionHandle,
    SessionOptions,
};

fn read_file(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, MqttError> {
    std::fs::read(path).map_err(|source| MqttError::ReadFile {
        what,
        path: path.clone(),
        source,
    })
}

fn build_options(opts: &SessionOptions) -> Result<MqttOptions, MqttError> {
    let mut o = MqttOptions::new(&opts.client_id, &opts.url.host, opts.url.port);
    o.set_keep_alive(opts.keep_alive.max(Duration::from_secs(5)));
    o.set_clean_start(opts.clean_start);
    o.set_manual_acks(opts.manual_acks);
    o.set_connection_timeout(10);
    // rumqttc pre-allocates one `Option<Publish>` slot per possible in-flight packet id;
    // unbounded (65 535 slots, ~13 MB touched) that was most of an idle daemon's RSS.
    o.set_outgoing_inflight_upper_limit(opts.max_inflight);
    let mut props = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
    props.session_expiry_interval = Some(opts.session_expiry_s);
    props.receive_maximum = Some(opts.receive_maximum.max(1));
    props.max_packet_size = Some(opts.max_packet_bytes);
    o.set_connect_properties(props);
    if let Some((u, p)) = &opts.credentials {
        o.set_credentials(u, p);
    }
    if let Some(w) = &opts.will {
        o.set_last_will(LastWill::new(
            &w.topic,
            w.payload.clone(),
            QoS::AtLeastOnce,
            true,
            None,
        ));
    }
    if opts.url.tls {
        let ca = match &opts.tls.ca_file {
            Some(p) => read_file("the CA file (mqtt.tls.ca_file)", p)?,
            None => read_file(
                "the system CA bundle",
                &PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            )?,
        };
        let client_auth = match (&opts.tls.cert_file, &opts.tls.key_file) {
            (Some(c), Some(k)) => Some((
                read_file("the client certificate (mqtt.tls.cert_file)", c)?,
                read_file("the client key (mqtt.tls.key_file)", k)?,
            )),
            _ => None,
        };
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

/// Starts the session's two tasks on `tracker`. Returns the handle and the event
/// stream (bounded: `receive_maximum` + 16, so with manual acks the broker can never
/// make the session task wait on it for long).
pub fn start(
    opts: SessionOptions,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(SessionHandle, mpsc::Receiver<SessionEvent>), MqttError> {
    let mqtt_opts = build_options(&opts)?;
    // rumqttc's own request channel: small; our session task keeps the overflow.
    let (client, eventloop) = AsyncClient::new(mqtt_opts, 64);
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (net_tx, net_rx) = mpsc::channel(256);
    let (ev_tx, ev_rx) = mpsc::channel(opts.receive_maximum as usize + 16);
    let (conn_tx, conn_rx) = watch::channel(false);
    let poll_stop = CancellationToken::new();

    tracker.spawn(poll_task(
        eventloop,
        net_tx,
        poll_stop.clone(),
        opts.backoff_min,
        opts.backoff_max,
    ));
    let session = SessionTask {
        client,
        subscriptions: opts.subscriptions.clone(),
        buf: VecDeque::new(),
        fifo: VecDeque::new(),
        inflight: HashMap::new(),
        collision: None,
        events: ev_tx,
        connected: conn_tx,
        disconnecting: false,
        broker_port: opts.url.port,
        broker_max_packet: None,
    };
    tracker.spawn(session.run(cmd_rx, net_rx, cancel, poll_stop));
    Ok((
        SessionHandle {
            tx: cmd_tx,
            connected: conn_rx,
        },
        ev_rx,
    ))
}

/// What the poll task forwards (boxed: an `Event` is ~400 bytes).
enum Net {
    Event(Box<Event>),
    Error(String),
}

/// [`Net`] unboxed, for matching (a short-lived local).
#[allow(clippy::large_enum_variant)]
enum NetEv {
    Event(Event),
    Error(String),
}

async fn poll_task(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Net>,
    stop: CancellationToken,
    backoff_min: Duration,
    backoff_max: Duration,
) {
    let mut attempt = 0u32;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(ev) => {
                if matches!(ev, Event::Incoming(Packet::ConnAck(_))) {
                    attempt = 0;
                }
                let done = matches!(ev, Event::Outgoing(RumqttOutgoing::Disconnect));
                if tx.send(Net::Event(Box::new(ev))).await.is_err() || done {
                    return;
                }
            }
            Err(e) => {
                let delay = backoff_delay(attempt, backoff_min, backoff_max);
                attempt = attempt.saturating_add(1);
                tracing::warn!(
                    "mqtt connection lost or refused: {e}; reconnecting in {} ms",
                    delay.as_millis()
                );
                if tx.send(Net::Error(e.to_string())).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

struct SessionTask {
    /// rumqttc's client: only `try_*` calls, so this task never blocks on rumqttc.
    client: AsyncClient,
    /// Re-subscribed on every CONNACK.
    subscriptions: Vec<String>,
    /// Requests rumqttc's channel could not take yet.
    buf: VecDeque<Command>,
    /// Confirmations of publishes handed to rumqttc, waiting for their packet id.
    fifo: VecDeque<Option<Confirm>>,
    /// Confirmations by packet id, waiting for PUBACK.
    inflight: HashMap<u16, Option<Confirm>>,
    /// A publish rumqttc parked because its packet id was still in flight.
    collision: Option<(u16, Option<Confirm>)>,
    /// Events to the owner.
    events: mpsc::Sender<SessionEvent>,
    /// Connection state for handles.
    connected: watch::Sender<bool>,
    /// A DISCONNECT was handed to rumqttc.
    disconnecting: bool,
    /// The broker's TCP port (for [`set_nodelay_to_port`]).
    broker_port: u16,
    /// The broker's Maximum Packet Size from its CONNACK. rumqttc fails the whole
    /// connection on a larger publish and loses it without an `Outgoing` event, which
    /// would shift the PUBACK pairing; such a publish is refused here instead.
    broker_max_packet: Option<u32>,
}

impl SessionTask {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut net_rx: mpsc::Receiver<Net>,
        cancel: CancellationToken,
        poll_stop: CancellationToken,
    ) {
        let mut cancel_deadline: Option<tokio::time::Instant> = None;
        loop {
            self.flush();
            let retry = !self.buf.is_empty();
            tokio::select! {
                biased;
                net = net_rx.recv() => match net {
                    Some(n) => {
                        if !self.on_net(n).await {
                            break;
                        }
                    }
                    None => break,
                },
                cmd = cmd_rx.recv(), if self.buf.len() < 4096 => match cmd {
                    Some(c) => self.buf.push_back(c),
                    // Every handle dropped: nothing more will be published.
                    None => {
                        if !self.disconnecting {
                            self.buf.push_back(Command::Disconnect);
                        }
                        cancel_deadline.get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(2));
                    }
                },
                _ = tokio::time::sleep(Duration::from_millis(20)), if retry => {}
                _ = cancel.cancelled(), if cancel_deadline.is_none() => {
                    // Owner gone without a clean disconnect: give the wire a moment.
                    cancel_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                }
                _ = sleep_until_opt(cancel_deadline) => break,
            }
        }
        poll_stop.cancel();
        let _ = self.connected.send(false);
    }

    /// Hands queued requests to rumqttc until its channel is full.
    fn flush(&mut self) {
        while let Some(cmd) = self.buf.front() {
            if let (Command::Publish(m), Some(max)) = (cmd, self.broker_max_packet) {
                // Fixed header + topic + properties: 1 KiB is a generous bound.
                let size = m.topic.len() + m.payload.len() + 1024;
                if size > max as usize {
                    tracing::error!(
                        "dropping a {} byte publish to '{}': the broker accepts at most {max} bytes per packet",
                        m.payload.len(),
                        m.topic
                    );
                    if let Some(Command::Publish(m)) = self.buf.pop_front() {
                        // Confirmed so an outbox row is not retried forever.
                        if let Some(c) = m.confirm {
                            c.fire();
                        }
                    }
                    continue;
                }
            }
            let res = match cmd {
                Command::Publish(m) => {
                    let props = m.properties.clone().unwrap_or_default();
                    self.client.try_publish_with_properties(
                        m.topic.clone(),
                        m.qos,
                        m.retain,
                        m.payload.clone(),
                        props,
                    )
                }
                Command::Ack(p) => self.client.try_ack(p),
                Command::Subscribe(f) => self
                    .client
                    .try_subscribe_many(f.iter().map(|t| Filter::new(t.clone(), QoS::AtLeastOnce))),
                Command::Unsubscribe(f) => self.client.try_unsubscribe(f.clone()),
                Command::Disconnect => self.client.try_disconnect(),
            };
            match res {
                Ok(()) => {
                    if let Some(Command::Publish(m)) = self.buf.pop_front() {
                        self.fifo.push_back(m.confirm);
                    } else {
                        // Acks, subscribes: nothing to track.
                    }
                }
                Err(ClientError::TryRequest(_)) | Err(ClientError::Request(_)) => {
                    // Full (or the event loop is gone): keep it and retry later. A
                    // publish rumqttc refuses outright (invalid topic) is dropped.
                    if let Some(Command::Publish(m)) = self.buf.front() {
                        if !valid_publish_topic(&m.topic) {
                            tracing::error!("dropping publish to invalid topic '{}'", m.topic);
                            self.buf.pop_front();
                            continue;
                        }
                    }
                    break;
                }
            }
        }
        if let Some(Command::Disconnect) = self.buf.front() {
            self.disconnecting = true;
        }
    }

    /// Returns false when the session should end.
    async fn on_net(&mut self, n: Net) -> bool {
        let n = match n {
            Net::Error(reason) => NetEv::Error(reason),
            Net::Event(ev) => NetEv::Event(*ev),
        };
        match n {
            NetEv::Error(reason) => {
                let _ = self.connected.send(false);
                let _ = self
                    .events
                    .send(SessionEvent::Disconnected { reason })
                    .await;
                if self.disconnecting {
                    return false;
                }
            }
            NetEv::Event(Event::Incoming(Packet::ConnAck(ack))) => {
                set_nodelay_to_port(self.broker_port);
                self.broker_max_packet = ack.properties.as_ref().and_then(|p| p.max_packet_size);
                let _ = self.connected.send(true);
                if !self.subscriptions.is_empty() {
                    self.buf
                        .push_front(Command::Subscribe(self.subscriptions.clone()));
                }
                let _ = self
                    .events
                    .send(SessionEvent::Connected {
                        session_present: ack.session_present,
                    })
                    .await;
            }
            NetEv::Event(Event::Incoming(Packet::Publish(p))) => {
                let _ = self.events.send(SessionEvent::Message(p)).await;
            }
            NetEv::Event(Event::Incoming(Packet::SubAck(_))) => {
                let _ = self.events.send(SessionEvent::Subscribed).await;
            }
            NetEv::Event(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(Some(c)) = self.inflight.remove(&ack.pkid) {
                    c.fire();
                }
            }
            NetEv::Event(Event::Outgoing(RumqttOutgoing::Publish(pkid))) => {
                if pkid != 0 && self.inflight.contains_key(&pkid) {
                    // A re-send after reconnect: already tracked.
                } else if self.collision.as_ref().is_some_and(|(c, _)| *c == pkid) {
                    let (_, confirm) = self.collision.take().unwrap_or((pkid, None));
                    self.inflight.insert(pkid, confirm);
                } else {
                    let confirm = self.fifo.pop_front().flatten();
                    if pkid != 0 {
                        self.inflight.insert(pkid, confirm);
                    } else if let Some(c) = confirm {
                        // QoS 0: nothing will acknowledge it.
                        c.fire();
                    }
                }
            }
            NetEv::Event(Event::Outgoing(RumqttOutgoing::AwaitAck(pkid))) => {
                let confirm = self.fifo.pop_front().flatten();
                self.collision = Some((pkid, confirm));
            }
            NetEv::Event(Event::Outgoing(RumqttOutgoing::Disconnect)) => {
                let _ = self.connected.send(false);
                return false;
            }
            NetEv::Event(_) => {}
        }
        true
    }
}

/// Sets TCP_NODELAY on this process's TCP sockets whose peer port is `port`.
///
/// rumqttc 0.24 has no option for it, and without it Nagle's algorithm holds a small
/// write that follows another unacknowledged one (a PUBACK, then a status) until the
/// broker's delayed ACK, ~40 ms on Linux: that was the whole publish → `running`
/// latency. Runs after each CONNACK; a few syscalls per open descriptor. Another
/// socket to the same port (a second client in this process) gets it too, harmlessly.
fn set_nodelay_to_port(port: u16) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: getpeername/getsockopt/setsockopt only read or write the buffers we
        // pass with their sizes; a descriptor that is not a socket fails with ENOTSOCK.
        unsafe {
            let mut addr: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if libc::getpeername(fd, &mut addr as *mut _ as *mut libc::sockaddr, &mut len) != 0 {
                continue;
            }
            let peer_port = match i32::from(addr.ss_family) {
                libc::AF_INET => {
                    let a = &*(&addr as *const _ as *const libc::sockaddr_in);
                    u16::from_be(a.sin_port)
                }
                libc::AF_INET6 => {
                    let a = &*(&addr as *const _ as *const libc::sockaddr_in6);
                    u16::from_be(a.sin6_port)
                }
                _ => continue,
            };
            if peer_port != port {
                continue;
            }
            let mut ty: libc::c_int = 0;
            let mut ty_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                &mut ty as *mut _ as *mut libc::c_void,
                &mut ty_len,
            ) != 0
                || ty != libc::SOCK_STREAM
            {
                continue;
            }
            let one: libc::c_int = 1;
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
