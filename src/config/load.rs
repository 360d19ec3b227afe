//! Layering (defaults → TOML file → environment) with the `config` crate, and the
//! attribution of every error to the file or variable that set the key.
//!
//! The `config` crate merges the layers but forgets where a value came from and
//! reports unknown keys without a path. So the file and the environment are also
//! parsed here on their own (`Sources`), `serde_path_to_error` supplies the full key
//! of a failure, and the key is looked up in the environment first (it wins), then
//! in the file, else it is a built-in default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError, Origin};
use crate::power::spec::SpecError;

/// The packaged configuration file, read when no `--config` is given and it exists.
pub const DEFAULT_PATH: &str = "/etc/edgewatt/edgewatt.toml";
/// Environment variables `EDGEWATT__SECTION__KEY` override the file.
pub const ENV_PREFIX: &str = "EDGEWATT";
/// Between the prefix and the section, and between section and key.
const ENV_SEPARATOR: &str = "__";

/// Loads the configuration from `path` (or [`DEFAULT_PATH`] when it exists, else the
/// defaults alone) and the process environment, then validates it.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    // vars_os: a variable that is not UTF-8 must not panic the daemon; it cannot be
    // one of ours anyway.
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    load_from(path, &env)
}

/// [`load`] with an explicit environment (tests pass their own).
pub fn load_from(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let file = match path {
        Some(p) => Some(FileSource::read(p)?),
        None if Path::new(DEFAULT_PATH).exists() => {
            Some(FileSource::read(Path::new(DEFAULT_PATH))?)
        }
        None => None,
    };
    let sources = Sources {
        file,
        env: EnvSource::collect(env),
    };

    let defaults = ::config::Config::try_from(&Config::default())
        .map_err(|e| ConfigError::Other(e.to_string()))?;
    let mut builder = ::config::Config::builder().add_source(defaults);
    if let Some(f) = &sources.file {
        builder = builder.add_source(::config::File::from_str(
            &f.text,
            ::config::FileFormat::Toml,
        ));
    }
    let env_map: ::config::Map<String, String> = sources
        .env
        .vars
        .values()
        .map(|(var, value)| (var.clone(), value.clone()))
        .collect();
    builder = builder.add_source(
        ::config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .source(Some(env_map)),
    );
    let merged = builder
        .build()
        .map_err(|e| ConfigError::Other(e.to_string()))?;

    let config: Config =
        serde_path_to_error::deserialize(merged).map_err(|e| sources.map_de_error(e))?;
    config
        .validate()
        .map_err(|e| e.attribute(|key| sources.origin(key).0))?;
    Ok(config)
}

/// Maps the power module's sensor errors into ours (same key, value and range).
pub(super) fn from_spec_error(e: SpecError) -> ConfigError {
    match e {
        SpecError::Invalid {
            key,
            value,
            expected,
        } => ConfigError::Invalid {
            key,
            value,
            origin: Origin::Unknown,
            allowed: expected,
        },
        SpecError::Missing {
            key,
            kind,
            expected,
        } => ConfigError::Missing {
            key,
            origin: Origin::Unknown,
            expected: format!("required for kind '{kind}' ({expected})"),
        },
    }
}

/// The TOML file, read and parsed on its own for attribution.
struct FileSource {
    path: PathBuf,
    text: String,
    table: toml::Table,
}

impl FileSource {
    fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let table = text.parse::<toml::Table>().map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().lines().next().unwrap_or("").to_string(),
            }
        })?;
        Ok(FileSource {
            path: path.to_path_buf(),
            text,
            table,
        })
    }

    /// The value at a dotted key with `[i]` indices, e.g. `power.sensors[0].address`.
    fn lookup(&self, key: &str) -> Option<&toml::Value> {
        let mut segments = Vec::new();
        for part in key.split('.') {
            let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
            segments.push(Seg::Key(name));
            while let Some((idx, after)) = rest.split_once(']') {
                segments.push(Seg::Index(idx.parse().ok()?));
                rest = after.strip_prefix('[').unwrap_or(after);
            }
        }
        let mut iter = segments.into_iter();
        let Some(Seg::Key(first)) = iter.next() else {
            return None;
        };
        let mut value = self.table.get(first)?;
        for seg in iter {
            value = match seg {
                Seg::Key(k) => value.as_table()?.get(k)?,
                Seg::Index(i) => value.as_array()?.get(i)?,
            };
        }
        Some(value)
    }
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The `EDGEWATT__…` variables, by dotted key.
struct EnvSource {
    /// Dotted lowercase key → (variable name, value).
    vars: BTreeMap<String, (String, String)>,
}

