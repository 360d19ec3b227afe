//! Energy integration: trapezoids of each rail's power over time windows, split
//! exactly at window boundaries, with gaps left out. Pure functions over plain
//! data; `summary` turns them into the figures of `docs/energy.md`, whose version
//! is [`DEFINITIONS`].

use serde::{Deserialize, Serialize};

use crate::power::Sample;

use super::phases::Window;

// The summary types live in `summary`; re-exported so `energy::summarize` works.
pub use super::summary::{
    summarize, EnergySummary, Mlperf, PerToken, PhaseFlags, PhaseValues, RailEnergy, TokenTotals,
};

/// Names the set of definitions (docs/energy.md) every summary's figures follow.
/// Bump it whenever a definition changes meaning.
pub const DEFINITIONS: &str = "edgewatt-energy-v1";

/// µW·ns → J.
pub(crate) const J_PER_UW_NS: f64 = 1e-15;
/// µW → W.
pub(crate) const W_PER_UW: f64 = 1e-6;
/// ns → s.
pub(crate) const S_PER_NS: f64 = 1e-9;

/// How the summary is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnergyOptions {
    /// Length of the window before the job's first marker whose mean power is the
    /// idle baseline, ns. Default 2 s.
    pub idle_window_ns: u64,
    /// Longest stretch without samples that is still bridged by interpolation, ns;
    /// a longer one is left out and its phase flagged `incomplete`. Default 250 ms.
    pub max_gap_ns: u64,
}

impl EnergyOptions {
    /// The span of the sampler's stream a trace must hold for a job running from
    /// `job_start_ns` to `job_end_ns`: the idle window before it, the job, and
    /// `max_gap_ns` after it (so the last phase's end is covered).
    pub fn capture_window(&self, job_start_ns: u64, job_end_ns: u64) -> Window {
        Window {
            start_ns: job_start_ns.saturating_sub(self.idle_window_ns),
            end_ns: job_end_ns.saturating_add(self.max_gap_ns),
        }
    }
}

impl Default for EnergyOptions {
    fn default() -> Self {
        EnergyOptions {
            idle_window_ns: 2_000_000_000,
            max_gap_ns: 250_000_000,
        }
    }
}

/// The result of integrating one rail over one span.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Integral {
    /// ∫ p dt in µW·ns.
    pub energy_uw_ns: f64,
    /// ns of the span left out because the samples around them were further apart
    /// than the gap limit.
    pub uncovered_ns: u64,
}

impl Integral {
    /// The energy in joules.
    pub fn energy_j(&self) -> f64 {
        self.energy_uw_ns * J_PER_UW_NS
    }
}

/// One rail's readings as `(t_ns, power_uw)`, sorted by time.
pub fn rail_points(samples: &[Sample], rail: u16) -> Vec<(u64, i64)> {
    let mut v: Vec<(u64, i64)> = samples
        .iter()
        .filter(|s| s.rail == rail)
        .map(|s| (s.t_ns(), s.power_uw))
        .collect();
    v.sort_by_key(|p| p.0);
    v
}

fn lerp(a: (u64, i64), b: (u64, i64), t_ns: u64) -> f64 {
    let span = (b.0 - a.0) as f64;
    let f = (t_ns - a.0) as f64 / span;
    a.1 as f64 + (b.1 - a.1) as f64 * f
}

