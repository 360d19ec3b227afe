//! systemd service notifications (`Type=notify`), over the `sd-notify` crate.
//!
//! Every function is a no-op when `NOTIFY_SOCKET` is unset (a foreground run, a test),
//! and a failed send is logged, never fatal: losing `systemctl status` text must not
//! stop the daemon. Watchdog pings belong in the loop that proves progress (issue 6),
//! not in a detached timer: a timer keeps pinging while the job loop is wedged.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends `states` to the service manager; logs and drops errors.
fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    // unset_env = false: the variables must survive for the next notification.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// `READY=1`: startup is complete (broker connected, models scanned, sensors probed).
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// `STATUS=…`: one line for `systemctl status`.
pub fn status(text: &str) {
    // A newline would end the STATUS= assignment and start another one.
    let line = text.replace('\n', " ");
    send(&[NotifyState::Status(&line)]);
}

/// `EXTEND_TIMEOUT_USEC=…`: the start (or stop) needs `by` more time from now, e.g.
/// while a large model loads. Clamped to what the protocol carries (~71 minutes).
pub fn extend_timeout(by: Duration) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}

/// `WATCHDOG=1`: the main loop made progress.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// `STOPPING=1`: a graceful shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// `RELOADING=1` with `MONOTONIC_USEC` (what `Type=notify-reload` expects); follow
/// with [`ready`] when the reload is done.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The watchdog timeout systemd enforces (`WatchdogSec=`), when it applies to this
/// process: `WATCHDOG_USEC` is set and `WATCHDOG_PID`, if set, is our pid.
/// Ping at half this interval or more often.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// How often the main loop should call [`watchdog`]: half the timeout, so one late
/// iteration is not a restart.
pub fn watchdog_ping_period() -> Option<Duration> {
    watchdog_interval().map(|d| d / 2)
}

/// The rule behind [`watchdog_interval`], without the environment.
pub fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != my_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_needs_usec() {
        assert_eq!(parse_watchdog(None, None, 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("x"), None, 7), None);
        assert_eq!(
            parse_watchdog(Some("20000000"), None, 7),
            Some(Duration::from_secs(20))
        );
    }

    #[test]
    fn watchdog_pid_must_be_ours() {
        assert_eq!(
            parse_watchdog(Some("1000"), Some("7"), 7),
            Some(Duration::from_millis(1))
        );
        assert_eq!(parse_watchdog(Some("1000"), Some("8"), 7), None);
        assert_eq!(parse_watchdog(Some("1000"), Some("bad"), 7), None);
    }

    #[test]
    fn no_socket_is_a_noop() {
        // NOTIFY_SOCKET is not set under `cargo test` unless a test sets it; these
        // must neither panic nor block. (The socket path is covered in
        // tests/service_notify.rs with a real datagram socket.)
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            ready();
            status("line one\nline two");
            extend_timeout(Duration::from_secs(u64::MAX / 2));
            watchdog();
            reloading();
            stopping();
        }
    }
}
