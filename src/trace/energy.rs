//! Energy math: trapezoidal integration of each rail's power over the phase
//! windows, idle baselines, per-token figures and an MLPerf-style figure. Pure
//! functions over plain data; every figure is defined in `docs/energy.md`, whose
//! version is [`DEFINITIONS`].

use serde::{Deserialize, Serialize};

use crate::power::Sample;

use super::phases::{phase_windows, PhaseWindows, Window};
use super::thermal::{summarize_thermal, ThermalSummary};
use super::trace::Trace;

/// Names the set of definitions (docs/energy.md) every summary's figures follow.
/// Bump it whenever a definition changes meaning.
pub const DEFINITIONS: &str = "edgewatt-energy-v1";

/// µW·ns → J.
const J_PER_UW_NS: f64 = 1e-15;
/// µW → W.
const W_PER_UW: f64 = 1e-6;
/// ns → s.
const S_PER_NS: f64 = 1e-9;

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

/// One value per phase (J, W·s, s or a count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseValues {
    pub load: f64,
    pub prefill: f64,
    pub decode: f64,
    /// load + prefill + decode.
    pub total: f64,
}

impl PhaseValues {
    fn new(load: f64, prefill: f64, decode: f64) -> Self {
        PhaseValues {
            load,
            prefill,
            decode,
            total: load + prefill + decode,
        }
    }

    fn add(&self, o: &PhaseValues) -> Self {
        PhaseValues::new(
            self.load + o.load,
            self.prefill + o.prefill,
            self.decode + o.decode,
        )
    }

    /// These energies minus `idle_w` over the matching durations.
    fn minus_idle(&self, idle_w: f64, duration_s: &PhaseValues) -> Self {
        PhaseValues::new(
            self.load - idle_w * duration_s.load,
            self.prefill - idle_w * duration_s.prefill,
            self.decode - idle_w * duration_s.decode,
        )
    }
}

/// One flag per phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseFlags {
    pub load: bool,
    pub prefill: bool,
    pub decode: bool,
    /// Any of the above.
    pub total: bool,
}

impl PhaseFlags {
    fn new(load: bool, prefill: bool, decode: bool) -> Self {
        PhaseFlags {
            load,
            prefill,
            decode,
            total: load || prefill || decode,
        }
    }

    fn or(&self, o: &PhaseFlags) -> Self {
        PhaseFlags::new(
            self.load || o.load,
            self.prefill || o.prefill,
            self.decode || o.decode,
        )
    }
}

/// Joules per generated token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PerToken {
    /// Decode energy ÷ generated tokens.
    pub decode: Option<f64>,
    /// (Prefill + decode) energy ÷ generated tokens.
    pub e2e: Option<f64>,
}

/// Token counts over the measured repetitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenTotals {
    pub prompt: u64,
    pub generated: u64,
}

/// The figures of one rail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RailEnergy {
    /// Rail name.
    pub name: String,
    /// True when this rail measures the whole board.
    pub total: bool,
    /// Mean power over the idle window; `None` without samples there.
    pub idle_w: Option<f64>,
    /// energy_j.total ÷ duration_s.total.
    pub avg_w: Option<f64>,
    /// Highest sample inside load ∪ prefill ∪ decode.
    pub peak_w: Option<f64>,
    /// Integrated energy per phase.
    pub energy_j: PhaseValues,
    /// energy_j minus idle_w × duration; `None` when idle_w is.
    pub active_energy_j: Option<PhaseValues>,
    /// Phases with an unbridged gap or no closing marker.
    pub incomplete: PhaseFlags,
    /// Seconds of each phase left out (gaps longer than max_gap).
    pub uncovered_s: PhaseValues,
}

/// Mean power × duration between the measured run's begin and end markers, as
/// MLPerf Power reports it (on the basis rails).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mlperf {
    pub begin_ns: u64,
    pub end_ns: u64,
    pub duration_s: f64,
    /// Arithmetic mean of the readings inside the window (summed over basis rails).
    pub avg_w: f64,
    /// avg_w × duration_s.
    pub energy_j: f64,
    /// energy_j ÷ generated tokens.
    pub j_per_token: Option<f64>,
    /// Readings averaged.
    pub samples: u64,
}

