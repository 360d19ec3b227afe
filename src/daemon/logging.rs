//! Logging: to journald (structured fields, priorities) when systemd connected our
//! stderr to the journal, to stderr otherwise.
//!
//! `RUST_LOG` (an `EnvFilter` directive) overrides the verbosity flags. `main` calls
//! [`init`] once for every command.

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

/// The filter for a `-v` count when `RUST_LOG` is unset. On a terminal the CLI stays
/// quiet (warnings only; llama.cpp's own chatter off) until asked; under systemd the
/// service logs its lifecycle at info, which is what `journalctl -u edgewatt` is for.
pub fn default_directive(verbosity: u8, journal: bool) -> &'static str {
    match (journal, verbosity) {
        (false, 0) => "warn,llama_cpp_2=off,ggml=off",
        (false, 1) | (true, 0) => "info,llama_cpp_2=warn",
        (_, 1) | (false, 2) => "debug",
        _ => "trace",
    }
}

/// Installs the global subscriber: journald when `JOURNAL_STREAM` names our stderr,
/// else stderr (colours only on a terminal).
pub fn init(verbosity: u8) -> Result<LogTarget, LoggingError> {
    let journal = stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref());
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| LoggingError::Filter {
                value: value.clone(),
                reason: e.to_string(),
            })?
        }
        _ => EnvFilter::new(default_directive(verbosity, journal)),
    };

    if journal {
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
        .with_ansi(stderr.is_terminal());
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
        assert_eq!(default_directive(0, false), "warn,llama_cpp_2=off,ggml=off");
        assert_eq!(default_directive(1, false), "info,llama_cpp_2=warn");
        assert_eq!(default_directive(0, true), "info,llama_cpp_2=warn");
        assert_eq!(default_directive(1, true), "debug");
        assert_eq!(default_directive(2, false), "debug");
        assert_eq!(default_directive(9, true), "trace");
        for v in 0..4 {
            for j in [false, true] {
                EnvFilter::try_new(default_directive(v, j)).unwrap();
            }
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
