//! `edgewatt submit`: send jobs to a daemon (or a fleet) and wait for their results.
//!
//! Every job is published with an MQTT v5 Response Topic (`PREFIX/reply/<uuid>`, ours
//! alone) and Correlation Data (the job id), so the result comes back to this process
//! whichever board ran it. States come from `PREFIX/+/job/ID/status` and streamed text
//! from `PREFIX/+/job/ID/tokens`.
//!
//! Fleets (docs/protocol.md, "Fleets"): Mosquitto 2.0 hands shared-subscription
//! messages out round-robin, blind to load, and keeps a dead member's share queued
//! until its session expires. So without `--device`, `submit` reads the boards'
//! retained statuses and sends each job straight to the online board with the fewest
//! jobs (its queue + running + ours in flight); only with `--shared`, or when no board
//! has published a status, does it use the shared fleet queue `PREFIX/jobs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::jobs::mqtt::{
    self, BrokerUrl, OutMessage, SessionEvent, SessionHandle, SessionOptions, TlsFiles,
};
use crate::jobs::protocol::{validate_id, DeviceStatus, JobState, StatusMsg, TokenMsg};

/// Options for `edgewatt submit`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SubmitArgs {
    /// Model name (file stem of a .gguf on the board).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Prompt text.
    #[arg(long, short, conflicts_with = "messages")]
    pub prompt: Option<String>,
    /// Chat messages as a JSON array of {role, content}.
    #[arg(long)]
    pub messages: Option<String>,
    /// Most tokens to generate.
    #[arg(long, short = 'n')]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// RNG seed.
    #[arg(long)]
    pub seed: Option<u32>,
    /// Threads on the board.
    #[arg(long)]
    pub threads: Option<u32>,
    /// Context size.
    #[arg(long)]
    pub n_ctx: Option<u32>,
    /// Stop string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Measured repetitions.
    #[arg(long)]
    pub repeat: Option<u32>,
    /// More job fields as a JSON object (merged last; any protocol field).
    #[arg(long, value_name = "JSON")]
    pub extra: Option<String>,
    /// Job id (default: a fresh uuid).
    #[arg(long)]
    pub id: Option<String>,
    /// Send to this board (`PREFIX/DEV/jobs`) instead of the fleet.
    #[arg(long, value_name = "DEV")]
    pub device: Option<String>,
    /// Use the shared fleet queue `PREFIX/jobs` (round-robin by the broker) instead of
    /// picking the least-loaded board from their retained statuses.
    #[arg(long, conflicts_with = "device")]
    pub shared: bool,
    /// Do not stream tokens.
    #[arg(long)]
    pub no_stream: bool,
    /// Ask for the trace: none, summary or full.
    #[arg(long)]
    pub trace: Option<String>,
    /// Print the result object as JSON (the protocol's result schema) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Submit every job in this JSONL file (one job object per line; `id` and `model`
    /// optional) and show a progress bar.
    #[arg(long, short, value_name = "JOBS.jsonl")]
    pub file: Option<PathBuf>,
    /// Where `--file` writes results (JSONL); default: JOBS.results.jsonl.
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Jobs in flight at once with `--file`.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Give up on a job after this many seconds without a result.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// Broker URL; default: mqtt.url of the configuration.
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// Topic prefix; default: mqtt.prefix.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Broker user name; default: mqtt.username.
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the broker password; default: mqtt.password(_file).
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<PathBuf>,
    /// CA bundle (PEM) for mqtts://; default: mqtt.tls_ca.
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM); default: mqtt.tls_cert.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM); default: mqtt.tls_key.
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
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

/// Runs `edgewatt submit`. Fails (non-zero exit) when any job does not succeed.
pub fn run(args: &SubmitArgs, cfg: &Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(args, cfg))
}

