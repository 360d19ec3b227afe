//! Ranges and cross-key rules. Each rule returns the first violation as a
//! [`ConfigError`] with [`Origin::Unknown`]; loading attributes it to its source.

use std::fmt::Display;
use std::path::Path;

use super::{Config, ConfigError, Origin};

/// The broker endpoint parsed from `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// True for `mqtts://` (TLS).
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port; 1883 or 8883 when the URL has none.
    pub port: u16,
}

const URL_ALLOWED: &str = "'mqtt://HOST[:PORT]' or 'mqtts://HOST[:PORT]'";

/// Parses `mqtt://HOST[:PORT]` / `mqtts://HOST[:PORT]` (`tcp://`, `ssl://` accepted
/// as aliases). On failure returns what is allowed, for the message.
pub fn parse_broker_url(url: &str) -> Result<BrokerAddr, String> {
    let allowed = || URL_ALLOWED.to_string();
    let (scheme, rest) = url.split_once("://").ok_or_else(allowed)?;
    let tls = match scheme {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        _ => return Err(allowed()),
    };
    // No path, no query; user:password belongs in mqtt.username / mqtt.password.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
        return Err(format!(
            "{URL_ALLOWED} without path or credentials (use mqtt.username and mqtt.password_file)"
        ));
    }
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(allowed)?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(allowed()),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(allowed());
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("{URL_ALLOWED} with a port in 1..=65535")),
        },
    };
    Ok(BrokerAddr {
        tls,
        host: host.to_string(),
        port,
    })
}

/// Characters allowed in ids that become topic levels.
pub(crate) fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn invalid(key: &str, value: impl Display, allowed: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        origin: Origin::Unknown,
        allowed: allowed.into(),
    }
}

fn range<T: PartialOrd + Display + Copy>(key: &str, v: T, lo: T, hi: T) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(invalid(key, v, format!("{lo}..={hi}")));
    }
    Ok(())
}

fn id(key: &str, v: &str, max: usize) -> Result<(), ConfigError> {
    if v.is_empty() || v.len() > max || !v.chars().all(is_id_char) {
        return Err(invalid(
            key,
            v,
            format!("1 to {max} characters of A-Z a-z 0-9 . _ -"),
        ));
    }
    Ok(())
}

fn readable(key: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|source| ConfigError::ReadFile {
            key: key.to_string(),
            path: path.to_path_buf(),
            source,
        })
}

