//! The one clock: every timestamp that is compared with another is CLOCK_MONOTONIC
//! nanoseconds. Wall time appears once per trace, as an anchor pair read together.

use serde::{Deserialize, Serialize};

/// CLOCK_MONOTONIC in nanoseconds (the same clock the kernel uses for hwmon/IIO
/// timestamps, unaffected by NTP steps).
pub fn monotonic_ns() -> u64 {
    read_clock(libc::CLOCK_MONOTONIC)
}

/// Wall-clock time (CLOCK_REALTIME) in nanoseconds since the Unix epoch.
pub fn unix_ns() -> u64 {
    read_clock(libc::CLOCK_REALTIME)
}

fn read_clock(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime cannot fail for
    // these two clocks on Linux (EINVAL only for unknown clock ids).
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// A (monotonic, unix) pair read back to back, so monotonic timestamps in a trace
/// can be placed on the calendar: `unix = anchor.unix_ns + (t - anchor.monotonic_ns)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockAnchor {
    /// CLOCK_MONOTONIC at the anchor, ns.
    pub monotonic_ns: u64,
    /// CLOCK_REALTIME at the anchor, ns since the epoch.
    pub unix_ns: u64,
}

impl ClockAnchor {
    /// Reads both clocks; the realtime read is bracketed by two monotonic reads and
    /// paired with their midpoint, which bounds the pairing error to half the gap.
    pub fn now() -> Self {
        let a = monotonic_ns();
        let unix_ns = unix_ns();
        let b = monotonic_ns();
        ClockAnchor {
            monotonic_ns: a + (b - a) / 2,
            unix_ns,
        }
    }

    /// Converts a monotonic timestamp to unix ns using this anchor.
    pub fn to_unix_ns(&self, t_ns: u64) -> u64 {
        (self.unix_ns as i128 + (t_ns as i128 - self.monotonic_ns as i128)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let mut last = monotonic_ns();
        for _ in 0..1000 {
            let t = monotonic_ns();
            assert!(t >= last);
            last = t;
        }
    }

    #[test]
    fn anchor_maps_monotonic_to_unix() {
        let a = ClockAnchor {
            monotonic_ns: 1_000,
            unix_ns: 1_700_000_000_000_000_000,
        };
        assert_eq!(a.to_unix_ns(1_500), 1_700_000_000_000_000_500);
        assert_eq!(a.to_unix_ns(500), 1_699_999_999_999_999_500);
    }
}