/// The async body of [`run`] (tests call it on their own runtime).
pub async fn run_async(args: &SubmitArgs, cfg: &Config) -> anyhow::Result<()> {
    let jobs = match &args.file {
        Some(path) => read_jobs_file(path, args)?,
        None => vec![job_from_flags(args)?],
    };
    let outcomes = submit(args, cfg, jobs).await?;
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.state != Some(JobState::Succeeded))
        .collect();
    if args.file.is_none() {
        let o = &outcomes[0];
        if args.json {
            println!("{}", serde_json::to_string_pretty(&o.result)?);
        } else {
            print!("{}", result_table(&o.result));
        }
    }
    match failed.first() {
        None => Ok(()),
        Some(o) if outcomes.len() == 1 => bail!("{}", describe_failure(o)),
        Some(_) => bail!(
            "{} of {} jobs did not succeed (first: {})",
            failed.len(),
            outcomes.len(),
            describe_failure(failed[0])
        ),
    }
}

fn describe_failure(o: &Outcome) -> String {
    let state = o.state.map_or("timed out", |s| s.as_str());
    let err = o.result.get("error");
    let code = err
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let msg = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if code.is_empty() {
        format!("job '{}' {state}", o.id)
    } else {
        format!("job '{}' {state}: {msg} ({code})", o.id)
    }
}

/// The job object from the command-line flags.
pub fn job_from_flags(args: &SubmitArgs) -> anyhow::Result<Map<String, Value>> {
    let mut job = Map::new();
    if let Some(p) = &args.prompt {
        job.insert("prompt".into(), json!(p));
    }
    if let Some(m) = &args.messages {
        let v: Value = serde_json::from_str(m).context("--messages is not valid JSON")?;
        job.insert("messages".into(), v);
    }
    for (k, v) in [
        ("max_tokens", args.max_tokens.map(|v| json!(v))),
        ("temperature", args.temperature.map(|v| json!(v))),
        ("seed", args.seed.map(|v| json!(v))),
        ("threads", args.threads.map(|v| json!(v))),
        ("n_ctx", args.n_ctx.map(|v| json!(v))),
        ("repeat", args.repeat.map(|v| json!(v))),
        ("trace", args.trace.as_ref().map(|v| json!(v))),
    ] {
        if let Some(v) = v {
            job.insert(k.into(), v);
        }
    }
    if !args.stop.is_empty() {
        job.insert("stop".into(), json!(args.stop));
    }
    if let Some(extra) = &args.extra {
        match serde_json::from_str::<Value>(extra).context("--extra is not valid JSON")? {
            Value::Object(m) => job.extend(m),
            _ => bail!("--extra must be a JSON object"),
        }
    }
    if let Some(id) = &args.id {
        job.insert("id".into(), json!(id));
    }
    if !job.contains_key("prompt") && !job.contains_key("messages") {
        bail!("give --prompt TEXT, --messages JSON or --file JOBS.jsonl");
    }
    Ok(job)
}

fn read_jobs_file(path: &PathBuf, args: &SubmitArgs) -> anyhow::Result<Vec<Map<String, Value>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read '{}'", path.display()))?;
    let mut jobs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not valid JSON", path.display(), n + 1))?;
        let Value::Object(mut m) = v else {
            bail!("{}:{}: a job must be a JSON object", path.display(), n + 1);
        };
        if args.no_stream {
            m.entry("stream").or_insert(json!(false));
        }
        jobs.push(m);
    }
    if jobs.is_empty() {
        bail!("'{}' holds no jobs", path.display());
    }
    Ok(jobs)
}

fn session_options(args: &SubmitArgs, cfg: &Config) -> anyhow::Result<SessionOptions> {
    let url = BrokerUrl::parse(args.broker.as_deref().unwrap_or(&cfg.mqtt.url))?;
    let client_id = format!("edgewatt-submit-{}", uuid::Uuid::new_v4().simple());
    let mut o = SessionOptions::new(url, client_id);
    o.clean_start = true;
    o.session_expiry_s = 0;
    o.manual_acks = false;
    o.receive_maximum = 1024;
    o.backoff_min = Duration::from_millis(200);
    o.backoff_max = Duration::from_secs(5);
    o.max_packet_bytes = 64 * 1024 * 1024;
    o.tls = TlsFiles {
        ca_file: args.tls_ca.clone().or_else(|| cfg.mqtt.tls_ca.clone()),
        cert_file: args.tls_cert.clone().or_else(|| cfg.mqtt.tls_cert.clone()),
        key_file: args.tls_key.clone().or_else(|| cfg.mqtt.tls_key.clone()),
    };
    let username = args.username.clone().or_else(|| cfg.mqtt.username.clone());
    if let Some(u) = username {
        let password = match &args.password_file {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the password file '{}'", p.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
            None => cfg.mqtt.resolve_password()?.unwrap_or_default(),
        };
        o.credentials = Some((u, password));
    }
    Ok(o)
}

