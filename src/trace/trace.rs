//! The trace of one job: the sampler's samples and the engine's markers on one clock
//! (CLOCK_MONOTONIC ns), with the sensor description and one clock anchor pair.
//!
//! A trace knows nothing of where samples or events came from: the daemon (or the
//! CLI) copies them in as plain data, which is what keeps the energy math testable
//! without a sampler or a model.

use serde::{Deserialize, Serialize};

use crate::clock::ClockAnchor;
use crate::infer::events::{EngineEvent, EventObserver, FinishReason};
use crate::power::{RailInfo, Sample};

use super::thermal::ThermalSeries;

/// What a marker marks. The engine's events without their payload text (token
/// pieces stay in the result, not in the trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MarkerKind {
    /// Model load begins.
    LoadStart,
    /// Model load finished; `cached` when no load happened.
    LoadEnd { cached: bool },
    /// A repetition begins; `warmup` repetitions are excluded from energy figures.
    RepetitionStart { index: u32, warmup: bool },
    /// Prompt evaluation begins.
    PrefillStart { prompt_tokens: u32 },
    /// Prompt evaluation finished.
    PrefillEnd,
    /// One generated token (0-based index within its repetition).
    Token { index: u32 },
    /// A repetition's generation ended.
    Done { finish_reason: FinishReason },
}

/// One engine event on the trace's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// CLOCK_MONOTONIC ns, the same clock as the samples.
    pub t_ns: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: MarkerKind,
}

impl From<&EngineEvent> for Marker {
    fn from(event: &EngineEvent) -> Self {
        let kind = match event {
            EngineEvent::LoadStart { .. } => MarkerKind::LoadStart,
            EngineEvent::LoadEnd { cached, .. } => MarkerKind::LoadEnd { cached: *cached },
            EngineEvent::RepetitionStart { index, warmup, .. } => MarkerKind::RepetitionStart {
                index: *index,
                warmup: *warmup,
            },
            EngineEvent::PrefillStart { prompt_tokens, .. } => MarkerKind::PrefillStart {
                prompt_tokens: *prompt_tokens,
            },
            EngineEvent::PrefillEnd { .. } => MarkerKind::PrefillEnd,
            EngineEvent::Token { index, .. } => MarkerKind::Token { index: *index },
            EngineEvent::Done { finish_reason, .. } => MarkerKind::Done {
                finish_reason: *finish_reason,
            },
        };
        Marker {
            t_ns: event.t_ns(),
            kind,
        }
    }
}

/// Records the engine's events as markers; plug it into the engine with `Tee`.
#[derive(Debug, Default, Clone)]
pub struct MarkerLog {
    /// Markers in emission order.
    pub markers: Vec<Marker>,
}

impl EventObserver for MarkerLog {
    fn on_event(&mut self, event: &EngineEvent) {
        self.markers.push(Marker::from(event));
    }
}

/// A period during which a rail produced no samples, as the sampler reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// Index into `Trace::rails`.
    pub rail: u16,
    /// Monotonic ns of the last good sample before the gap.
    pub start_ns: u64,
    /// Monotonic ns of the first good sample after the gap.
    pub end_ns: u64,
    /// Why (bus error, overflow, …), as the sampler said it.
    pub reason: String,
}

/// Everything recorded for one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// The job this trace belongs to (the store's key).
    pub job_id: String,
    /// Model name, for plot titles and reports; `None` when unknown.
    #[serde(default)]
    pub model: Option<String>,
    /// The measured rails; `Sample::rail` and `Gap::rail` index this list.
    pub rails: Vec<RailInfo>,
    /// True when any rail's readings come from a simulator: every figure derived
    /// from this trace must say so.
    pub simulated: bool,
    /// The (monotonic, unix) pair that places this trace's monotonic ns on the calendar.
    pub anchor: ClockAnchor,
    /// Samples of all rails, sorted by `t_ns()`. Includes the samples of the idle
    /// window before the job (the baseline), so they are stored and plotted too.
    pub samples: Vec<Sample>,
    /// The engine's markers, in emission order.
    pub markers: Vec<Marker>,
    /// The sampler's statistics for this window (rate, errors, …), as it serialised them.
    #[serde(default)]
    pub sampler_stats: serde_json::Value,
    /// Gaps the sampler reported in this window.
    #[serde(default)]
    pub gaps: Vec<Gap>,
    /// CPU temperature / frequency / throttle readings, when a recorder ran.
    #[serde(default)]
    pub thermal: Option<ThermalSeries>,
}

