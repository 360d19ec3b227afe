//! Sampler bookkeeping: per-rail counters, fixed-size latency/jitter histograms, and
//! the serialisable `SamplerStats`.

use std::collections::BTreeMap;

use serde::Serialize;

/// A log-linear histogram of ns values since start: 16 buckets per power of two
/// (≤ 3.1 % error at the bucket midpoint), values capped at 2^32 ns (4.3 s).
/// Fixed size, so recording touches one cache line and allocates nothing: it runs
/// once per sample on the sampler thread, where every page touched after a wake-up
/// costs (a TLB refill).
#[derive(Debug, Clone)]
pub struct LogHistogram {
    counts: Box<[u64; LogHistogram::BUCKETS]>,
    total: u64,
}

impl LogHistogram {
    const SUB: u32 = 16;
    const BUCKETS: usize = 464;

    /// Empty.
    pub fn new() -> Self {
        LogHistogram {
            counts: Box::new([0; Self::BUCKETS]),
            total: 0,
        }
    }

    /// Bucket of `v` (values below 16 are exact).
    fn bucket(v: u64) -> usize {
        let v = v.min(u64::from(u32::MAX));
        if v < u64::from(Self::SUB) {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // ≥ 4
        let m = (v >> (e - 4)) & 15;
        ((e - 3) * Self::SUB) as usize + m as usize
    }

    /// The value a bucket stands for: the middle of its range.
    fn value(b: usize) -> u64 {
        let sub = Self::SUB as usize;
        if b < sub {
            return b as u64;
        }
        let e = (b / sub) as u32 + 3;
        let m = (b % sub) as u64;
        let width = 1u64 << (e - 4);
        (16 + m) * width + width / 2
    }

    /// Counts a value.
    pub fn push(&mut self, v: u64) {
        self.counts[Self::bucket(v)] += 1;
        self.total += 1;
    }

    /// Percentile (0–100) by nearest rank, to the bucket's resolution; 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(b);
            }
        }
        Self::value(Self::BUCKETS - 1)
    }
}

impl Default for LogHistogram {
    fn default() -> Self {
        Self::new()
    }
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
    pub latency_ns: LogHistogram,
    /// |interval − n × period|, ns.
    pub jitter_ns: LogHistogram,
    /// Expected period, ns.
    pub period_ns: u64,
    /// Period the sampler measured (gated chips learn it; otherwise the expected).
    pub period_est_ns: u64,
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
    /// The chip's conversion rate from its settings (hwmon: the polling rate), Hz.
    pub nominal_rate_hz: f64,
    /// The chip's conversion rate as the sampler measured it (a gated chip's own
    /// oscillator: within ±15 % of nominal; otherwise the nominal rate), Hz.
    pub measured_rate_hz: f64,
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
            measured_rate_hz: match (self.period_est_ns, self.period_ns) {
                (0, 0) => 0.0,
                (0, p) | (p, _) => 1e9 / p as f64,
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
    fn histogram_percentiles_within_resolution() {
        let mut h = LogHistogram::new();
        assert_eq!(h.percentile(99.0), 0);
        // 1..=100 µs, uniformly.
        for us in 1..=100u64 {
            h.push(us * 1000);
        }
        for (p, want) in [(50.0, 50_000.0), (99.0, 99_000.0), (100.0, 100_000.0)] {
            let got = h.percentile(p) as f64;
            assert!((got - want).abs() / want < 0.035, "p{p}: {got} vs {want}");
        }
        assert_eq!(h.percentile(0.0), h.percentile(1.0));
    }

    #[test]
    fn histogram_small_values_exact_and_huge_values_capped() {
        let mut h = LogHistogram::new();
        for v in [0, 3, 15] {
            h.push(v);
        }
        assert_eq!(
            (h.percentile(1.0), h.percentile(50.0), h.percentile(100.0)),
            (0, 3, 15)
        );
        h.push(u64::MAX);
        let top = h.percentile(100.0);
        assert!(top > 4_000_000_000 && top < 4_400_000_000, "{top}");
    }

    #[test]
    fn histogram_buckets_round_trip() {
        // Every value maps to a bucket whose representative is within 1/32 of it.
        for v in (16..5_000_000u64).step_by(997) {
            let rep = LogHistogram::value(LogHistogram::bucket(v)) as f64;
            assert!(
                (rep - v as f64).abs() / (v as f64) <= 1.0 / 31.0,
                "{v} -> {rep}"
            );
        }
        assert!(LogHistogram::bucket(u64::MAX) < LogHistogram::BUCKETS);
    }
}
