//! Logging: to journald (structured fields, priorities) when systemd connected our
//! stderr to the journal, to stderr otherwise.
//!
//! `RUST_LOG` (an `EnvFilter` directive) overrides the verbosity flags.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Where logs went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// The systemd journal, through its native protocol.
    Journald,
    /// Human-readable lines on stderr.
    Stderr,
}

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `RUST_LOG` is not a valid filter.
    #[error("invalid RUST_LOG filter '{value}': {reason}")]
    Filter {
        /// The variable's value.
        value: String,
        /// The parser's message.
        reason: String,
    },
    /// A global subscriber was installed before (init called twice).
    #[error("logging is already initialised: {0}")]
    AlreadySet(String),
}

/// The filter for `-v` count: 0 = info, 1 = debug, 2+ = trace (for edgewatt; other
/// crates stay at warn).
pub fn default_directive(verbosity: u8) -> String {
    let level = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    format!("warn,edgewatt={level}")
}

/// Installs the global subscriber: journald when `JOURNAL_STREAM` names our stderr,
/// else stderr (colours only on a terminal).
pub fn init(verbosity: u8) -> Result<LogTarget, LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| LoggingError::Filter {
                value: value.clone(),
                reason: e.to_string(),
            })?
        }
        _ => EnvFilter::new(default_directive(verbosity)),
    };

    if stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref()) {
        if let Ok(journald) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter)
                .with(journald.with_syslog_identifier("edgewatt".into()))
                .try_init()
                .map_err(|e| LoggingError::AlreadySet(e.to_string()))?;
            return Ok(LogTarget::Journald);
        }
        // No journald socket (e.g. in a container): fall through to stderr, which
        // systemd still captures.
    }
    let stderr = std::io::stderr();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(stderr.is_terminal())
        // The journal stamps lines itself; a timestamp there would be printed twice.
        .with_target(false);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .map_err(|e| LoggingError::AlreadySet(e.to_string()))?;
    Ok(LogTarget::Stderr)
}

/// True when `JOURNAL_STREAM` (`DEV:INODE`, set by systemd) describes our stderr.
/// A child whose stderr was redirected inherits the variable but not the stream, so
/// the device and inode are compared when `/proc` allows; else the variable decides.
pub fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    let Some(value) = journal_stream else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => {
            use std::os::unix::fs::MetadataExt;
            m.dev() == dev && m.ino() == ino
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_levels() {
        assert_eq!(default_directive(0), "warn,edgewatt=info");
        assert_eq!(default_directive(1), "warn,edgewatt=debug");
        assert_eq!(default_directive(5), "warn,edgewatt=trace");
        for v in 0..3 {
            EnvFilter::try_new(default_directive(v)).unwrap();
        }
    }

    #[test]
    fn journal_stream_must_match_stderr() {
        assert!(!stderr_is_journal(None));
        assert!(!stderr_is_journal(Some("garbage")));
        assert!(!stderr_is_journal(Some("1:x")));
        // Some other stream than our stderr.
        assert!(!stderr_is_journal(Some("0:1")));
        // Our own stderr's device and inode.
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata("/proc/self/fd/2") {
            let own = format!("{}:{}", m.dev(), m.ino());
            assert!(stderr_is_journal(Some(&own)));
        }
    }
}
