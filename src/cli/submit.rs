//! `edgewatt submit`: send jobs to a daemon (or a fleet) and wait for their results.
//!
//! The protocol side (connecting, board statuses, publishing with a Response Topic,
//! following a job to its result) is [`crate::jobs::client`], shared with
//! `edgewatt study run`; this file holds the flags, the job files, the window of jobs
//! in flight, and what is printed.
//!
//! Without `--device`, `submit` reads the boards' retained statuses and sends each job
//! straight to the online board with the fewest jobs ([`pick_board`]); only with
//! `--shared`, or when no board has published a status, does it use the shared fleet
//! queue `PREFIX/jobs`.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::jobs::client::{pick_board, Client, ClientOptions, JobEvent};
use crate::jobs::mqtt::{BrokerUrl, TlsFiles};
use crate::jobs::protocol::JobState;

pub use super::result_table::result_table;
pub use crate::jobs::client::Outcome;

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
    /// Job kind: generate (default), perplexity or kld (docs/quality.md).
    #[arg(long)]
    pub kind: Option<String>,
    /// Quality jobs: the text to score (a name in the board's texts_dir, or `licenses`).
    #[arg(long)]
    pub text: Option<String>,
    /// Quality jobs: score at most this many chunks.
    #[arg(long)]
    pub max_chunks: Option<u32>,
    /// `kld` jobs: the reference model.
    #[arg(long)]
    pub reference: Option<String>,
    /// A synthetic prompt of exactly N tokens instead of --prompt.
    #[arg(long, conflicts_with_all = ["prompt", "messages"])]
    pub prompt_tokens: Option<u32>,
    /// Tokens put into the context before the prompt, unmeasured.
    #[arg(long)]
    pub depth: Option<u32>,
    /// Run under this `[power_modes.NAME]` of the board (applied, read back, restored).
    #[arg(long, value_name = "NAME")]
    pub power_mode: Option<String>,
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
        ("kind", args.kind.as_ref().map(|v| json!(v))),
        ("text", args.text.as_ref().map(|v| json!(v))),
        ("max_chunks", args.max_chunks.map(|v| json!(v))),
        ("reference", args.reference.as_ref().map(|v| json!(v))),
        ("prompt_tokens", args.prompt_tokens.map(|v| json!(v))),
        ("depth", args.depth.map(|v| json!(v))),
        ("power_mode", args.power_mode.as_ref().map(|v| json!(v))),
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
    // A quality job scores a text and a synthetic prompt replaces the text: neither
    // needs --prompt (the board validates the rest and names any bad field).
    let quality = job
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k != "generate");
    let has_input = ["prompt", "messages", "prompt_tokens"]
        .iter()
        .any(|k| job.contains_key(*k));
    if !quality && !has_input {
        bail!("give --prompt TEXT, --messages JSON, --prompt-tokens N, --kind perplexity or --file JOBS.jsonl");
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

/// The client options from the flags, falling back to the configuration's `[mqtt]`.
fn client_options(args: &SubmitArgs, cfg: &Config, tokens: bool) -> anyhow::Result<ClientOptions> {
    let url = BrokerUrl::parse(args.broker.as_deref().unwrap_or(&cfg.mqtt.url))?;
    let username = args.username.clone().or_else(|| cfg.mqtt.username.clone());
    let credentials = match username {
        Some(u) => {
            let password = match &args.password_file {
                Some(p) => ClientOptions::password_from_file(p)?,
                None => cfg.mqtt.resolve_password()?.unwrap_or_default(),
            };
            Some((u, password))
        }
        None => None,
    };
    Ok(ClientOptions {
        url,
        prefix: args
            .prefix
            .clone()
            .unwrap_or_else(|| cfg.mqtt.prefix.clone()),
        credentials,
        tls: TlsFiles {
            ca_file: args.tls_ca.clone().or_else(|| cfg.mqtt.tls_ca.clone()),
            cert_file: args.tls_cert.clone().or_else(|| cfg.mqtt.tls_cert.clone()),
            key_file: args.tls_key.clone().or_else(|| cfg.mqtt.tls_key.clone()),
        },
        tokens,
        // Always: the boards' statuses carry their limits, checked before publishing.
        board_statuses: true,
        connect_timeout: Duration::from_secs(15),
    })
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
    let single = jobs.len() == 1;
    let opts = client_options(args, cfg, single && !args.no_stream && !args.json)?;
    let mut client = Client::connect(&opts).await?;
    let result = drive(args, jobs, &mut client).await;
    client.close().await;
    result
}

async fn drive(
    args: &SubmitArgs,
    jobs: Vec<Map<String, Value>>,
    client: &mut Client,
) -> anyhow::Result<Vec<Outcome>> {
    let single = jobs.len() == 1;
    let fleet = args.device.is_none() && !args.shared;
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    let prefix = client.prefix().to_string();

    // Retained board statuses (dispatch and limits): give them a moment to arrive.
    let boards = client.read_statuses(Duration::from_millis(700)).await;
    if fleet && !boards.values().any(|b| b.state == "online") {
        eprintln!("no board has announced itself online under '{prefix}/+/status'; using the shared queue '{prefix}/jobs'");
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

    let mut todo: VecDeque<Map<String, Value>> = jobs.into();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut done: Vec<Outcome> = Vec::new();
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
            if let Some(m) = &args.model {
                job.entry("model").or_insert(json!(m));
            }
            if single && !args.no_stream && !args.json {
                job.entry("stream").or_insert(json!(true));
            }
            let device = if let Some(d) = &args.device {
                Some(d.clone())
            } else if fleet {
                let mut in_flight: HashMap<String, usize> = HashMap::new();
                for d in pending.values().filter_map(|p| p.device.clone()) {
                    *in_flight.entry(d).or_default() += 1;
                }
                pick_board(client.boards(), &in_flight)
            } else {
                None
            };
            let id = client
                .publish_job(device.as_deref(), job)
                .await
                .map_err(|e| anyhow::anyhow!("job #{n}: {e}"))?;
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
        let mut finished: Vec<Outcome> = Vec::new();
        match client.next_event(next_deadline).await? {
            None => {
                let now = Instant::now();
                let expired: Vec<String> = pending
                    .iter()
                    .filter(|(_, p)| p.sent + timeout <= now)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in expired {
                    let device = pending.remove(&id).and_then(|p| p.device);
                    finished.push(Outcome::timed_out(id, device, timeout));
                }
            }
            Some(JobEvent::Result(o)) => {
                if pending.remove(&o.id).is_some() {
                    finished.push(o);
                }
            }
            Some(JobEvent::Status(s)) => {
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
            Some(JobEvent::Tokens(t)) => {
                if single && pending.contains_key(&t.id) {
                    print!("{}", t.text);
                    let _ = std::io::stdout().flush();
                }
            }
            Some(JobEvent::Disconnected(reason)) => {
                tracing::warn!("lost the broker ({reason}); reconnecting");
            }
            Some(JobEvent::Board(_)) => {}
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
    fn quality_and_synthetic_jobs_need_no_prompt() {
        let args = SubmitArgs {
            kind: Some("kld".into()),
            text: Some("licenses".into()),
            max_chunks: Some(2),
            reference: Some("ref".into()),
            ..SubmitArgs::default()
        };
        let j = job_from_flags(&args).unwrap();
        assert_eq!(j["kind"], "kld");
        assert_eq!(j["text"], "licenses");
        assert_eq!(j["max_chunks"], 2);
        assert_eq!(j["reference"], "ref");
        assert!(!j.contains_key("prompt"));
        let args = SubmitArgs {
            prompt_tokens: Some(32),
            depth: Some(64),
            ..SubmitArgs::default()
        };
        let j = job_from_flags(&args).unwrap();
        assert_eq!(j["prompt_tokens"], 32);
        assert_eq!(j["depth"], 64);
        let args = SubmitArgs {
            prompt: Some("hi".into()),
            power_mode: Some("eco".into()),
            ..SubmitArgs::default()
        };
        assert_eq!(job_from_flags(&args).unwrap()["power_mode"], "eco");
        let generate = SubmitArgs {
            kind: Some("generate".into()),
            ..SubmitArgs::default()
        };
        assert!(job_from_flags(&generate).is_err());
    }
}