impl EnvSource {
    fn collect(env: &[(String, String)]) -> Self {
        // The config crate matches the prefix case-insensitively; so do we.
        let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}").to_lowercase();
        let vars = env
            .iter()
            .filter_map(|(var, value)| {
                let lower = var.to_lowercase();
                let rest = lower.strip_prefix(&prefix)?;
                Some((
                    rest.replace(ENV_SEPARATOR, "."),
                    (var.clone(), value.clone()),
                ))
            })
            .collect();
        EnvSource { vars }
    }
}

struct Sources {
    file: Option<FileSource>,
    env: EnvSource,
}

impl Sources {
    /// Where `key` was set, and its raw value there.
    fn origin(&self, key: &str) -> (Origin, Option<String>) {
        let nested = format!("{key}.");
        for (k, (var, value)) in &self.env.vars {
            if k == key || k.starts_with(&nested) {
                return (Origin::Env(var.clone()), Some(value.clone()));
            }
        }
        if let Some(f) = &self.file {
            if let Some(v) = f.lookup(key) {
                let raw = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                return (Origin::File(f.path.clone()), Some(raw));
            }
        }
        (Origin::Default, None)
    }

    fn map_de_error(&self, e: serde_path_to_error::Error<::config::ConfigError>) -> ConfigError {
        let path = match e.path().to_string() {
            p if p == "." || p == "?" => String::new(),
            p => p,
        };
        let join = |field: &str| {
            if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            }
        };
        match e.into_inner() {
            ::config::ConfigError::Type {
                unexpected,
                expected,
                key,
                ..
            } => {
                let key = if path.is_empty() {
                    key.unwrap_or_default()
                } else {
                    path.clone()
                };
                let (origin, raw) = self.origin(&key);
                ConfigError::Invalid {
                    value: raw.unwrap_or_else(|| unexpected.to_string()),
                    allowed: humanize_expected(expected),
                    origin,
                    key,
                }
            }
            ::config::ConfigError::NotFound(key) => ConfigError::Missing {
                origin: self.origin(&path).0,
                key,
                expected: "a value".into(),
            },
            ::config::ConfigError::Message(msg) => self.map_message(&path, &msg, join),
            other => ConfigError::Other(other.to_string()),
        }
    }

    /// Serde's own messages (unknown field, missing field, unknown variant, invalid
    /// type/value) turned into ours.
    fn map_message(&self, path: &str, msg: &str, join: impl Fn(&str) -> String) -> ConfigError {
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            let (field, tail) = rest.split_once('`').unwrap_or((rest, ""));
            // serde_path_to_error's path already ends at the unknown key.
            let key = if path == field || path.ends_with(&format!(".{field}")) {
                path.to_string()
            } else {
                join(field)
            };
            let allowed = tail
                .strip_prefix(", expected ")
                .map(quote_list)
                .unwrap_or_else(|| "no keys here".into());
            return ConfigError::UnknownKey {
                origin: self.origin(&key).0,
                key,
                allowed,
            };
        }
        if let Some(rest) = msg.strip_prefix("missing field `") {
            let field = rest.split('`').next().unwrap_or(rest);
            return ConfigError::Missing {
                key: join(field),
                origin: self.origin(path).0,
                expected: "required here".into(),
            };
        }
        let (origin, raw) = self.origin(path);
        if let Some(rest) = msg.strip_prefix("unknown variant `") {
            let (variant, tail) = rest.split_once('`').unwrap_or((rest, ""));
            let allowed = tail
                .strip_prefix(", expected ")
                .map(quote_list)
                .unwrap_or_else(|| "a known name".into());
            return ConfigError::Invalid {
                key: path.to_string(),
                value: raw.unwrap_or_else(|| variant.to_string()),
                origin,
                allowed,
            };
        }
        // The config crate's own enum access (unit variants from strings).
        if let Some(rest) = msg.strip_prefix("enum ") {
            if let Some((name, variant)) = rest.split_once(" does not have variant constructor ") {
                return ConfigError::Invalid {
                    key: path.to_string(),
                    value: raw.unwrap_or_else(|| variant.to_string()),
                    origin,
                    allowed: enum_variants(name).unwrap_or_else(|| format!("a variant of {name}")),
                };
            }
        }
        for lead in ["invalid type: ", "invalid value: ", "invalid length "] {
            if let Some(rest) = msg.strip_prefix(lead) {
                let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
                return ConfigError::Invalid {
                    key: path.to_string(),
                    value: raw.unwrap_or_else(|| found.replace('`', "")),
                    origin,
                    allowed: humanize_expected(&quote_list(expected)),
                };
            }
        }
        ConfigError::Invalid {
            key: path.to_string(),
            value: raw.unwrap_or_default(),
            origin,
            allowed: quote_list(msg),
        }
    }
}