/// All the rules, section by section.
pub(super) fn validate(c: &Config) -> Result<(), ConfigError> {
    // [metrics]
    super::metrics::validate(&c.metrics)?;

    // [device]
    id("device.id", &c.device.id, 64)?;
    if let Some(label) = &c.device.label {
        if label.len() > 256 {
            return Err(invalid("device.label", label, "at most 256 bytes"));
        }
    }

    // [mqtt]
    let m = &c.mqtt;
    parse_broker_url(&m.url).map_err(|allowed| invalid("mqtt.url", &m.url, allowed))?;
    if let Some(cid) = &m.client_id {
        id("mqtt.client_id", cid, 128)?;
    }
    let prefix_ok = !m.prefix.is_empty()
        && !m.prefix.starts_with('$')
        && m.prefix.split('/').all(|level| !level.is_empty())
        && !m.prefix.contains(['+', '#']);
    if !prefix_ok {
        return Err(invalid(
            "mqtt.prefix",
            &m.prefix,
            "topic levels separated by '/', none empty, without '+', '#' or a leading '$'",
        ));
    }
    id("mqtt.group", &m.group, 64)?;
    match (&m.tls_cert, &m.tls_key) {
        (Some(_), None) => {
            return Err(ConfigError::Missing {
                key: "mqtt.tls_key".into(),
                origin: Origin::Unknown,
                expected: "a client key is needed when mqtt.tls_cert is set".into(),
            })
        }
        (None, Some(_)) => {
            return Err(ConfigError::Missing {
                key: "mqtt.tls_cert".into(),
                origin: Origin::Unknown,
                expected: "a client certificate is needed when mqtt.tls_key is set".into(),
            })
        }
        _ => {}
    }
    for (key, path) in [
        ("mqtt.tls_ca", &m.tls_ca),
        ("mqtt.tls_cert", &m.tls_cert),
        ("mqtt.tls_key", &m.tls_key),
        ("mqtt.password_file", &m.password_file),
    ] {
        if let Some(p) = path {
            readable(key, p)?;
        }
    }
    if m.password.is_some() && m.password_file.is_some() {
        return Err(ConfigError::Conflict {
            key: "mqtt.password".into(),
            other: "mqtt.password_file".into(),
            origin: Origin::Unknown,
        });
    }
    range("mqtt.keep_alive_s", m.keep_alive_s, 5, u16::MAX)?;
    range("mqtt.backoff_min_ms", m.backoff_min_ms, 10, 600_000)?;
    if m.backoff_max_ms < m.backoff_min_ms || m.backoff_max_ms > 3_600_000 {
        return Err(invalid(
            "mqtt.backoff_max_ms",
            m.backoff_max_ms,
            format!("mqtt.backoff_min_ms ({})..=3600000", m.backoff_min_ms),
        ));
    }

    // [models]
    for (i, name) in c.models.preload.iter().enumerate() {
        if let Err(e) = crate::infer::registry::validate_name(name) {
            return Err(invalid(
                &format!("models.preload[{i}]"),
                name,
                format!("a model name (a .gguf file stem in models.dir): {e}"),
            ));
        }
    }
    if c.models.dir.as_os_str().is_empty() {
        return Err(invalid("models.dir", "", "a directory path"));
    }
    if let Some(mib) = c.models.memory_budget_mib {
        range("models.memory_budget_mib", mib, 16, 16 * 1024 * 1024)?;
    }

    // [inference]: the same limits the job protocol applies to a job's own options.
    let g = &c.inference;
    if g.n_ctx != 0 {
        range("inference.n_ctx", g.n_ctx, 16, 1 << 20)?;
    }
    let max_tokens_hi = if g.n_ctx == 0 { 1 << 20 } else { g.n_ctx };
    range("inference.max_tokens", g.max_tokens, 1, max_tokens_hi)?;
    range("inference.temperature", g.temperature, 0.0, 5.0)?;
    if !(g.top_p > 0.0 && g.top_p <= 1.0) {
        return Err(invalid("inference.top_p", g.top_p, "0 < top_p <= 1"));
    }
    range("inference.min_p", g.min_p, 0.0, 1.0)?;
    if !(g.repeat_penalty > 0.0 && g.repeat_penalty <= 10.0) {
        return Err(invalid(
            "inference.repeat_penalty",
            g.repeat_penalty,
            "0 < repeat_penalty <= 10",
        ));
    }
    if let Some(t) = g.threads {
        range("inference.threads", t, 1, 1024)?;
    }
    if let Some(t) = g.threads_batch {
        range("inference.threads_batch", t, 1, 1024)?;
    }
    range("inference.batch", g.batch, 1, 65_536)?;
    range("inference.repeat", g.repeat, 1, 1000)?;
    range("inference.warmup", g.warmup, 0, 100)?;
    // depth + max_tokens must leave room for a prompt in n_ctx (jobs check the same).
    let depth_hi = if g.n_ctx == 0 {
        1 << 20
    } else {
        g.n_ctx.saturating_sub(g.max_tokens.saturating_add(1))
    };
    range("inference.depth", g.depth, 0, depth_hi)?;
    if let Some(i) = g.stop.iter().position(String::is_empty) {
        return Err(invalid(
            &format!("inference.stop[{i}]"),
            "",
            "a non-empty string",
        ));
    }

    // [power]
    const HWMON_MAX_RAILS: usize = 3;
    let p = &c.power;
    for (i, s) in p.sensors.iter().enumerate() {
        s.validate(&format!("power.sensors[{i}]"))
            .map_err(super::load::from_spec_error)?;
    }
    range("power.idle_window_ms", p.idle_window_ms, 100, 600_000)?;
    range("power.max_gap_ms", p.max_gap_ms, 1, 60_000)?;
    range("power.ring_capacity", p.ring_capacity, 1024, 1 << 24)?;
    if p.idle_rate_hz != 0 {
        range("power.idle_rate_hz", p.idle_rate_hz, 1, 1000)
            .map_err(|e| with_off(e, "0 (always the full rate) or "))?;
        // The idle baseline before a job is read out of the ring: it must fit (all
        // rails on one thread, plus a second for the recorder to start). A hwmon
        // entry without `rails` reads every rail its driver has, unknown until the
        // sysfs tree is read: count the most a supported chip has (INA3221: 3).
        let rails: usize = p
            .sensors
            .iter()
            .map(|s| match s.channel_count() {
                0 => HWMON_MAX_RAILS,
                n => n,
            })
            .sum();
        let needed = (p.idle_window_ms / 1000 + 1) as usize * p.idle_rate_hz as usize * rails;
        if !p.sensors.is_empty() && p.ring_capacity < needed {
            return Err(invalid(
                "power.ring_capacity",
                p.ring_capacity,
                format!(
                    "at least {needed} samples to hold the idle window (power.idle_window_ms = {} at power.idle_rate_hz = {} on {rails} rails), or a shorter idle window",
                    p.idle_window_ms, p.idle_rate_hz
                ),
            ));
        }
    }
    if p.live_interval_ms != 0 {
        range("power.live_interval_ms", p.live_interval_ms, 100, 3_600_000)
            .map_err(|e| with_off(e, "0 (off) or "))?;
    }
    if p.thermal_interval_ms != 0 {
        range(
            "power.thermal_interval_ms",
            p.thermal_interval_ms,
            10,
            60_000,
        )
        .map_err(|e| with_off(e, "0 (off) or "))?;
    }

    // [jobs]
    range("jobs.drain_timeout_s", c.jobs.drain_timeout_s, 0, 3600)?;

    // [store]
    if c.store.path.as_os_str().is_empty() {
        return Err(invalid("store.path", "", "a file path"));
    }
    if c.store.max_bytes != 0 && c.store.max_bytes < 1024 * 1024 {
        return Err(invalid(
            "store.max_bytes",
            c.store.max_bytes,
            "0 (no limit) or at least 1048576 (1 MiB)",
        ));
    }

    // [limits]
    let l = &c.limits;
    range(
        "limits.max_payload_bytes",
        l.max_payload_bytes,
        1024,
        16 << 20,
    )?;
    range(
        "limits.max_prompt_bytes",
        l.max_prompt_bytes,
        1,
        l.max_payload_bytes,
    )
    .map_err(|e| with_off(e, "at most limits.max_payload_bytes: "))?;
    range("limits.queue_capacity", l.queue_capacity, 1, 4096)?;
    range("limits.max_json_depth", l.max_json_depth, 2, 128)?;

    // [power_modes.NAME]
    super::power_modes::validate(&c.power_modes)?;
    Ok(())
}

