//! The energy summary of a job: per-rail and job-level figures, per-token figures
//! and the MLPerf-style figure, from a trace and the integration primitives in
//! `energy`. Every field is defined in `docs/energy.md`.

use serde::{Deserialize, Serialize};

use super::energy::{
    integrate_windows, mean_power_w, rail_points, uncovered_spans, EnergyOptions, DEFINITIONS,
    S_PER_NS, W_PER_UW,
};
use super::phases::{merge, phase_windows, PhaseWindows, Window};
use super::thermal::{summarize_thermal, ThermalSummary};
use super::trace::Trace;

/// One value per phase (J, W·s, s or a count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseValues {
    /// Model load.
    pub load: f64,
    /// Prompt evaluation (measured repetitions).
    pub prefill: f64,
    /// Token generation (measured repetitions).
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
    /// Load.
    pub load: bool,
    /// Prefill.
    pub prefill: bool,
    /// Decode.
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
    /// Prompt tokens.
    pub prompt: u64,
    /// Generated tokens (`token` markers).
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
    /// Start of the first measured repetition, monotonic ns.
    pub begin_ns: u64,
    /// `done` of the last measured repetition, monotonic ns.
    pub end_ns: u64,
    /// end − begin, s.
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
        n += merge(spans).len() as u64;
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

fn fmt_opt(v: Option<f64>, unit: &str, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.decimals$} {unit}"))
}

impl EnergySummary {
    /// A short human-readable block (for `generate --trace`), naming the
    /// definitions and saying SIMULATED when it is.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let sim = if self.simulated { " — SIMULATED" } else { "" };
        out.push_str(&format!(
            "energy ({}, basis {}){sim}\n",
            self.definitions, self.basis
        ));
        let e = &self.energy_j;
        let d = &self.duration_s;
        out.push_str(&format!(
            "  load     {:>9.4} J  {:>8.3} s\n  prefill  {:>9.4} J  {:>8.3} s\n  decode   {:>9.4} J  {:>8.3} s\n  total    {:>9.4} J  {:>8.3} s\n",
            e.load, d.load, e.prefill, d.prefill, e.decode, d.decode, e.total, d.total
        ));
        out.push_str(&format!(
            "  idle {}  avg {}  peak {}\n",
            fmt_opt(self.idle_w, "W", 3),
            fmt_opt(self.avg_w, "W", 3),
            fmt_opt(self.peak_w, "W", 3)
        ));
        out.push_str(&format!(
            "  J/token decode {}  e2e {}  tokens/J {}  (active: {} / {})\n",
            fmt_opt(self.j_per_token.decode, "J", 4),
            fmt_opt(self.j_per_token.e2e, "J", 4),
            fmt_opt(self.tokens_per_j, "", 3).trim_end(),
            fmt_opt(self.active_j_per_token.decode, "J", 4),
            fmt_opt(self.active_j_per_token.e2e, "J", 4),
        ));
        if let Some(m) = &self.mlperf {
            out.push_str(&format!(
                "  MLPerf-style: {:.3} W × {:.3} s = {:.4} J\n",
                m.avg_w, m.duration_s, m.energy_j
            ));
        }
        out.push_str(&format!(
            "  {} samples at {}, {} gaps",
            self.samples,
            fmt_opt(self.sample_rate_hz, "Hz", 0),
            self.gaps
        ));
        if self.incomplete.total {
            out.push_str(" — INCOMPLETE (gaps or missing markers)");
        }
        out.push('\n');
        if let Some(t) = &self.thermal {
            if t.throttled == Some(true) {
                out.push_str(&format!(
                    "  THROTTLED: {}\n",
                    t.throttle_reason.as_deref().unwrap_or("yes")
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_token_figures() {
        let e = PhaseValues::new(5.0, 2.0, 8.0);
        let pt = per_token(&e, 4);
        assert_eq!(pt.decode, Some(2.0));
        assert_eq!(pt.e2e, Some(2.5));
        assert_eq!(tokens_per_j(&e, 4), Some(0.4));
        assert_eq!(per_token(&e, 0), PerToken::default());
    }

    #[test]
    fn text_names_definitions_and_simulation() {
        let t = Trace::new(
            "j",
            vec![],
            crate::clock::ClockAnchor {
                monotonic_ns: 0,
                unix_ns: 0,
            },
        );
        let mut s = summarize(&t, &EnergyOptions::default());
        s.simulated = true;
        let text = s.to_text();
        assert!(
            text.starts_with("energy (edgewatt-energy-v1, basis sum())"),
            "{text}"
        );
        assert!(text.contains("SIMULATED"));
        assert!(text.contains("INCOMPLETE"));
        assert!(text.contains("J/token decode -"));
    }
}