/// The allowed names of an enum in the schema, as serde lists them
/// (`one of 'rerun', 'fail'`): the `config` crate's message names only the type.
fn enum_variants(type_name: &str) -> Option<String> {
    use crate::power::spec::{ChipKind, FaultKind, SensorKind};
    use serde::de::DeserializeOwned;
    fn list<T: DeserializeOwned>() -> Option<String> {
        let probe = serde::de::value::StrDeserializer::<serde::de::value::Error>::new("\u{0}");
        let msg = T::deserialize(probe).err()?.to_string();
        msg.split_once(", expected ").map(|(_, l)| quote_list(l))
    }
    match type_name {
        "OnCrash" => list::<super::OnCrash>(),
        "SensorKind" => list::<SensorKind>(),
        "ChipKind" => list::<ChipKind>(),
        "FaultKind" => list::<FaultKind>(),
        _ => None,
    }
}

/// Serde quotes names with backticks; operators read single quotes.
fn quote_list(s: &str) -> String {
    s.replace('`', "'")
}

/// The `config` crate's type names, as ranges an operator can act on.
fn humanize_expected(expected: &str) -> String {
    match expected {
        "an unsigned 8 bit integer" => "an integer in 0..=255".into(),
        "an unsigned 16 bit integer" => "an integer in 0..=65535".into(),
        "an unsigned 32 bit integer" => "an integer in 0..=4294967295".into(),
        "an unsigned 64 bit integer" => "a non-negative integer".into(),
        "an signed 8 bit integer"
        | "an signed 16 bit integer"
        | "an signed 32 bit integer"
        | "an signed 64 bit integer" => "an integer".into(),
        "a floating point" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "a list such as [\"a\", \"b\"] (lists can only be set in the file)".into(),
        "a map" => "a table".into(),
        other if other.starts_with("struct ") => "a table".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("edgewatt.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_err(text: &str, vars: &[(&str, &str)]) -> (String, PathBuf, ConfigError) {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, text);
        let e = load_from(Some(&p), &env(vars)).unwrap_err();
        (e.to_string(), p, e)
    }

    #[test]
    fn layers_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "[mqtt]\nurl = \"mqtt://10.1.1.1\"\nkeep_alive_s = 60\n[models]\ndir = \"/srv/m\"\n",
        );
        let c = load_from(
            Some(&p),
            &env(&[
                ("EDGEWATT__MQTT__KEEP_ALIVE_S", "90"),
                ("EDGEWATT__INFERENCE__MAX_TOKENS", "64"),
                ("EDGEWATT__MODELS__KEEP_ALIVE_S", "-1"),
                ("EDGEWATT__JOBS__ON_CRASH", "fail"),
                ("EDGEWATT__MQTT__STREAM_DEFAULT", "true"),
                ("OTHER__MQTT__URL", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.mqtt.url, "mqtt://10.1.1.1");
        assert_eq!(c.mqtt.keep_alive_s, 90);
        assert_eq!(c.models.dir, PathBuf::from("/srv/m"));
        assert_eq!(c.models.keep_alive_s, -1);
        assert_eq!(c.inference.max_tokens, 64);
        assert_eq!(c.jobs.on_crash, super::super::OnCrash::Fail);
        assert!(c.mqtt.stream_default);
        // untouched keys keep their defaults
        assert_eq!(c.limits.queue_capacity, 16);
        assert_eq!(c.inference.top_k, 40);
    }

    #[test]
    fn no_file_means_defaults() {
        let c = load_from(None, &[]).unwrap();
        if !Path::new(DEFAULT_PATH).exists() {
            assert_eq!(c, Config::default());
        }
    }

    #[test]
    fn missing_file_is_read_error() {
        let e = load_from(Some(Path::new("/nonexistent/edgewatt.toml")), &[]).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(
            e.to_string()
                .starts_with("cannot read config file '/nonexistent/edgewatt.toml': "),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let (msg, p, e) = load_err("[mqtt]\nurl = \"x\"\nkeep_alive_s = = 3\n", &[]);
        assert!(matches!(e, ConfigError::Syntax { line: 3, .. }), "{msg}");
        assert!(
            msg.starts_with(&format!(
                "syntax error in config file '{}' at line 3, column",
                p.display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn unknown_key_in_file() {
        let (msg, p, e) = load_err("[mqtt]\nurll = \"mqtt://x\"\n", &[]);
        assert!(matches!(e, ConfigError::UnknownKey { .. }), "{msg}");
        assert!(
            msg.starts_with(&format!(
                "unknown key 'mqtt.urll' in file '{}'",
                p.display()
            )),
            "{msg}"
        );
        assert!(
            msg.contains("'url'") && msg.contains("'client_id'"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_section_in_file() {
        let (msg, _, _) = load_err("[mqqt]\nurl = \"mqtt://x\"\n", &[]);
        assert!(msg.starts_with("unknown key 'mqqt' in file"), "{msg}");
        assert!(msg.contains("'mqtt'"), "{msg}");
    }

    #[test]
    fn unknown_key_from_env() {
        let (msg, _, _) = load_err("", &[("EDGEWATT__LIMITS__MAX_QUEUE", "3")]);
        assert!(
            msg.starts_with(
                "unknown key 'limits.max_queue' from environment variable 'EDGEWATT__LIMITS__MAX_QUEUE'"
            ),
            "{msg}"
        );
        assert!(msg.contains("'queue_capacity'"), "{msg}");
    }

    #[test]
    fn wrong_type_in_file() {
        let (msg, p, e) = load_err("[limits]\nqueue_capacity = \"many\"\n", &[]);
        assert!(matches!(e, ConfigError::Invalid { .. }), "{msg}");
        assert!(
            msg.starts_with(&format!(
                "invalid value 'many' for key 'limits.queue_capacity' in file '{}': expected",
                p.display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_from_env() {
        let (msg, _, _) = load_err("", &[("EDGEWATT__MQTT__KEEP_ALIVE_S", "soon")]);
        assert!(
            msg.starts_with(
                "invalid value 'soon' for key 'mqtt.keep_alive_s' from environment variable \
                 'EDGEWATT__MQTT__KEEP_ALIVE_S': expected"
            ),
            "{msg}"
        );
    }

    #[test]
    fn integer_too_large_for_type() {
        let (msg, _, _) = load_err("[mqtt]\nkeep_alive_s = 70000\n", &[]);
        assert!(
            msg.contains("invalid value '70000' for key 'mqtt.keep_alive_s' in file"),
            "{msg}"
        );
        assert!(msg.contains("0..=65535"), "{msg}");
    }

    #[test]
    fn out_of_range_attributed_to_file_and_env() {
        let (msg, p, _) = load_err("[limits]\nqueue_capacity = 0\n", &[]);
        assert_eq!(
            msg,
            format!(
                "invalid value '0' for key 'limits.queue_capacity' in file '{}': expected 1..=4096",
                p.display()
            )
        );
        let (msg, _, _) = load_err(
            "[limits]\nqueue_capacity = 4\n",
            &[("EDGEWATT__LIMITS__QUEUE_CAPACITY", "5000")],
        );
        assert_eq!(
            msg,
            "invalid value '5000' for key 'limits.queue_capacity' from environment variable \
             'EDGEWATT__LIMITS__QUEUE_CAPACITY': expected 1..=4096"
        );
    }

    #[test]
    fn unknown_variant() {
        let (msg, _, _) = load_err("[jobs]\non_crash = \"retry\"\n", &[]);
        assert!(
            msg.starts_with("invalid value 'retry' for key 'jobs.on_crash' in file"),
            "{msg}"
        );
        assert!(msg.contains("'rerun'") && msg.contains("'fail'"), "{msg}");
    }

    #[test]
    fn unknown_inference_option() {
        let (msg, _, _) = load_err("[inference]\nmax_token = 5\n", &[]);
        assert!(
            msg.starts_with("unknown key 'inference.max_token' in file"),
            "{msg}"
        );
        assert!(msg.contains("'max_tokens'"), "{msg}");
    }

    #[test]
    fn conflict_attributed() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x\n").unwrap();
        let p = write(
            &dir,
            &format!("[mqtt]\npassword_file = \"{}\"\n", pw.display()),
        );
        let e = load_from(Some(&p), &env(&[("EDGEWATT__MQTT__PASSWORD", "hunter2")])).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ConfigError::Conflict { .. }));
        assert!(
            msg.contains("from environment variable 'EDGEWATT__MQTT__PASSWORD'"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "secret leaked: {msg}");
    }

    #[test]
    fn sensor_entries_validate_with_index() {
        let (msg, p, _) = load_err(
            "[[power.sensors]]\nkind = \"ina219\"\nbus = \"/dev/i2c-1\"\naddress = 0x60\nshunt_ohms = 0.1\n",
            &[],
        );
        assert!(
            msg.starts_with(&format!(
                "invalid value '0x60' for key 'power.sensors[0].address' in file '{}'",
                p.display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn sensor_unknown_kind() {
        let (msg, _, _) = load_err("[[power.sensors]]\nkind = \"ina226\"\n", &[]);
        assert!(msg.contains("key 'power.sensors[0].kind'"), "{msg}");
        assert!(msg.contains("'ina219'"), "{msg}");
    }

    #[test]
    fn sensor_missing_kind() {
        let (msg, _, e) = load_err("[[power.sensors]]\nbus = \"/dev/i2c-1\"\n", &[]);
        assert!(matches!(e, ConfigError::Missing { .. }), "{msg}");
        assert!(
            msg.starts_with("missing key 'power.sensors[0].kind' in file"),
            "{msg}"
        );
    }

    #[test]
    fn sensor_missing_required_key_names_the_file() {
        let (msg, p, _) = load_err(
            "[[power.sensors]]\nkind = \"ina219\"\nbus = \"/dev/i2c-1\"\n",
            &[],
        );
        assert!(
            msg.starts_with(&format!(
                "missing key 'power.sensors[0].address' in file '{}': required for kind 'ina219'",
                p.display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn list_from_env_is_explained() {
        let (msg, _, _) = load_err("", &[("EDGEWATT__INFERENCE__STOP", "###")]);
        assert!(
            msg.contains("key 'inference.stop' from environment variable"),
            "{msg}"
        );
        assert!(msg.contains("lists can only be set in the file"), "{msg}");
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncé\nx", 6), (2, 3));
        assert_eq!(line_col("abc", 0), (1, 1));
    }
}