/// Prefixes the allowed part of an `Invalid` error.
fn with_off(e: ConfigError, prefix: &str) -> ConfigError {
    match e {
        ConfigError::Invalid {
            key,
            value,
            origin,
            allowed,
        } => ConfigError::Invalid {
            key,
            value,
            origin,
            allowed: format!("{prefix}{allowed}"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(c: &Config) -> String {
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn broker_urls() {
        let b = parse_broker_url("mqtt://127.0.0.1:1883").unwrap();
        assert_eq!((b.tls, b.host.as_str(), b.port), (false, "127.0.0.1", 1883));
        let b = parse_broker_url("mqtts://broker.lan").unwrap();
        assert_eq!((b.tls, b.port), (true, 8883));
        let b = parse_broker_url("mqtt://[::1]:1884").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 1884));
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://u:p@h",
            "127.0.0.1:1883",
            "mqtt://h/path",
        ] {
            assert!(parse_broker_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn out_of_range_names_key_value_and_range() {
        let mut c = Config::default();
        c.limits.queue_capacity = 0;
        assert_eq!(
            err(&c),
            "invalid value '0' for key 'limits.queue_capacity': expected 1..=4096"
        );
    }

    #[test]
    fn bad_url() {
        let mut c = Config::default();
        c.mqtt.url = "http://broker".into();
        let e = err(&c);
        assert!(
            e.starts_with("invalid value 'http://broker' for key 'mqtt.url'"),
            "{e}"
        );
        assert!(e.contains("mqtts://"), "{e}");
    }

    #[test]
    fn bad_device_id() {
        let mut c = Config::default();
        c.device.id = "pi/5".into();
        assert!(err(&c).contains("'pi/5' for key 'device.id'"));
    }

    #[test]
    fn bad_prefix() {
        let mut c = Config::default();
        c.mqtt.prefix = "a/+/b".into();
        assert!(err(&c).contains("key 'mqtt.prefix'"));
    }

    #[test]
    fn password_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x").unwrap();
        let mut c = Config::default();
        c.mqtt.password = Some("x".into());
        c.mqtt.password_file = Some(pw);
        assert_eq!(
            err(&c),
            "keys 'mqtt.password' and 'mqtt.password_file' are both set: set only one of them"
        );
    }

    #[test]
    fn missing_password_file() {
        let mut c = Config::default();
        c.mqtt.password_file = Some("/nonexistent/pw".into());
        let e = err(&c);
        assert!(
            e.starts_with("cannot read '/nonexistent/pw' named by key 'mqtt.password_file'"),
            "{e}"
        );
    }

    #[test]
    fn cert_without_key() {
        let mut c = Config::default();
        c.mqtt.tls_cert = Some("/x.pem".into());
        assert!(err(&c).starts_with("missing key 'mqtt.tls_key'"));
    }

    #[test]
    fn backoff_order() {
        let mut c = Config::default();
        c.mqtt.backoff_min_ms = 1000;
        c.mqtt.backoff_max_ms = 100;
        assert!(err(&c).contains("'100' for key 'mqtt.backoff_max_ms'"));
    }

    #[test]
    fn inference_ranges() {
        let mut c = Config::default();
        c.inference.temperature = 7.5;
        assert!(err(&c).contains("'7.5' for key 'inference.temperature': expected 0..=5"));
        let mut c = Config::default();
        c.inference.max_tokens = 4096;
        assert!(err(&c).contains("'4096' for key 'inference.max_tokens': expected 1..=2048"));
    }

    #[test]
    fn intervals_allow_off() {
        let mut c = Config::default();
        c.power.live_interval_ms = 0;
        c.power.thermal_interval_ms = 0;
        c.validate().unwrap();
        c.power.thermal_interval_ms = 5;
        assert!(err(&c).contains("expected 0 (off) or 10..=60000"));
    }

    #[test]
    fn idle_rate_allows_full_rate_or_1_to_1000() {
        let mut c = Config::default();
        assert_eq!(c.power.idle_rate_hz, 20);
        for ok in [0, 1, 1000] {
            c.power.idle_rate_hz = ok;
            c.validate().unwrap();
        }
        c.power.idle_rate_hz = 1001;
        assert!(err(&c).contains(
            "'1001' for key 'power.idle_rate_hz': expected 0 (always the full rate) or 1..=1000"
        ));
    }

    #[test]
    fn ring_must_hold_the_idle_window() {
        let mut c = Config::default();
        c.power.sensors = vec![toml::from_str(
            r#"
            kind = "sim"
            chip = "ina3221"
            shunt_ohms = [0.1, 0.1, 0.1]
            rails = ["A", "B", "C"]
            load = [{ source = "constant", current_a = 0.5, bus_v = 5.0 },
                    { source = "constant", current_a = 0.5, bus_v = 5.0 },
                    { source = "constant", current_a = 0.5, bus_v = 5.0 }]
            "#,
        )
        .expect("sensor")];
        c.validate().unwrap();
        // 10 minutes at 20 Hz on 3 rails: 36060 samples.
        c.power.idle_window_ms = 600_000;
        let e = err(&c);
        assert!(
            e.contains("power.ring_capacity") && e.contains("36060") && e.contains("idle window"),
            "{e}"
        );
        c.power.ring_capacity = 40_000;
        c.validate().unwrap();
        // A hwmon entry without a rails list counts as the INA3221's three.
        c.power.sensors = vec![toml::from_str(r#"kind = "hwmon""#).expect("sensor")];
        c.power.ring_capacity = 20_000;
        let e = err(&c);
        assert!(e.contains("36060") && e.contains("3 rails"), "{e}");
    }

    #[test]
    fn preload_takes_model_names_not_paths() {
        let mut c = Config::default();
        c.models.preload = vec!["SmolLM2-135M-Instruct.Q4_1".into()];
        c.validate().unwrap();
        c.models.preload.push("../etc/passwd".into());
        let e = err(&c);
        assert!(
            e.contains("models.preload[1]") && e.contains("model name"),
            "{e}"
        );
    }

    #[test]
    fn prompt_not_above_payload() {
        let mut c = Config::default();
        c.limits.max_prompt_bytes = c.limits.max_payload_bytes + 1;
        assert!(err(&c).contains("key 'limits.max_prompt_bytes'"));
    }
}
