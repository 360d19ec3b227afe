//! The daemon's view of the configuration: everything resolved once at start
//! (passwords read, URLs parsed), so the tasks never touch files or parse strings.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{Config, OnCrash, PowerConfig};
use crate::infer::{EngineConfig, GenerateOptions};
use crate::jobs::mqtt::{BrokerUrl, SessionOptions, TlsFiles};
use crate::jobs::protocol::{cpu_count, valid_topic_level, Limits};

/// Resolved daemon settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This board's id (`DEV` in topics).
    pub device: String,
    /// Optional free-text label shown in the board status.
    pub label: Option<String>,
    /// First topic level.
    pub prefix: String,
    /// Shared-subscription group of the fleet queue.
    pub group: String,
    /// Broker session options (Will and subscriptions are added by `run`).
    pub session: SessionOptions,
    /// Engine settings.
    pub engine: EngineConfig,
    /// Models to load before reporting ready.
    pub preload: Vec<String>,
    /// Payload limits.
    pub limits: Limits,
    /// Jobs waiting behind the running one.
    pub queue_capacity: usize,
    /// Generation defaults for fields a job leaves out.
    pub defaults: GenerateOptions,
    /// Stream tokens when a job does not say.
    pub stream_default: bool,
    /// SQLite file of the journal, outbox and trace store.
    pub store_path: PathBuf,
    /// What to do with a job found `running` after a crash.
    pub on_crash: OnCrash,
    /// Sensors and sampling.
    pub power: PowerConfig,
    /// How long a graceful shutdown waits for the running job before requeueing it.
    pub drain_timeout: Duration,
    /// Results and traces older than this are pruned (0 = keep).
    pub max_age_days: u32,
    /// Stored traces beyond this many bytes are pruned, oldest first (0 = no limit).
    pub store_max_bytes: u64,
    /// Where quality jobs' texts are (`[quality] texts_dir`).
    pub texts_dir: PathBuf,
    /// `[power_modes.NAME]`: the modes a job may name.
    pub power_modes: std::collections::BTreeMap<String, crate::powermode::PowerModeSpec>,
    /// Root of the sysfs / nvpmodel paths power modes read and write (`/`; tests
    /// point it at a fake tree).
    pub power_mode_root: PathBuf,
    /// How long a mode may take to read back after it is written.
    pub power_mode_timeout: Duration,
    /// The Prometheus endpoint's address (`[metrics] listen`); `None`: off.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Settings {
    /// Resolves the configuration (reads the password file, parses the broker URL).
    pub fn from_config(cfg: &Config) -> anyhow::Result<Settings> {
        let url = BrokerUrl::parse(&cfg.mqtt.url)?;
        for (key, v) in [
            ("device.id", &cfg.device.id),
            ("mqtt.prefix", &cfg.mqtt.prefix),
            ("mqtt.group", &cfg.mqtt.group),
        ] {
            if !valid_topic_level(v) {
                anyhow::bail!("invalid value '{v}' for {key}: expected one MQTT topic level (no '/', '+', '#', not starting with '$')");
            }
        }
        let password = cfg
            .mqtt
            .resolve_password()
            .context("cannot read the broker password")?;
        let credentials = cfg
            .mqtt
            .username
            .clone()
            .map(|u| (u, password.clone().unwrap_or_default()));
        let mut session = SessionOptions::new(url, cfg.mqtt.effective_client_id(&cfg.device.id));
        session.credentials = credentials;
        session.tls = TlsFiles {
            ca_file: cfg.mqtt.tls_ca.clone(),
            cert_file: cfg.mqtt.tls_cert.clone(),
            key_file: cfg.mqtt.tls_key.clone(),
        };
        session.keep_alive = Duration::from_secs(u64::from(cfg.mqtt.keep_alive_s.max(5)));
        session.session_expiry_s = cfg.mqtt.session_expiry_s;
        session.backoff_min = Duration::from_millis(cfg.mqtt.backoff_min_ms.max(10));
        session.backoff_max =
            Duration::from_millis(cfg.mqtt.backoff_max_ms.max(cfg.mqtt.backoff_min_ms));
        // Accept packets well above the payload limit so an oversized job reaches us
        // and is rejected with `payload_too_large` instead of being dropped silently
        // by the broker (MQTT v5 Maximum Packet Size).
        session.max_packet_bytes = u32::try_from(cfg.limits.max_payload_bytes.saturating_mul(4))
            .unwrap_or(u32::MAX)
            .max(1024 * 1024);
        session.receive_maximum = 32;

        let max_n_ctx = 131_072;
        Ok(Settings {
            device: cfg.device.id.clone(),
            label: cfg.device.label.clone(),
            prefix: cfg.mqtt.prefix.clone(),
            group: cfg.mqtt.group.clone(),
            session,
            engine: EngineConfig {
                model_dir: cfg.models.dir.clone(),
                memory_budget_bytes: cfg.models.memory_budget_bytes(),
                default_keep_alive_s: cfg.models.keep_alive_s,
                load_progress: false,
                llama_perf: false,
            },
            preload: cfg.models.preload.clone(),
            limits: Limits {
                max_payload_bytes: cfg.limits.max_payload_bytes,
                max_prompt_bytes: cfg.limits.max_prompt_bytes,
                max_json_depth: cfg.limits.max_json_depth,
                max_threads: cpu_count(),
                max_n_ctx,
            },
            queue_capacity: cfg.limits.queue_capacity,
            defaults: cfg.inference.clone(),
            stream_default: cfg.mqtt.stream_default,
            store_path: cfg.store.path.clone(),
            on_crash: cfg.jobs.on_crash,
            power: cfg.power.clone(),
            drain_timeout: Duration::from_secs(cfg.jobs.drain_timeout_s),
            max_age_days: cfg.store.max_age_days,
            store_max_bytes: cfg.store.max_bytes,
            texts_dir: cfg.quality.texts_dir.clone(),
            power_modes: cfg.power_modes.clone(),
            power_mode_root: PathBuf::from("/"),
            power_mode_timeout: Duration::from_secs(2),
            metrics_listen: cfg.metrics.listen_addr()?,
        })
    }
}
