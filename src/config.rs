//! Configuration: the typed sections, their defaults, and the public entry points.
//!
//! Layers, later ones winning (issue 6):
//! 1. built-in defaults ([`Config::default`]): paths relative to the working directory
//!    (`models/`, `state/edgewatt.db`), so a checkout runs without installing anything;
//! 2. the TOML file: `--config PATH`, else `/etc/edgewatt/edgewatt.toml` when it exists
//!    (the packaged file sets the `/var/lib/edgewatt` paths);
//! 3. environment variables `EDGEWATT__SECTION__KEY` (double underscore, because keys
//!    are snake_case): `EDGEWATT__MQTT__URL=mqtts://broker:8883`.
//!
//! Every error names the key, the value, where it came from (file or variable) and what
//! is allowed; see [`ConfigError`]. `config check` prints [`Config::to_masked_toml`].
//!
//! # Layout
//! - `config.rs` — the section types and defaults (this file)
//! - [`error`] — [`ConfigError`] and [`Origin`]
//! - `load` — layering with the `config` crate and attributing errors to their source
//! - `validate` — ranges and cross-key rules
//! - `mask` — the effective config as TOML with secrets masked
//! - `power_modes` — `[power_modes.NAME]` checks
//! - `metrics` — `[metrics]`: the Prometheus endpoint's address

mod error;
mod load;
mod mask;
mod metrics;
mod power_modes;
mod validate;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use error::{ConfigError, Origin};
pub use load::{load, load_from, DEFAULT_PATH, ENV_PREFIX};
pub use metrics::MetricsConfig;
pub use validate::BrokerAddr;

use crate::infer::GenerateOptions;
use crate::power::SensorSpec;

/// The whole configuration, one field per `[section]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Who this board is on the broker.
    pub device: DeviceConfig,
    /// Broker connection, topics and session.
    pub mqtt: MqttConfig,
    /// Where models live and how long they stay loaded.
    pub models: ModelsConfig,
    /// Generation options a job gets for every field it does not set.
    pub inference: GenerateOptions,
    /// Sensors and sampling.
    pub power: PowerConfig,
    /// The SQLite store of jobs, results and traces.
    pub store: StoreConfig,
    /// Sizes that protect the daemon from bad or hostile payloads.
    pub limits: LimitsConfig,
    /// Job lifecycle policy.
    pub jobs: JobsConfig,
    /// Texts quality jobs score (perplexity, KL divergence).
    pub quality: QualityConfig,
    /// Power modes a job may name (`[power_modes.NAME]`, issue 13).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub power_modes: std::collections::BTreeMap<String, crate::powermode::PowerModeSpec>,
    /// The Prometheus endpoint (off unless `listen` is set).
    pub metrics: MetricsConfig,
}

/// `[device]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// Topic segment `DEV` in `PREFIX/DEV/...`: 1–64 characters of `[A-Za-z0-9._-]`.
    /// Default: the hostname, so a fleet needs no per-board file.
    pub id: String,
    /// Free text shown in the retained status (e.g. "bench Pi 5, INA219 on 5V").
    pub label: Option<String>,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            id: hostname(),
            label: None,
        }
    }
}

/// The kernel's hostname, made topic-safe; `edgewatt` when it cannot be read.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| if validate::is_id_char(c) { c } else { '-' })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "edgewatt".to_string()
    } else {
        cleaned
    }
}

/// `[mqtt]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker: `mqtt://HOST[:PORT]` (1883) or `mqtts://HOST[:PORT]` (8883, TLS).
    pub url: String,
    /// MQTT client id; default `edgewatt-DEV`. Must be stable: the persistent session
    /// (and the jobs queued in it) belongs to it.
    pub client_id: Option<String>,
    /// First topic level.
    pub prefix: String,
    /// Shared-subscription group for the fleet queue (`$share/GROUP/PREFIX/jobs`).
    pub group: String,
    /// CA bundle (PEM) to verify the broker; default: the system roots.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// User name for the broker.
    pub username: Option<String>,
    /// Password (secret: masked by `config check`). Prefer `password_file`.
    pub password: Option<String>,
    /// File holding the password (one line; a trailing newline is ignored).
    pub password_file: Option<PathBuf>,
    /// MQTT v5 session expiry, seconds: how long the broker keeps this board's queued
    /// jobs while it is offline. Default 7 days.
    pub session_expiry_s: u32,
    /// MQTT keep-alive, seconds (5–65535).
    pub keep_alive_s: u16,
    /// First reconnect delay, ms; doubles (with jitter) up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    /// Longest reconnect delay, ms.
    pub backoff_max_ms: u64,
    /// Whether a job that does not say `stream` gets its tokens streamed.
    pub stream_default: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: None,
            prefix: "edgewatt".into(),
            group: "edgewatt".into(),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            username: None,
            password: None,
            password_file: None,
            session_expiry_s: 7 * 24 * 3600,
            keep_alive_s: 30,
            backoff_min_ms: 500,
            backoff_max_ms: 30_000,
            stream_default: false,
        }
    }
}