/// The energy of one job: the MQTT result's `energy` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergySummary {
    /// [`DEFINITIONS`]: which version of docs/energy.md these figures follow.
    pub definitions: String,
    /// True when any rail is simulated.
    pub simulated: bool,
    /// Measured sampling rate per rail inside the job, Hz (mean over rails).
    pub sample_rate_hz: Option<f64>,
    /// Samples (all rails) inside the job window.
    pub samples: u64,
    /// Distinct stretches without samples longer than max_gap, or reported by the
    /// sampler, inside the job window (all rails).
    pub gaps: u64,
    /// The idle window used, s.
    pub idle_window_s: f64,
    /// The longest bridged gap, s.
    pub max_gap_s: f64,
    /// Measured (non-warm-up) repetitions.
    pub repetitions: u32,
    /// Token counts of the measured repetitions.
    pub tokens: TokenTotals,
    /// Phase durations, s.
    pub duration_s: PhaseValues,
    /// What the job-level figures are computed on: the total rail's name, or
    /// `sum(A+B+…)` of the component rails when no rail is marked total.
    pub basis: String,
    /// Idle power of the basis.
    pub idle_w: Option<f64>,
    /// Average power of the basis over load ∪ prefill ∪ decode.
    pub avg_w: Option<f64>,
    /// Peak sample of the total rail (`None` on a summed basis).
    pub peak_w: Option<f64>,
    /// Energy of the basis per phase.
    pub energy_j: PhaseValues,
    /// The same minus idle.
    pub active_energy_j: Option<PhaseValues>,
    /// Incomplete phases on the basis.
    pub incomplete: PhaseFlags,
    /// Per-rail figures.
    pub rails: Vec<RailEnergy>,
    /// Gross J/token.
    pub j_per_token: PerToken,
    /// Generated tokens ÷ (prefill + decode) energy, gross.
    pub tokens_per_j: Option<f64>,
    /// J/token from active energy.
    pub active_j_per_token: PerToken,
    /// Generated tokens ÷ active (prefill + decode) energy.
    pub active_tokens_per_j: Option<f64>,
    /// MLPerf-style figure; `None` without a measured repetition.
    pub mlperf: Option<Mlperf>,
    /// Temperatures, frequencies and throttling during the job, when recorded.
    #[serde(default)]
    pub thermal: Option<ThermalSummary>,
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

fn per_token(e: &PhaseValues, generated: u64) -> PerToken {
    if generated == 0 {
        return PerToken::default();
    }
    let n = generated as f64;
    PerToken {
        decode: Some(e.decode / n),
        e2e: Some((e.prefill + e.decode) / n),
    }
}

fn tokens_per_j(e: &PhaseValues, generated: u64) -> Option<f64> {
    let j = e.prefill + e.decode;
    (generated > 0 && j > 0.0).then(|| generated as f64 / j)
}

fn secs(ws: &[Window]) -> f64 {
    ws.iter().map(|w| w.len_ns() as f64 * S_PER_NS).sum()
}