/// ∫ p(t) dt over `[from_ns, to_ns)`, p linear between consecutive points
/// (trapezoids, split exactly at the span's ends by interpolation). A stretch
/// between two points further apart than `max_gap_ns` is not bridged: it counts as
/// uncovered. Before the first / after the last point the nearest reading is held
/// for at most `max_gap_ns`.
pub fn integrate(points: &[(u64, i64)], from_ns: u64, to_ns: u64, max_gap_ns: u64) -> Integral {
    let mut out = Integral::default();
    if to_ns <= from_ns {
        return out;
    }
    let (Some(&first), Some(&last)) = (points.first(), points.last()) else {
        out.uncovered_ns = to_ns - from_ns;
        return out;
    };
    // Leading edge: hold the first reading.
    if from_ns < first.0 {
        let edge = first.0.min(to_ns) - from_ns;
        if first.0 - from_ns <= max_gap_ns {
            out.energy_uw_ns += first.1 as f64 * edge as f64;
        } else {
            out.uncovered_ns += edge;
        }
    }
    // Interior segments overlapping the span.
    let start = points.partition_point(|p| p.0 <= from_ns).saturating_sub(1);
    for pair in points[start..].windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.0 >= to_ns {
            break;
        }
        let lo = a.0.max(from_ns);
        let hi = b.0.min(to_ns);
        if hi <= lo {
            continue;
        }
        if b.0 - a.0 > max_gap_ns {
            out.uncovered_ns += hi - lo;
            continue;
        }
        let p_lo = lerp(a, b, lo);
        let p_hi = lerp(a, b, hi);
        out.energy_uw_ns += (p_lo + p_hi) / 2.0 * (hi - lo) as f64;
    }
    // Trailing edge: hold the last reading.
    if to_ns > last.0 {
        let edge = to_ns - last.0.max(from_ns);
        if to_ns - last.0 <= max_gap_ns {
            out.energy_uw_ns += last.1 as f64 * edge as f64;
        } else {
            out.uncovered_ns += edge;
        }
    }
    out
}

/// Integrates over a union of disjoint windows.
pub fn integrate_windows(points: &[(u64, i64)], windows: &[Window], max_gap_ns: u64) -> Integral {
    windows.iter().fold(Integral::default(), |acc, w| {
        let i = integrate(points, w.start_ns, w.end_ns, max_gap_ns);
        Integral {
            energy_uw_ns: acc.energy_uw_ns + i.energy_uw_ns,
            uncovered_ns: acc.uncovered_ns + i.uncovered_ns,
        }
    })
}

/// Stretches of `[from_ns, to_ns)` not bridged by samples (see [`integrate`]).
pub fn uncovered_spans(
    points: &[(u64, i64)],
    from_ns: u64,
    to_ns: u64,
    max_gap_ns: u64,
) -> Vec<Window> {
    let mut out = Vec::new();
    if to_ns <= from_ns {
        return out;
    }
    let mut edges: Vec<u64> = Vec::with_capacity(points.len() + 2);
    edges.push(from_ns);
    edges.extend(
        points
            .iter()
            .map(|p| p.0)
            .filter(|t| *t > from_ns && *t < to_ns),
    );
    edges.push(to_ns);
    // A stretch is bridged when the readings around it are close enough; the
    // readings around an edge stretch are the nearest ones outside the span.
    let before = points.iter().rev().find(|p| p.0 <= from_ns).map(|p| p.0);
    let after = points.iter().find(|p| p.0 >= to_ns).map(|p| p.0);
    let n = edges.len();
    for i in 0..n - 1 {
        let (lo, hi) = (edges[i], edges[i + 1]);
        let left = if i == 0 { before } else { Some(lo) };
        let right = if i == n - 2 { after } else { Some(hi) };
        let bridged = match (left, right) {
            (Some(l), Some(r)) => r - l <= max_gap_ns,
            (None, Some(r)) => r - lo <= max_gap_ns,
            (Some(l), None) => hi - l <= max_gap_ns,
            (None, None) => false,
        };
        if !bridged && hi > lo {
            out.push(Window {
                start_ns: lo,
                end_ns: hi,
            });
        }
    }
    out
}