impl MqttConfig {
    /// The client id to connect with: `client_id`, else `edgewatt-DEVICE_ID`.
    pub fn effective_client_id(&self, device_id: &str) -> String {
        match &self.client_id {
            Some(id) => id.clone(),
            None => format!("edgewatt-{device_id}"),
        }
    }

    /// The broker's scheme, host and port (validated by [`Config::validate`]).
    pub fn broker(&self) -> Result<BrokerAddr, ConfigError> {
        validate::parse_broker_url(&self.url).map_err(|allowed| ConfigError::Invalid {
            key: "mqtt.url".into(),
            value: self.url.clone(),
            origin: Origin::Unknown,
            allowed,
        })
    }

    /// The password: `password`, else the first line of `password_file`, else none.
    pub fn resolve_password(&self) -> Result<Option<String>, ConfigError> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            key: "mqtt.password_file".into(),
            path: path.clone(),
            source,
        })?;
        Ok(Some(text.lines().next().unwrap_or("").to_string()))
    }
}

/// `[models]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Directory of `.gguf` files; a model's name is its file stem.
    /// Default `models` (a checkout); the packaged file sets `/var/lib/edgewatt/models`.
    pub dir: PathBuf,
    /// Most memory, MiB, that loaded models + KV cache + compute buffers may take
    /// together; absent = limited by `MemAvailable` only.
    pub memory_budget_mib: Option<u64>,
    /// Seconds an idle model stays loaded; 0 = unload after each job, negative = keep.
    pub keep_alive_s: i64,
    /// Models loaded at start, before the daemon reports ready (so the first job pays
    /// no load time); they then stay per `keep_alive_s` (negative keeps them).
    pub preload: Vec<String>,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            dir: PathBuf::from("models"),
            memory_budget_mib: None,
            keep_alive_s: 300,
            preload: Vec::new(),
        }
    }
}

impl ModelsConfig {
    /// The budget in bytes; `u64::MAX` when none is set.
    pub fn memory_budget_bytes(&self) -> u64 {
        self.memory_budget_mib
            .map_or(u64::MAX, |mib| mib.saturating_mul(1024 * 1024))
    }
}

/// `[power]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowerConfig {
    /// The sensors (`[[power.sensors]]`); none = no energy measurement.
    pub sensors: Vec<SensorSpec>,
    /// Window before each job whose mean power is the idle baseline, ms.
    pub idle_window_ms: u64,
    /// A gap between two samples of a rail longer than this is reported as a gap, ms.
    pub max_gap_ms: u64,
    /// Samples kept in the sampler's ring buffer (per sampler thread). A job's
    /// samples are drained from it every 250 ms while the job runs, so it only has to
    /// hold the idle window and that interval, not a whole job.
    pub ring_capacity: usize,
    /// Most reads per second of each rail between jobs (idle rate mode); 0 = always
    /// the full conversion rate.
    pub idle_rate_hz: u32,
    /// Period of the live `PREFIX/DEV/power` messages, ms; 0 = off.
    pub live_interval_ms: u64,
    /// Period of thermal-zone and CPU-frequency readings during jobs, ms; 0 = off.
    pub thermal_interval_ms: u64,
    /// The sysfs root thermal zones and CPU frequencies are read under (`/sys`; a
    /// test or a container points it elsewhere).
    pub thermal_sysfs_root: PathBuf,
}

