//! The one place where a trace meets the live sampler: the job's window (idle
//! baseline included), from the job's [`Recorded`] samples or else straight out of
//! the sampler's rings, with its gaps and stats, and the thermal recorder's readings. Everything downstream (energy, store, export) works
//! on the plain `Trace` and never sees the sampler.

use crate::clock::ClockAnchor;
use crate::power::{Recorded, SamplerHandle};

use super::energy::EnergyOptions;
use super::thermal::ThermalRecorder;
use super::trace::{Gap, Marker, Trace};

/// What a job contributes to its trace.
#[derive(Debug, Clone)]
pub struct JobCapture<'a> {
    /// The job id (the store's key).
    pub job_id: &'a str,
    /// Model name for titles and reports.
    pub model: Option<&'a str>,
    /// The engine's markers (a `MarkerLog`'s contents).
    pub markers: &'a [Marker],
    /// An anchor read at the job's start.
    pub anchor: ClockAnchor,
}

/// Builds the job's trace from the sampler (and the thermal recorder, when one
/// runs). Call it once the job is done and `opts.max_gap_ns` has passed, so the
/// samples after the last marker have been read. With `recorded` (a
/// [`Recorder`](crate::power::Recorder) that ran through the job) the samples come from
/// it and a job of any length is whole; without, from what the rings still hold.
pub fn capture(
    job: &JobCapture<'_>,
    sampler: &SamplerHandle,
    recorded: Option<Recorded>,
    thermal: Option<&ThermalRecorder>,
    opts: &EnergyOptions,
) -> Trace {
    let mut trace = Trace::new(job.job_id, sampler.rails(), job.anchor);
    trace.simulated = trace.simulated || sampler.simulated();
    trace.model = job.model.map(str::to_string);
    trace.markers = job.markers.to_vec();
    let (Some(start), Some(end)) = (trace.job_start_ns(), trace.job_end_ns()) else {
        return trace;
    };
    let w = opts.capture_window(start, end);
    let in_window = |t: u64| w.start_ns <= t && t <= w.end_ns;
    let mut lost = Vec::new();
    match recorded {
        Some(r) => {
            trace.extend_samples(r.samples.into_iter().filter(|s| in_window(s.t_ns())));
            lost = r.lost;
        }
        None => trace.extend_samples(sampler.window(w.start_ns, w.end_ns)),
    }
    trace.gaps = sampler
        .gaps(w.start_ns, w.end_ns)
        .into_iter()
        .chain(
            lost.into_iter()
                .filter(|g| g.end_ns >= w.start_ns && g.start_ns <= w.end_ns),
        )
        .map(|g| Gap {
            rail: g.rail,
            start_ns: g.start_ns,
            end_ns: g.end_ns,
            reason: g.reason,
        })
        .collect();
    // The sampler keeps counters since its start, not per window: these are the
    // totals at the job's end (rates, errors, overflows), which still say whether
    // the sampler kept up.
    trace.sampler_stats = serde_json::to_value(sampler.stats()).unwrap_or_default();
    trace.thermal = thermal.map(|t| t.window(w.start_ns, w.end_ns));
    trace
}