/// One rail's figures over the given phases.
fn rail_energy(
    trace: &Trace,
    rail: u16,
    pw: &PhaseWindows,
    opts: &EnergyOptions,
    duration_s: &PhaseValues,
) -> RailEnergy {
    let pts = rail_points(&trace.samples, rail);
    let gap = opts.max_gap_ns;
    let load = integrate_windows(&pts, &pw.load, gap);
    let prefill = integrate_windows(&pts, &pw.prefill, gap);
    let decode = integrate_windows(&pts, &pw.decode, gap);
    let energy_j = PhaseValues::new(load.energy_j(), prefill.energy_j(), decode.energy_j());
    let uncovered_s = PhaseValues::new(
        load.uncovered_ns as f64 * S_PER_NS,
        prefill.uncovered_ns as f64 * S_PER_NS,
        decode.uncovered_ns as f64 * S_PER_NS,
    );
    let incomplete = PhaseFlags::new(
        load.uncovered_ns > 0 || pw.unclosed.load,
        prefill.uncovered_ns > 0 || pw.unclosed.prefill,
        decode.uncovered_ns > 0 || pw.unclosed.decode,
    );
    let idle_w = pw.job.and_then(|job| {
        let from = job.start_ns.saturating_sub(opts.idle_window_ns);
        mean_power_w(&pts, from, job.start_ns).map(|(w, _)| w)
    });
    let measured = pw.all_measured();
    let peak_w = pts
        .iter()
        .filter(|p| measured.iter().any(|w| w.contains(p.0)))
        .map(|p| p.1)
        .max()
        .map(|uw| uw as f64 * W_PER_UW);
    let info = trace.rails.get(usize::from(rail));
    RailEnergy {
        name: trace.rail_name(rail),
        total: info.is_some_and(|r| r.total),
        idle_w,
        avg_w: (duration_s.total > 0.0).then(|| energy_j.total / duration_s.total),
        peak_w,
        energy_j,
        active_energy_j: idle_w.map(|w| energy_j.minus_idle(w, duration_s)),
        incomplete,
        uncovered_s,
    }
}

/// Counts distinct stretches without data (detected or reported) inside the job.
fn count_gaps(trace: &Trace, job: Window, max_gap_ns: u64) -> u64 {
    let mut n = 0u64;
    for rail in 0..trace.rails.len() {
        let Ok(rail) = u16::try_from(rail) else {
            break;
        };
        let pts = rail_points(&trace.samples, rail);
        let mut spans = uncovered_spans(&pts, job.start_ns, job.end_ns, max_gap_ns);
        spans.extend(
            trace
                .gaps
                .iter()
                .filter(|g| g.rail == rail && g.start_ns < job.end_ns && g.end_ns > job.start_ns)
                .map(|g| Window {
                    start_ns: g.start_ns.max(job.start_ns),
                    end_ns: g
                        .end_ns
                        .min(job.end_ns)
                        .max(g.start_ns.max(job.start_ns) + 1),
                }),
        );
        spans.sort_by_key(|w| w.start_ns);
        n += super::phases::merge(spans).len() as u64;
    }
    n
}

/// Mean sampling rate per rail over the job window, Hz.
fn sample_rate_hz(trace: &Trace, job: Window) -> Option<f64> {
    let rates: Vec<f64> = (0..trace.rails.len())
        .filter_map(|r| u16::try_from(r).ok())
        .filter_map(|r| {
            let ts: Vec<u64> = rail_points(&trace.samples, r)
                .into_iter()
                .map(|p| p.0)
                .filter(|t| job.start_ns <= *t && *t <= job.end_ns)
                .collect();
            match (ts.first(), ts.last()) {
                (Some(a), Some(b)) if ts.len() >= 2 && b > a => {
                    Some((ts.len() - 1) as f64 / ((b - a) as f64 * S_PER_NS))
                }
                _ => None,
            }
        })
        .collect();
    (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64)
}

