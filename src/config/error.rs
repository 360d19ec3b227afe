//! Configuration errors, written for the operator who has to fix the file: each names
//! the key, the value in single quotes, where it came from, and what is allowed.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The TOML file at this path.
    File(PathBuf),
    /// This environment variable (`EDGEWATT__SECTION__KEY`).
    Env(String),
    /// The built-in default.
    Default,
    /// Not attributed yet ([`crate::config::Config::validate`] on a bare value).
    Unknown,
}

/// Renders as a phrase that follows the key: ` in file '/etc/edgewatt/edgewatt.toml'`.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, " in file '{}'", p.display()),
            Origin::Env(var) => write!(f, " from environment variable '{var}'"),
            Origin::Default => write!(f, " (built-in default)"),
            Origin::Unknown => Ok(()),
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file named with `--config` (or the default one) cannot be read.
    #[error("cannot read config file '{}': {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file named by a key (password file, TLS material) cannot be read.
    #[error("cannot read '{}' named by key '{key}': {source}", path.display())]
    ReadFile {
        /// The key holding the path.
        key: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("syntax error in config file '{}' at line {line}, column {column}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column (characters).
        column: usize,
        /// The parser's message, first line.
        message: String,
    },
    /// A key that no section has (often a typo).
    #[error("unknown key '{key}'{origin}: expected {allowed}")]
    UnknownKey {
        /// Full dotted key, e.g. `mqtt.urll`.
        key: String,
        /// Where it was set.
        origin: Origin,
        /// The keys allowed at that level, quoted (`one of 'url', 'prefix'`).
        allowed: String,
    },
    /// A required key is absent (e.g. `kind` in a `[[power.sensors]]` entry).
    #[error("missing key '{key}'{origin}: {expected}")]
    Missing {
        /// Full dotted key.
        key: String,
        /// Where the enclosing table was set.
        origin: Origin,
        /// What to put there.
        expected: String,
    },
    /// A value of the wrong type or out of range.
    #[error("invalid value '{value}' for key '{key}'{origin}: expected {allowed}")]
    Invalid {
        /// Full dotted key, e.g. `limits.queue_capacity`.
        key: String,
        /// The value as given.
        value: String,
        /// Where it was set.
        origin: Origin,
        /// The allowed type, range or set.
        allowed: String,
    },
    /// Two keys that exclude each other are both set.
    #[error("keys '{key}' and '{other}' are both set{origin}: set only one of them")]
    Conflict {
        /// The first key.
        key: String,
        /// The key it conflicts with.
        other: String,
        /// Where the first was set.
        origin: Origin,
    },
    /// An error of the layering library that names no key (should not happen).
    #[error("configuration error: {0}")]
    Other(String),
}

impl ConfigError {
    /// The dotted key this error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::ReadFile { key, .. }
            | ConfigError::UnknownKey { key, .. }
            | ConfigError::Missing { key, .. }
            | ConfigError::Invalid { key, .. }
            | ConfigError::Conflict { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Replaces an [`Origin::Unknown`] with the one `find` gives for the key.
    /// A missing key is attributed to the table that lacks it.
    pub(crate) fn attribute(mut self, find: impl Fn(&str) -> Origin) -> Self {
        let key = match &self {
            ConfigError::Missing { key, .. } => Some(
                key.rsplit_once('.')
                    .map_or("", |(parent, _)| parent)
                    .to_string(),
            ),
            _ => self.key().map(str::to_string),
        };
        if let (
            Some(key),
            ConfigError::UnknownKey { origin, .. }
            | ConfigError::Missing { origin, .. }
            | ConfigError::Invalid { origin, .. }
            | ConfigError::Conflict { origin, .. },
        ) = (key, &mut self)
        {
            if *origin == Origin::Unknown {
                *origin = find(&key);
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_key_value_origin_and_allowed() {
        let e = ConfigError::Invalid {
            key: "limits.queue_capacity".into(),
            value: "0".into(),
            origin: Origin::File("/etc/edgewatt/edgewatt.toml".into()),
            allowed: "1..=4096".into(),
        };
        assert_eq!(
            e.to_string(),
            "invalid value '0' for key 'limits.queue_capacity' in file \
             '/etc/edgewatt/edgewatt.toml': expected 1..=4096"
        );
    }

    #[test]
    fn env_origin_names_variable() {
        let e = ConfigError::Invalid {
            key: "mqtt.keep_alive_s".into(),
            value: "x".into(),
            origin: Origin::Env("EDGEWATT__MQTT__KEEP_ALIVE_S".into()),
            allowed: "an integer".into(),
        };
        assert!(e
            .to_string()
            .contains("from environment variable 'EDGEWATT__MQTT__KEEP_ALIVE_S'"));
    }

    #[test]
    fn attribute_fills_unknown_only() {
        let e = ConfigError::Conflict {
            key: "mqtt.password".into(),
            other: "mqtt.password_file".into(),
            origin: Origin::Unknown,
        }
        .attribute(|k| Origin::Env(format!("VAR_{k}")));
        assert!(e.to_string().contains("'VAR_mqtt.password'"), "{e}");
        let e = e.attribute(|_| Origin::Default);
        assert!(e.to_string().contains("VAR_"), "{e}");
    }
}