impl Default for PowerConfig {
    fn default() -> Self {
        PowerConfig {
            sensors: Vec::new(),
            idle_window_ms: 2000,
            max_gap_ms: 250,
            ring_capacity: 16_384,
            idle_rate_hz: 20,
            live_interval_ms: 1000,
            thermal_interval_ms: 100,
            thermal_sysfs_root: PathBuf::from("/sys"),
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite database (journal, outbox, results, traces).
    /// Default `state/edgewatt.db`; the packaged file sets `/var/lib/edgewatt/edgewatt.db`.
    pub path: PathBuf,
    /// Results and traces older than this are deleted, days; 0 = keep forever.
    pub max_age_days: u32,
    /// Oldest results and traces are deleted beyond this size, bytes; 0 = no limit.
    pub max_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("state/edgewatt.db"),
            max_age_days: 30,
            max_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// `[quality]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    /// Directory of `.txt` scoring texts; a text's name is its file stem (the built-in
    /// `licenses` needs no file). Default `texts` (a checkout); the packaged file sets
    /// `/var/lib/edgewatt/texts`.
    pub texts_dir: PathBuf,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            texts_dir: PathBuf::from("texts"),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest job payload accepted, bytes.
    pub max_payload_bytes: usize,
    /// Largest prompt (or all messages together) accepted, bytes.
    pub max_prompt_bytes: usize,
    /// Jobs waiting behind the running one; more are rejected with `queue_full`.
    pub queue_capacity: usize,
    /// Deepest JSON nesting accepted in a job.
    pub max_json_depth: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_payload_bytes: 256 * 1024,
            max_prompt_bytes: 64 * 1024,
            queue_capacity: 16,
            max_json_depth: 32,
        }
    }
}

/// `[jobs]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// What happens to a job found `running` after a crash.
    pub on_crash: OnCrash,
    /// On SIGTERM, how long the running job may go on before it is canceled and put
    /// back in the queue for the next start, s. Keep it below the unit's
    /// `TimeoutStopSec` (90 s) minus a few seconds for publishing `offline`.
    pub drain_timeout_s: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            on_crash: OnCrash::default(),
            drain_timeout_s: 30,
        }
    }
}

/// Policy for jobs interrupted by a crash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnCrash {
    /// Run it again, once.
    #[default]
    Rerun,
    /// Report it `failed` with code `interrupted`.
    Fail,
}

impl Config {
    /// Checks ranges and cross-key rules. Errors carry [`Origin::Unknown`]; [`load_from`]
    /// replaces it with the file or variable the key came from.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self)
    }

    /// The effective configuration as TOML, with `mqtt.password` and any password in
    /// `mqtt.url` replaced by `********`.
    pub fn to_masked_toml(&self) -> String {
        mask::to_masked_toml(self)
    }

    /// Keys that differ between `self` (running) and `new` (reloaded) and need a
    /// restart to take effect; SIGHUP applies the rest (issue 6).
    pub fn restart_required(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |changed: bool, key: &'static str| {
            if changed {
                keys.push(key);
            }
        };
        check(self.device != new.device, "device");
        check(self.mqtt != new.mqtt, "mqtt");
        check(self.models.dir != new.models.dir, "models.dir");
        check(self.power != new.power, "power");
        check(self.power_modes != new.power_modes, "power_modes");
        check(self.store.path != new.store.path, "store.path");
        check(
            self.limits.queue_capacity != new.limits.queue_capacity,
            "limits.queue_capacity",
        );
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn dev_defaults_use_checkout_paths() {
        let c = Config::default();
        assert_eq!(c.models.dir, PathBuf::from("models"));
        assert_eq!(c.store.path, PathBuf::from("state/edgewatt.db"));
        assert_eq!(c.mqtt.session_expiry_s, 604_800);
        assert_eq!(c.limits.max_payload_bytes, 262_144);
    }

    #[test]
    fn hostname_is_topic_safe() {
        let h = hostname();
        assert!(!h.is_empty() && h.len() <= 64);
        assert!(h.chars().all(validate::is_id_char), "{h}");
    }

    #[test]
    fn client_id_defaults_to_device() {
        let m = MqttConfig::default();
        assert_eq!(m.effective_client_id("pi5"), "edgewatt-pi5");
    }

    #[test]
    fn budget_in_bytes() {
        let mut m = ModelsConfig::default();
        assert_eq!(m.memory_budget_bytes(), u64::MAX);
        m.memory_budget_mib = Some(2);
        assert_eq!(m.memory_budget_bytes(), 2 * 1024 * 1024);
    }

    #[test]
    fn password_file_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let m = MqttConfig {
            password_file: Some(p),
            ..MqttConfig::default()
        };
        assert_eq!(m.resolve_password().unwrap().as_deref(), Some("s3cret"));
    }

    #[test]
    fn restart_required_names_sections() {
        let a = Config::default();
        let mut b = a.clone();
        b.inference.max_tokens = 7;
        b.models.keep_alive_s = 0;
        assert!(a.restart_required(&b).is_empty());
        b.mqtt.url = "mqtt://10.0.0.1".into();
        b.limits.queue_capacity = 3;
        assert_eq!(
            a.restart_required(&b),
            vec!["mqtt", "limits.queue_capacity"]
        );
    }
}