/// Arithmetic mean of the readings in `[from_ns, to_ns)`, W.
pub fn mean_power_w(points: &[(u64, i64)], from_ns: u64, to_ns: u64) -> Option<(f64, u64)> {
    let (sum, n) = points
        .iter()
        .filter(|p| p.0 >= from_ns && p.0 < to_ns)
        .fold((0f64, 0u64), |(s, n), p| (s + p.1 as f64, n + 1));
    (n > 0).then(|| (sum / n as f64 * W_PER_UW, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-12)
    }

    #[test]
    fn constant_power_is_power_times_time() {
        // 2 W sampled every 10 ms from 0 to 1 s; integrate 0.1 s..0.6 s.
        let pts: Vec<(u64, i64)> = (0..=100).map(|i| (i * 10 * MS, 2_000_000)).collect();
        let i = integrate(&pts, 100 * MS, 600 * MS, 50 * MS);
        assert!(close(i.energy_j(), 1.0, 1e-12), "{}", i.energy_j());
        assert_eq!(i.uncovered_ns, 0);
    }

    #[test]
    fn boundary_between_samples_is_interpolated() {
        // Ramp 0 → 10 W between t=0 and t=10 ms; ∫ over [2.5 ms, 7.5 ms] = 5 W × 5 ms.
        let pts = [(0, 0), (10 * MS, 10_000_000)];
        let i = integrate(&pts, 2_500_000, 7_500_000, 50 * MS);
        assert!(close(i.energy_j(), 0.025, 1e-12), "{}", i.energy_j());
    }

    #[test]
    fn split_windows_add_up() {
        let pts: Vec<(u64, i64)> = (0..50)
            .map(|i| (i * 7 * MS + 3, (i * i) as i64 * 1000))
            .collect();
        let whole = integrate(&pts, 5 * MS, 300 * MS, 50 * MS).energy_uw_ns;
        let a = integrate(&pts, 5 * MS, 123_456_789, 50 * MS).energy_uw_ns;
        let b = integrate(&pts, 123_456_789, 300 * MS, 50 * MS).energy_uw_ns;
        assert!(close(a + b, whole, 1e-12));
    }

    #[test]
    fn long_gap_is_left_out_short_gap_bridged() {
        let pts = [
            (0, 1_000_000),
            (10 * MS, 1_000_000),
            (510 * MS, 1_000_000),
            (520 * MS, 1_000_000),
        ];
        let bridged = integrate(&pts, 0, 520 * MS, 600 * MS);
        assert!(close(bridged.energy_j(), 0.52, 1e-12));
        let cut = integrate(&pts, 0, 520 * MS, 100 * MS);
        assert!(close(cut.energy_j(), 0.02, 1e-12));
        assert_eq!(cut.uncovered_ns, 500 * MS);
        let spans = uncovered_spans(&pts, 0, 520 * MS, 100 * MS);
        assert_eq!(
            spans,
            vec![Window {
                start_ns: 10 * MS,
                end_ns: 510 * MS
            }]
        );
    }

    #[test]
    fn edges_hold_nearest_reading_within_limit() {
        let pts = [(10 * MS, 1_000_000), (20 * MS, 1_000_000)];
        let i = integrate(&pts, 5 * MS, 25 * MS, 10 * MS);
        assert!(close(i.energy_j(), 0.02, 1e-12));
        // 0..10 ms is held (exactly at the limit); 20..200 ms is too far.
        let far = integrate(&pts, 0, 200 * MS, 10 * MS);
        assert_eq!(far.uncovered_ns, 180 * MS);
        let dense = [(10 * MS, 1_000_000), (12 * MS, 1_000_000)];
        let early = integrate(&dense, 0, 12 * MS, 5 * MS);
        assert_eq!(early.uncovered_ns, 10 * MS);
        assert!(close(early.energy_j(), 0.002, 1e-12));
        assert!(integrate(&[], 0, 10, 5).uncovered_ns == 10);
        assert_eq!(uncovered_spans(&pts, 5 * MS, 25 * MS, 10 * MS), vec![]);
    }

    #[test]
    fn mean_power_ignores_outside() {
        let pts = [(0, 1_000_000), (10, 3_000_000), (20, 100_000_000)];
        assert_eq!(mean_power_w(&pts, 0, 20), Some((2.0, 2)));
        assert_eq!(mean_power_w(&pts, 30, 40), None);
    }

    #[test]
    fn capture_window_covers_idle_and_tail() {
        let o = EnergyOptions::default();
        let w = o.capture_window(10_000_000_000, 12_000_000_000);
        assert_eq!(w.start_ns, 8_000_000_000);
        assert_eq!(w.end_ns, 12_250_000_000);
    }
}