/// A job waiting for its result.
struct Pending {
    /// Where it went (a board, or `None` for the shared queue).
    device: Option<String>,
    /// When it was published.
    sent: Instant,
}

/// Submits `jobs` and waits for all their results.
pub async fn submit(
    args: &SubmitArgs,
    cfg: &Config,
    jobs: Vec<Map<String, Value>>,
) -> anyhow::Result<Vec<Outcome>> {
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| cfg.mqtt.prefix.clone());
    let mut opts = session_options(args, cfg)?;
    let reply_topic = format!("{prefix}/reply/{}", uuid::Uuid::new_v4().simple());
    let single = jobs.len() == 1;
    let fleet = args.device.is_none() && !args.shared;
    let mut subs = vec![reply_topic.clone(), format!("{prefix}/+/job/+/status")];
    if single && !args.no_stream && !args.json {
        subs.push(format!("{prefix}/+/job/+/tokens"));
    }
    if fleet {
        subs.push(format!("{prefix}/+/status"));
    }
    opts.subscriptions = subs;

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (session, mut events) = mqtt::start(opts, cancel.clone(), &tracker)?;
    let result = drive(
        args,
        &prefix,
        &reply_topic,
        fleet,
        jobs,
        &session,
        &mut events,
    )
    .await;
    let _ = session.disconnect().await;
    drop(session);
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), tracker.wait()).await;
    cancel.cancel();
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    args: &SubmitArgs,
    prefix: &str,
    reply_topic: &str,
    fleet: bool,
    jobs: Vec<Map<String, Value>>,
    session: &SessionHandle,
    events: &mut mpsc::Receiver<SessionEvent>,
) -> anyhow::Result<Vec<Outcome>> {
    let single = jobs.len() == 1;
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    let connect_deadline = Instant::now() + Duration::from_secs(15);

    // Wait for the SUBACK: statuses published before it would be missed.
    loop {
        let ev = tokio::time::timeout_at(connect_deadline.into(), events.recv())
            .await
            .map_err(|_| anyhow::anyhow!("cannot reach the broker within 15 s"))?;
        match ev {
            Some(SessionEvent::Subscribed) => break,
            Some(SessionEvent::Disconnected { reason }) => tracing::warn!("broker: {reason}"),
            Some(_) => {}
            None => bail!("the MQTT session ended"),
        }
    }

    // Retained board statuses (fleet mode): give them a moment to arrive.
    let mut boards: BTreeMap<String, DeviceStatus> = BTreeMap::new();
    if fleet {
        let until = Instant::now() + Duration::from_millis(700);
        while let Ok(Some(ev)) = tokio::time::timeout_at(until.into(), events.recv()).await {
            if let SessionEvent::Message(p) = ev {
                if let Ok(s) = serde_json::from_slice::<DeviceStatus>(&p.payload) {
                    boards.insert(s.device.clone(), s);
                }
            }
        }
        if !boards.values().any(|b| b.state == "online") {
            eprintln!("no board has announced itself online under '{prefix}/+/status'; using the shared queue '{prefix}/jobs'");
        }
    }

    let progress = (!single).then(|| {
        let pb = indicatif::ProgressBar::new(jobs.len() as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} jobs  {msg}  [{elapsed_precise}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    });
    let mut out_file = match (&args.file, single) {
        (Some(path), false) => {
            let p = args
                .output
                .clone()
                .unwrap_or_else(|| path.with_extension("results.jsonl"));
            Some((
                std::io::BufWriter::new(
                    std::fs::File::create(&p)
                        .with_context(|| format!("cannot create '{}'", p.display()))?,
                ),
                p,
            ))
        }
        _ => None,
    };

    let mut todo: std::collections::VecDeque<Map<String, Value>> = jobs.into();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut done: Vec<Outcome> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut n = 0usize;
    let window = if single { 1 } else { args.concurrency.max(1) };
    let mut last_state_line = String::new();

    loop {
        // Fill the window.
        while pending.len() < window {
            let Some(mut job) = todo.pop_front() else {
                break;
            };
            n += 1;
            let id = match job.get("id").and_then(Value::as_str) {
                Some(id) => id.to_string(),
                None => {
                    let id = format!("{}", uuid::Uuid::new_v4().simple());
                    job.insert("id".into(), json!(id));
                    id
                }
            };
            validate_id(&id).map_err(|e| anyhow::anyhow!("job #{n}: {e}"))?;
            if let Some(m) = &args.model {
                job.entry("model").or_insert(json!(m));
            }
            if single && !args.no_stream && !args.json {
                job.entry("stream").or_insert(json!(true));
            }
            let device = if let Some(d) = &args.device {
                Some(d.clone())
            } else if fleet {
                pick_board(&boards, &pending)
            } else {
                None
            };
            let topic = match &device {
                Some(d) => format!("{prefix}/{d}/jobs"),
                None => format!("{prefix}/jobs"),
            };
            let payload = serde_json::to_vec(&Value::Object(job))?;
            let msg = OutMessage {
                topic,
                payload: Bytes::from(payload),
                qos: rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                retain: false,
                properties: Some(PublishProperties {
                    response_topic: Some(reply_topic.to_string()),
                    correlation_data: Some(Bytes::from(id.clone().into_bytes())),
                    content_type: Some("application/json".into()),
                    payload_format_indicator: Some(1),
                    ..PublishProperties::default()
                }),
                confirm: None,
            };
            session.publish(msg).await?;
            pending.insert(
                id,
                Pending {
                    device,
                    sent: Instant::now(),
                },
            );
        }
        if pending.is_empty() {
            break;
        }

        // Wait for the next event, or the oldest job's deadline.
        let next_deadline = pending
            .values()
            .map(|p| p.sent + timeout)
            .min()
            .unwrap_or_else(Instant::now);
        let ev = tokio::time::timeout_at(next_deadline.into(), events.recv()).await;
        let mut finished: Vec<Outcome> = Vec::new();
        match ev {
            Err(_) => {
                let now = Instant::now();
                let expired: Vec<String> = pending
                    .iter()
                    .filter(|(_, p)| p.sent + timeout <= now)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in expired {
                    let p = pending.remove(&id);
                    finished.push(Outcome {
                        result: json!({
                            "id": id,
                            "device": p.and_then(|p| p.device),
                            "state": "timeout",
                            "error": {"code": "timeout", "message": format!("no result within {} s", timeout.as_secs())},
                        }),
                        id,
                        state: None,
                    });
                }
            }
            Ok(None) => bail!("the MQTT session ended"),
            Ok(Some(SessionEvent::Message(p))) => {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                if topic == reply_topic {
                    if let Ok(result) = serde_json::from_slice::<Value>(&p.payload) {
                        let id = p
                            .properties
                            .as_ref()
                            .and_then(|pr| pr.correlation_data.as_ref())
                            .map(|c| String::from_utf8_lossy(c).into_owned())
                            .or_else(|| {
                                result.get("id").and_then(Value::as_str).map(str::to_string)
                            });
                        if let Some(id) = id {
                            // At-least-once: a result may come twice; count it once.
                            if pending.remove(&id).is_some() && seen.insert(id.clone()) {
                                let state = result
                                    .get("state")
                                    .and_then(Value::as_str)
                                    .and_then(JobState::parse);
                                finished.push(Outcome { id, state, result });
                            }
                        }
                    }
                } else if topic.ends_with("/status") && topic.contains("/job/") {
                    if let Ok(s) = serde_json::from_slice::<StatusMsg>(&p.payload) {
                        if single && pending.contains_key(&s.id) && !args.json {
                            let line = match (&s.phase, &s.error) {
                                (_, Some(e)) => format!(
                                    "[{} on {}: {} ({})]",
                                    s.state.as_str(),
                                    s.device,
                                    e.message,
                                    e.code
                                ),
                                (Some(ph), None) => {
                                    format!("[{} on {}: {ph}]", s.state.as_str(), s.device)
                                }
                                (None, None) => format!("[{} on {}]", s.state.as_str(), s.device),
                            };
                            if line != last_state_line {
                                eprintln!("{line}");
                                last_state_line = line;
                            }
                        }
                    }
                } else if topic.ends_with("/tokens") {
                    if let Ok(t) = serde_json::from_slice::<TokenMsg>(&p.payload) {
                        if single && pending.contains_key(&t.id) {
                            print!("{}", t.text);
                            let _ = std::io::stdout().flush();
                        }
                    }
                } else if let Ok(s) = serde_json::from_slice::<DeviceStatus>(&p.payload) {
                    boards.insert(s.device.clone(), s);
                }
            }
            Ok(Some(SessionEvent::Disconnected { reason })) => {
                tracing::warn!("lost the broker ({reason}); reconnecting");
            }
            Ok(Some(_)) => {}
        }
        for o in finished {
            if single && !args.json && o.result.get("text").is_some() && !last_state_line.is_empty()
            {
                println!();
            }
            if let Some((f, _)) = &mut out_file {
                writeln!(f, "{}", serde_json::to_string(&o.result)?)?;
            }
            if let Some(pb) = &progress {
                pb.inc(1);
                let failed = done
                    .iter()
                    .filter(|d| d.state != Some(JobState::Succeeded))
                    .count()
                    + usize::from(o.state != Some(JobState::Succeeded));
                pb.set_message(format!("{failed} not succeeded"));
            }
            done.push(o);
        }
    }
    if let Some(pb) = &progress {
        pb.finish();
    }
    if let Some((mut f, p)) = out_file {
        f.flush()?;
        eprintln!("results written to '{}'", p.display());
    }
    Ok(done)
}

/// The online board with the fewest jobs (its queue, its running job, and what we
/// have in flight to it); `None` (shared queue) when no board is online.
fn pick_board(
    boards: &BTreeMap<String, DeviceStatus>,
    pending: &HashMap<String, Pending>,
) -> Option<String> {
    boards
        .values()
        .filter(|b| b.state == "online")
        .min_by_key(|b| {
            let ours = pending
                .values()
                .filter(|p| p.device.as_deref() == Some(&b.device))
                .count();
            // The board's own count already includes some of ours; take the larger.
            let theirs = b.queue_length + usize::from(b.running.is_some());
            theirs.max(ours)
        })
        .map(|b| b.device.clone())
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

/// The human-readable result: a speed table and an energy table.
pub fn result_table(r: &Value) -> String {
    let mut s = String::new();
    let id = r.get("id").and_then(Value::as_str).unwrap_or("?");
    let dev = r.get("device").and_then(Value::as_str).unwrap_or("?");
    let state = r.get("state").and_then(Value::as_str).unwrap_or("?");
    s.push_str(&format!("job {id} on {dev}: {state}"));
    if let Some(e) = r.get("error") {
        s.push_str(&format!(
            " — {} ({})",
            e.get("message").and_then(Value::as_str).unwrap_or(""),
            e.get("code").and_then(Value::as_str).unwrap_or("")
        ));
    }
    s.push('\n');
    if r.get("timings").is_none() {
        return s;
    }
    let model = r
        .get("model")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    let quant = r
        .get("model")
        .and_then(|m| m.get("quant"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let fr = r.get("finish_reason").and_then(Value::as_str).unwrap_or("");
    let pt = num(r, &["tokens", "prompt"]).unwrap_or(0.0);
    let gt = num(r, &["tokens", "generated"]).unwrap_or(0.0);
    let t = |k: &str| num(r, &["timings", k]).unwrap_or(0.0);
    s.push_str(&format!(
        "model {model} {quant}, finish {fr}, {pt:.0} prompt + {gt:.0} generated tokens\n"
    ));
    s.push_str("  phase        ms      tok/s\n");
    s.push_str(&format!("  queue  {:>9.1}\n", t("queue_ms")));
    s.push_str(&format!("  load   {:>9.1}\n", t("load_ms")));
    s.push_str(&format!(
        "  prefill{:>9.1}  {:>9.1}\n",
        t("prefill_ms"),
        t("prefill_tps")
    ));
    s.push_str(&format!("  ttft   {:>9.1}\n", t("ttft_ms")));
    s.push_str(&format!(
        "  decode {:>9.1}  {:>9.1}\n",
        t("decode_ms"),
        t("decode_tps")
    ));
    s.push_str(&format!("  total  {:>9.1}\n", t("total_ms")));
    s.push_str(&format!(
        "  token latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\n",
        num(r, &["timings", "token_latency_ms", "p50"]).unwrap_or(0.0),
        num(r, &["timings", "token_latency_ms", "p90"]).unwrap_or(0.0),
        num(r, &["timings", "token_latency_ms", "p99"]).unwrap_or(0.0),
        num(r, &["timings", "token_latency_ms", "max"]).unwrap_or(0.0),
    ));
    let Some(e) = r.get("energy").filter(|e| !e.is_null()) else {
        s.push_str("energy: not measured (no power sensors configured on the board)\n");
        return s;
    };
    let sim = e.get("simulated").and_then(Value::as_bool).unwrap_or(false);
    let defs = e.get("definitions").and_then(Value::as_str).unwrap_or("?");
    s.push_str(&format!(
        "energy ({}definitions {defs}, {:.0} Hz, {} samples, {} gaps):\n",
        if sim { "SIMULATED sensor, " } else { "" },
        num(e, &["sample_rate_hz"]).unwrap_or(0.0),
        num(e, &["samples"]).unwrap_or(0.0),
        num(e, &["gaps"]).unwrap_or(0.0),
    ));
    s.push_str("  rail              idle W   avg W  peak W   load J prefill J decode J  total J\n");
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
    for rail in e
        .get("rails")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = rail.get("name").and_then(Value::as_str).unwrap_or("?");
        let total = rail.get("total").and_then(Value::as_bool).unwrap_or(false);
        s.push_str(&format!(
            "  {:<16}{:>8}{:>8}{:>8}{:>9}{:>9}{:>9}{:>9}\n",
            format!("{name}{}", if total { "*" } else { "" }),
            f(num(rail, &["idle_w"])),
            f(num(rail, &["avg_w"])),
            f(num(rail, &["peak_w"])),
            f(num(rail, &["energy_j", "load"])),
            f(num(rail, &["energy_j", "prefill"])),
            f(num(rail, &["energy_j", "decode"])),
            f(num(rail, &["energy_j", "total"])),
        ));
    }
    s.push_str(&format!(
        "  J/token decode {}  e2e {}  tokens/J {}  (gross, on {}; * = board total)\n",
        f(num(e, &["j_per_token", "decode"])),
        f(num(e, &["j_per_token", "e2e"])),
        f(num(e, &["tokens_per_j"])),
        e.get("basis").and_then(Value::as_str).unwrap_or("?"),
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_build_a_job() {
        let args = SubmitArgs {
            prompt: Some("hi".into()),
            max_tokens: Some(4),
            extra: Some(r#"{"top_k": 1}"#.into()),
            id: Some("x".into()),
            ..SubmitArgs::default()
        };
        let j = job_from_flags(&args).unwrap();
        assert_eq!(j["prompt"], "hi");
        assert_eq!(j["max_tokens"], 4);
        assert_eq!(j["top_k"], 1);
        assert_eq!(j["id"], "x");
        assert!(job_from_flags(&SubmitArgs::default()).is_err());
    }

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
        };
        let mut boards = BTreeMap::new();
        boards.insert("a".into(), mk("a", "online", 3));
        boards.insert("b".into(), mk("b", "online", 1));
        boards.insert("c".into(), mk("c", "offline", 0));
        assert_eq!(pick_board(&boards, &HashMap::new()).as_deref(), Some("b"));
        assert_eq!(pick_board(&BTreeMap::new(), &HashMap::new()), None);
    }

    #[test]
    fn table_shows_error() {
        let t = result_table(
            &json!({"id":"a","device":"d","state":"rejected","error":{"code":"x","message":"m"}}),
        );
        assert!(t.contains("rejected") && t.contains("(x)"), "{t}");
    }
}
