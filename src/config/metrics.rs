//! `[metrics]`: the Prometheus endpoint (issue 14). Off unless `listen` is set; a
//! bare port binds loopback, because a board is not a public server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::{ConfigError, Origin};

/// What `metrics.listen` accepts, for error messages.
const LISTEN_ALLOWED: &str =
    "HOST:PORT with an IP address (e.g. '127.0.0.1:9464'), a bare PORT (binds 127.0.0.1), or '' to turn metrics off";

/// `[metrics]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the `GET /metrics` endpoint (Prometheus text format). Empty (the
    /// default): no endpoint. A bare port binds `127.0.0.1`; binding another address
    /// (`0.0.0.0:9464`) must be asked for explicitly.
    pub listen: String,
}

impl MetricsConfig {
    /// The socket to bind, `None` when metrics are off.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        parse_listen(&self.listen).map_err(|()| ConfigError::Invalid {
            key: "metrics.listen".into(),
            value: self.listen.clone(),
            origin: Origin::Unknown,
            allowed: LISTEN_ALLOWED.into(),
        })
    }
}

/// `""` → off; `"9464"` → `127.0.0.1:9464`; `"HOST:PORT"` / `"[v6]:PORT"` as given.
/// Port 0 (any free port) is allowed: tests use it.
fn parse_listen(s: &str) -> Result<Option<SocketAddr>, ()> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(port) = s.parse::<u16>() {
        return Ok(Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)));
    }
    s.parse::<SocketAddr>().map(Some).map_err(|_| ())
}

/// The `[metrics]` rules (called from `validate`).
pub(super) fn validate(m: &MetricsConfig) -> Result<(), ConfigError> {
    m.listen_addr().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<String> {
        MetricsConfig { listen: s.into() }
            .listen_addr()
            .unwrap()
            .map(|a| a.to_string())
    }

    #[test]
    fn off_by_default_and_when_empty() {
        assert_eq!(MetricsConfig::default().listen_addr().unwrap(), None);
        assert_eq!(addr("  "), None);
    }

    #[test]
    fn a_bare_port_binds_loopback() {
        assert_eq!(addr("9464").as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(addr("127.0.0.1:0").as_deref(), Some("127.0.0.1:0"));
        assert_eq!(addr("0.0.0.0:9464").as_deref(), Some("0.0.0.0:9464"));
        assert_eq!(addr("[::1]:9464").as_deref(), Some("[::1]:9464"));
    }

    #[test]
    fn a_bad_address_names_the_key_and_the_value() {
        for bad in [
            "localhost:9464",
            "127.0.0.1",
            "127.0.0.1:99999",
            "x:1",
            ":9464",
        ] {
            let e = MetricsConfig { listen: bad.into() }
                .listen_addr()
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("metrics.listen") && e.contains(&format!("'{bad}'")),
                "{e}"
            );
            assert!(e.contains("127.0.0.1:9464"), "{e}");
        }
    }
}