impl Trace {
    /// A trace with the given sensor description and no data yet; `simulated` is
    /// derived from the rails (any simulated rail makes the trace simulated).
    pub fn new(job_id: impl Into<String>, rails: Vec<RailInfo>, anchor: ClockAnchor) -> Self {
        let simulated = rails.iter().any(|r| r.simulated);
        Trace {
            job_id: job_id.into(),
            model: None,
            rails,
            simulated,
            anchor,
            samples: Vec::new(),
            markers: Vec::new(),
            sampler_stats: serde_json::Value::Null,
            gaps: Vec::new(),
            thermal: None,
        }
    }

    /// Adds samples (idle window and job window may come in separate calls) and
    /// keeps them sorted by their midpoint time.
    pub fn extend_samples(&mut self, samples: impl IntoIterator<Item = Sample>) {
        self.samples.extend(samples);
        self.samples.sort_by_key(|s| (s.t_ns(), s.rail));
        self.samples.dedup();
    }

    /// Adds engine events as markers.
    pub fn extend_events<'a>(&mut self, events: impl IntoIterator<Item = &'a EngineEvent>) {
        self.markers.extend(events.into_iter().map(Marker::from));
    }

    /// First marker time: where the job begins (`None` without markers).
    pub fn job_start_ns(&self) -> Option<u64> {
        self.markers.iter().map(|m| m.t_ns).min()
    }

    /// Last marker time: where the job ends.
    pub fn job_end_ns(&self) -> Option<u64> {
        self.markers.iter().map(|m| m.t_ns).max()
    }

    /// Name of rail `index`, or `rail<index>` when the index is unknown.
    pub fn rail_name(&self, index: u16) -> String {
        self.rails
            .get(usize::from(index))
            .map(|r| r.name.clone())
            .unwrap_or_else(|| format!("rail{index}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rail(name: &str, simulated: bool) -> RailInfo {
        RailInfo {
            name: name.into(),
            total: true,
            source: "sim:ina219".into(),
            simulated,
        }
    }

    #[test]
    fn simulated_follows_rails() {
        let a = ClockAnchor {
            monotonic_ns: 0,
            unix_ns: 0,
        };
        assert!(Trace::new("j", vec![rail("VDD_IN", true)], a).simulated);
        assert!(!Trace::new("j", vec![rail("VDD_IN", false)], a).simulated);
    }

    #[test]
    fn events_become_markers_without_text() {
        let mut log = MarkerLog::default();
        log.on_event(&EngineEvent::Token {
            t_ns: 5,
            index: 2,
            id: 42,
            piece: "hello".into(),
        });
        assert_eq!(
            log.markers,
            vec![Marker {
                t_ns: 5,
                kind: MarkerKind::Token { index: 2 }
            }]
        );
        let json = serde_json::to_string(&log.markers[0]).expect("serialize");
        assert_eq!(json, r#"{"t_ns":5,"kind":"token","index":2}"#);
        let back: Marker = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, log.markers[0]);
    }

    #[test]
    fn samples_are_kept_sorted() {
        let s = |t: u64, rail: u16| Sample {
            t_before_ns: t,
            t_after_ns: t,
            rail,
            bus_mv: 5000,
            current_ua: 1,
            power_uw: 5,
        };
        let mut tr = Trace::new(
            "j",
            vec![],
            ClockAnchor {
                monotonic_ns: 0,
                unix_ns: 0,
            },
        );
        tr.extend_samples([s(30, 0), s(10, 0)]);
        tr.extend_samples([s(20, 1), s(10, 0)]);
        let ts: Vec<u64> = tr.samples.iter().map(|s| s.t_ns()).collect();
        assert_eq!(ts, vec![10, 20, 30]);
    }
}
