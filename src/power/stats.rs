//! Sampler bookkeeping: per-rail counters, bounded latency/jitter reservoirs, and
//! the serialisable `SamplerStats`.

use std::collections::BTreeMap;

use serde::Serialize;

/// The last `N` values of a measurement, for percentiles without unbounded memory.
#[derive(Debug, Clone)]
pub struct Reservoir {
    values: Vec<u32>,
    next: usize,
}

impl Reservoir {
    const N: usize = 8192;

    /// Empty.
    pub fn new() -> Self {
        Reservoir {
            values: Vec::new(),
            next: 0,
        }
    }

    /// Adds a value (saturating at u32::MAX).
    pub fn push(&mut self, v: u64) {
        let v = v.min(u64::from(u32::MAX)) as u32;
        if self.values.len() < Self::N {
            self.values.push(v);
        } else {
            self.values[self.next] = v;
        }
        self.next = (self.next + 1) % Self::N;
    }

    /// Percentile (0–100) by nearest rank; 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        percentile(&self.values, p)
    }
}

impl Default for Reservoir {
    fn default() -> Self {
        Self::new()
    }
}

/// Nearest-rank percentile of `values` (0 when empty).
pub fn percentile(values: &[u32], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    u64::from(v[rank.clamp(1, v.len()) - 1])
}

/// Live counters of one rail (inside the sampler).
#[derive(Debug, Clone, Default)]
pub struct RailCounters {
    /// Fresh samples.
    pub samples: u64,
    /// First sample's t_ns.
    pub first_t_ns: Option<u64>,
    /// Last sample's t_ns.
    pub last_t_ns: Option<u64>,
    /// Conversions the chip made that we did not read.
    pub conversions_missed: u64,
    /// Polls that found no fresh conversion (would have been duplicates).
    pub duplicates_avoided: u64,
    /// Conversions left unread on purpose while the sampler was idle (idle rate mode).
    pub idle_skipped: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Gaps recorded.
    pub gaps: u64,
    /// Read latency, ns.
    pub latency_ns: Reservoir,
    /// |interval − n × period|, ns.
    pub jitter_ns: Reservoir,
    /// Expected period, ns.
    pub period_ns: u64,
}

/// One rail's statistics.
#[derive(Debug, Clone, Serialize)]
pub struct RailStats {
    /// Rail index.
    pub rail: u16,
    /// Rail name.
    pub name: String,
    /// Fresh samples captured.
    pub samples: u64,
    /// Fresh samples per second over the captured span.
    pub effective_rate_hz: f64,
    /// The chip's conversion rate (hwmon: the polling rate), Hz.
    pub nominal_rate_hz: f64,
    /// Conversions made but not read.
    pub conversions_missed: u64,
    /// Polls that found nothing fresh.
    pub duplicates_avoided: u64,
    /// Conversions left unread on purpose in idle rate mode (not counted as missed).
    pub idle_skipped: u64,
    /// Read latency p50, µs.
    pub read_latency_p50_us: f64,
    /// Read latency p99, µs.
    pub read_latency_p99_us: f64,
    /// Interval jitter p99, µs.
    pub interval_jitter_p99_us: f64,
    /// Errors by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Gaps recorded.
    pub gaps: u64,
}

impl RailCounters {
    /// Snapshot as `RailStats`.
    pub fn to_stats(&self, rail: u16, name: &str) -> RailStats {
        let span = match (self.first_t_ns, self.last_t_ns) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => 0.0,
        };
        RailStats {
            rail,
            name: name.to_string(),
            samples: self.samples,
            effective_rate_hz: if span > 0.0 {
                (self.samples.saturating_sub(1)) as f64 / span
            } else {
                0.0
            },
            nominal_rate_hz: if self.period_ns > 0 {
                1e9 / self.period_ns as f64
            } else {
                0.0
            },
            conversions_missed: self.conversions_missed,
            duplicates_avoided: self.duplicates_avoided,
            idle_skipped: self.idle_skipped,
            read_latency_p50_us: self.latency_ns.percentile(50.0) as f64 / 1000.0,
            read_latency_p99_us: self.latency_ns.percentile(99.0) as f64 / 1000.0,
            interval_jitter_p99_us: self.jitter_ns.percentile(99.0) as f64 / 1000.0,
            errors_by_kind: self.errors.clone(),
            gaps: self.gaps,
        }
    }
}

/// One sampler thread's statistics.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadStats {
    /// Thread (bus) name.
    pub name: String,
    /// CPU time used, ns.
    pub cpu_ns: u64,
    /// Wall time running, ns.
    pub wall_ns: u64,
    /// CPU as a percentage of one core.
    pub cpu_percent: f64,
    /// Samples in the ring now.
    pub ring_len: usize,
    /// Samples dropped because the ring was full.
    pub ring_overflows: u64,
}

/// Everything the sampler counts.
#[derive(Debug, Clone, Serialize)]
pub struct SamplerStats {
    /// Per rail.
    pub rails: Vec<RailStats>,
    /// Per sampler thread.
    pub threads: Vec<ThreadStats>,
    /// Total ring overflows.
    pub ring_overflows: u64,
    /// Total gaps recorded.
    pub gaps: u64,
    /// Errors by kind, all rails (a sensor's error counts once, on its first rail).
    pub errors_by_kind: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[], 99.0), 0);
    }

    #[test]
    fn reservoir_keeps_last_n() {
        let mut r = Reservoir::new();
        for i in 0..(Reservoir::N as u64 + 10) {
            r.push(i);
        }
        assert_eq!(r.values.len(), Reservoir::N);
        assert_eq!(r.percentile(0.0), 10);
    }
}