/// Computes every figure of `docs/energy.md` for one trace.
pub fn summarize(trace: &Trace, opts: &EnergyOptions) -> EnergySummary {
    let pw = phase_windows(&trace.markers);
    let duration_s = PhaseValues::new(secs(&pw.load), secs(&pw.prefill), secs(&pw.decode));
    let rails: Vec<RailEnergy> = (0..trace.rails.len())
        .filter_map(|r| u16::try_from(r).ok())
        .map(|r| rail_energy(trace, r, &pw, opts, &duration_s))
        .collect();

    // The basis: the (first) total rail alone, or the sum of the component rails.
    // Never both: a total rail already contains its components.
    let total_idx = rails.iter().position(|r| r.total);
    let basis_rails: Vec<usize> = match total_idx {
        Some(i) => vec![i],
        None => (0..rails.len()).collect(),
    };
    let basis = match total_idx {
        Some(i) => rails[i].name.clone(),
        None => format!(
            "sum({})",
            rails
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join("+")
        ),
    };
    let picked: Vec<&RailEnergy> = basis_rails.iter().map(|&i| &rails[i]).collect();
    let energy_j = picked
        .iter()
        .fold(PhaseValues::default(), |acc, r| acc.add(&r.energy_j));
    let incomplete = if picked.is_empty() {
        PhaseFlags::new(true, true, true)
    } else {
        picked
            .iter()
            .fold(PhaseFlags::default(), |acc, r| acc.or(&r.incomplete))
    };
    let idle_w = picked
        .iter()
        .map(|r| r.idle_w)
        .try_fold(0.0, |acc, w| w.map(|w| acc + w))
        .filter(|_| !picked.is_empty());
    let active_energy_j = idle_w.map(|w| energy_j.minus_idle(w, &duration_s));
    let peak_w = match total_idx {
        Some(i) => rails[i].peak_w,
        None => None,
    };
    let generated = pw.generated_tokens;

    let mlperf = pw.measured.and_then(|m| {
        let mut avg_w = 0.0;
        let mut samples = 0;
        for &i in &basis_rails {
            let pts = rail_points(&trace.samples, u16::try_from(i).ok()?);
            let (w, n) = mean_power_w(&pts, m.start_ns, m.end_ns.saturating_add(1))?;
            avg_w += w;
            samples += n;
        }
        let duration_s = m.len_ns() as f64 * S_PER_NS;
        let energy_j = avg_w * duration_s;
        Some(Mlperf {
            begin_ns: m.start_ns,
            end_ns: m.end_ns,
            duration_s,
            avg_w,
            energy_j,
            j_per_token: (generated > 0).then(|| energy_j / generated as f64),
            samples,
        })
    });

    let job = pw.job.unwrap_or(Window {
        start_ns: 0,
        end_ns: 0,
    });
    let samples = trace
        .samples
        .iter()
        .filter(|s| pw.job.is_some() && job.start_ns <= s.t_ns() && s.t_ns() <= job.end_ns)
        .count() as u64;

    EnergySummary {
        definitions: DEFINITIONS.to_string(),
        simulated: trace.simulated || trace.rails.iter().any(|r| r.simulated),
        sample_rate_hz: pw.job.and_then(|j| sample_rate_hz(trace, j)),
        samples,
        gaps: pw.job.map_or(0, |j| count_gaps(trace, j, opts.max_gap_ns)),
        idle_window_s: opts.idle_window_ns as f64 * S_PER_NS,
        max_gap_s: opts.max_gap_ns as f64 * S_PER_NS,
        repetitions: pw.repetitions,
        tokens: TokenTotals {
            prompt: pw.prompt_tokens,
            generated,
        },
        duration_s,
        basis,
        idle_w,
        avg_w: (duration_s.total > 0.0 && !picked.is_empty())
            .then(|| energy_j.total / duration_s.total),
        peak_w,
        energy_j,
        active_energy_j,
        incomplete,
        j_per_token: per_token(&energy_j, generated),
        tokens_per_j: tokens_per_j(&energy_j, generated),
        active_j_per_token: active_energy_j
            .map(|e| per_token(&e, generated))
            .unwrap_or_default(),
        active_tokens_per_j: active_energy_j.and_then(|e| tokens_per_j(&e, generated)),
        mlperf,
        thermal: trace
            .thermal
            .as_ref()
            .zip(pw.job)
            .map(|(t, j)| summarize_thermal(t, j.start_ns, j.end_ns)),
        rails,
    }
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

    #[test]
    fn per_token_figures() {
        let e = PhaseValues::new(5.0, 2.0, 8.0);
        let pt = per_token(&e, 4);
        assert_eq!(pt.decode, Some(2.0));
        assert_eq!(pt.e2e, Some(2.5));
        assert_eq!(tokens_per_j(&e, 4), Some(0.4));
        assert_eq!(per_token(&e, 0), PerToken::default());
    }
}
