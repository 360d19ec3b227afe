//! From markers to phase windows: which spans of the monotonic clock were load,
//! prefill and decode, which belonged to warm-up repetitions, and how many tokens
//! the measured repetitions produced. Pure functions; `docs/energy.md` defines the
//! windows in words.

use serde::{Deserialize, Serialize};

use super::trace::{Marker, MarkerKind};

/// A half-open span `[start_ns, end_ns)` of the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Monotonic ns, inclusive.
    pub start_ns: u64,
    /// Monotonic ns, exclusive.
    pub end_ns: u64,
}

impl Window {
    /// Length in ns (0 when inverted).
    pub fn len_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// True when `t_ns` lies inside.
    pub fn contains(&self, t_ns: u64) -> bool {
        self.start_ns <= t_ns && t_ns < self.end_ns
    }
}

/// The label a point in time gets (CSV `phase` column, plot bands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseLabel {
    /// Before the job's first marker (the idle baseline window lies here).
    Idle,
    /// Model load.
    Load,
    /// Prompt evaluation of a measured repetition.
    Prefill,
    /// Token generation of a measured repetition.
    Decode,
    /// Prefill or decode of a warm-up repetition (excluded from energy figures).
    Warmup,
    /// Inside the job but in no phase (tokenisation, setup between phases).
    Other,
    /// After the job's last marker.
    After,
}

impl PhaseLabel {
    /// The label as written in CSV and plots.
    pub fn as_str(&self) -> &'static str {
        match self {
            PhaseLabel::Idle => "idle",
            PhaseLabel::Load => "load",
            PhaseLabel::Prefill => "prefill",
            PhaseLabel::Decode => "decode",
            PhaseLabel::Warmup => "warmup",
            PhaseLabel::Other => "other",
            PhaseLabel::After => "after",
        }
    }
}

/// Which phases lacked a closing marker (the job was cut short).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unclosed {
    /// Load had no `load_end`.
    pub load: bool,
    /// A measured prefill had no `prefill_end` or `done`.
    pub prefill: bool,
    /// A measured decode had no `done`.
    pub decode: bool,
}

/// The phases of one job, as the markers define them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhaseWindows {
    /// LoadStart → LoadEnd (none when the model came from the cache).
    pub load: Vec<Window>,
    /// PrefillStart → PrefillEnd of each measured repetition.
    pub prefill: Vec<Window>,
    /// PrefillEnd → Done of each measured repetition.
    pub decode: Vec<Window>,
    /// Prefill and decode spans of warm-up repetitions.
    pub warmup: Vec<Window>,
    /// First → last marker.
    pub job: Option<Window>,
    /// Start of the first measured repetition (its RepetitionStart, or its
    /// PrefillStart without one) → Done of the last: the MLPerf-style window.
    pub measured: Option<Window>,
    /// Prompt tokens summed over measured repetitions.
    pub prompt_tokens: u64,
    /// Generated tokens (Token markers) summed over measured repetitions.
    pub generated_tokens: u64,
    /// Measured repetitions that reached Done.
    pub repetitions: u32,
    /// Phases still open at the last marker (closed there, and flagged).
    pub unclosed: Unclosed,
}

impl PhaseWindows {
    /// Load ∪ prefill ∪ decode: the windows `energy_j.total` covers.
    pub fn all_measured(&self) -> Vec<Window> {
        let mut v: Vec<Window> = self
            .load
            .iter()
            .chain(&self.prefill)
            .chain(&self.decode)
            .copied()
            .collect();
        v.sort_by_key(|w| w.start_ns);
        merge(v)
    }

    /// The label of instant `t_ns`.
    pub fn label_at(&self, t_ns: u64) -> PhaseLabel {
        let Some(job) = self.job else {
            return PhaseLabel::Idle;
        };
        if t_ns < job.start_ns {
            return PhaseLabel::Idle;
        }
        let inside = |ws: &[Window]| ws.iter().any(|w| w.contains(t_ns));
        if inside(&self.load) {
            PhaseLabel::Load
        } else if inside(&self.prefill) {
            PhaseLabel::Prefill
        } else if inside(&self.decode) {
            PhaseLabel::Decode
        } else if inside(&self.warmup) {
            PhaseLabel::Warmup
        } else if t_ns > job.end_ns {
            PhaseLabel::After
        } else {
            PhaseLabel::Other
        }
    }
}

/// Merges sorted windows into a disjoint union (touching windows join).
pub fn merge(sorted: Vec<Window>) -> Vec<Window> {
    let mut out: Vec<Window> = Vec::with_capacity(sorted.len());
    for w in sorted {
        if w.len_ns() == 0 {
            continue;
        }
        match out.last_mut() {
            Some(last) if w.start_ns <= last.end_ns => last.end_ns = last.end_ns.max(w.end_ns),
            _ => out.push(w),
        }
    }
    out
}

/// Derives the phase windows from markers (any order; sorted stably by time here,
/// so markers sharing a timestamp keep their emission order).
pub fn phase_windows(markers: &[Marker]) -> PhaseWindows {
    let mut sorted: Vec<Marker> = markers.to_vec();
    sorted.sort_by_key(|m| m.t_ns);
    let mut pw = PhaseWindows::default();
    let (Some(first), Some(last)) = (sorted.first(), sorted.last()) else {
        return pw;
    };
    pw.job = Some(Window {
        start_ns: first.t_ns,
        end_ns: last.t_ns,
    });
    let last_t = last.t_ns;

    let mut load_open: Option<u64> = None;
    let mut prefill_open: Option<u64> = None;
    let mut decode_open: Option<u64> = None;
    let mut rep_start: Option<u64> = None;
    let mut warmup = false;
    let mut measured_start: Option<u64> = None;
    let mut measured_end: Option<u64> = None;

    for m in &sorted {
        let t = m.t_ns;
        match m.kind {
            MarkerKind::LoadStart => load_open = Some(t),
            MarkerKind::LoadEnd { cached } => {
                // The engine brackets its cache lookup with load markers too; a
                // cached model had no load, so the lookup's instant is no phase.
                if let (Some(s), false) = (load_open.take(), cached) {
                    pw.load.push(Window {
                        start_ns: s,
                        end_ns: t,
                    });
                }
            }
            MarkerKind::RepetitionStart { warmup: w, .. } => {
                warmup = w;
                rep_start = Some(t);
            }
            MarkerKind::PrefillStart { prompt_tokens } => {
                prefill_open = Some(t);
                if !warmup {
                    pw.prompt_tokens += u64::from(prompt_tokens);
                    measured_start.get_or_insert(rep_start.unwrap_or(t));
                }
            }
            MarkerKind::PrefillEnd => {
                if let Some(s) = prefill_open.take() {
                    let w = Window {
                        start_ns: s,
                        end_ns: t,
                    };
                    if warmup {
                        pw.warmup.push(w);
                    } else {
                        pw.prefill.push(w);
                    }
                }
                decode_open = Some(t);
            }
            MarkerKind::Token { .. } => {
                if !warmup {
                    pw.generated_tokens += 1;
                }
            }
            MarkerKind::Done { .. } => {
                // A Done without PrefillEnd (failure during prefill) closes the prefill.
                let spans = [prefill_open.take(), decode_open.take()];
                let list = if warmup {
                    &mut pw.warmup
                } else {
                    pw.repetitions += 1;
                    measured_end = Some(t);
                    if spans[0].is_some() {
                        &mut pw.prefill
                    } else {
                        &mut pw.decode
                    }
                };
                if let Some(s) = spans[0].or(spans[1]) {
                    list.push(Window {
                        start_ns: s,
                        end_ns: t,
                    });
                }
                warmup = false;
                rep_start = None;
            }
        }
    }

    // Whatever is still open ends at the last marker and is flagged.
    let close = |open: Option<u64>, list: &mut Vec<Window>| -> bool {
        match open {
            Some(s) => {
                list.push(Window {
                    start_ns: s,
                    end_ns: last_t,
                });
                true
            }
            None => false,
        }
    };
    pw.unclosed.load = close(load_open, &mut pw.load);
    if warmup {
        close(prefill_open, &mut pw.warmup);
        close(decode_open, &mut pw.warmup);
    } else {
        pw.unclosed.prefill = close(prefill_open, &mut pw.prefill);
        pw.unclosed.decode = close(decode_open, &mut pw.decode);
        if pw.unclosed.prefill || pw.unclosed.decode {
            measured_end = Some(last_t);
        }
    }
    if let (Some(s), Some(e)) = (measured_start, measured_end) {
        pw.measured = Some(Window {
            start_ns: s,
            end_ns: e,
        });
    }
    for list in [
        &mut pw.load,
        &mut pw.prefill,
        &mut pw.decode,
        &mut pw.warmup,
    ] {
        list.sort_by_key(|w| w.start_ns);
        *list = merge(std::mem::take(list));
    }
    pw
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::infer::events::FinishReason;

    pub(crate) fn mk(t_ns: u64, kind: MarkerKind) -> Marker {
        Marker { t_ns, kind }
    }

    fn w(start_ns: u64, end_ns: u64) -> Window {
        Window { start_ns, end_ns }
    }

    /// load 0–100, warm-up rep 100–200, measured reps 200–400 and 400–600.
    pub(crate) fn two_reps_with_warmup() -> Vec<Marker> {
        use MarkerKind::*;
        let done = Done {
            finish_reason: FinishReason::Length,
        };
        vec![
            mk(0, LoadStart),
            mk(100, LoadEnd { cached: false }),
            mk(
                100,
                RepetitionStart {
                    index: 0,
                    warmup: true,
                },
            ),
            mk(110, PrefillStart { prompt_tokens: 8 }),
            mk(130, PrefillEnd),
            mk(150, Token { index: 0 }),
            mk(200, done),
            mk(
                200,
                RepetitionStart {
                    index: 1,
                    warmup: false,
                },
            ),
            mk(210, PrefillStart { prompt_tokens: 8 }),
            mk(250, PrefillEnd),
            mk(300, Token { index: 0 }),
            mk(350, Token { index: 1 }),
            mk(400, done),
            mk(
                400,
                RepetitionStart {
                    index: 2,
                    warmup: false,
                },
            ),
            mk(410, PrefillStart { prompt_tokens: 8 }),
            mk(450, PrefillEnd),
            mk(500, Token { index: 0 }),
            mk(550, Token { index: 1 }),
            mk(600, done),
        ]
    }

    #[test]
    fn repetitions_and_warmup() {
        let pw = phase_windows(&two_reps_with_warmup());
        assert_eq!(pw.load, vec![w(0, 100)]);
        assert_eq!(pw.prefill, vec![w(210, 250), w(410, 450)]);
        assert_eq!(pw.decode, vec![w(250, 400), w(450, 600)]);
        assert_eq!(pw.warmup, vec![w(110, 200)]);
        assert_eq!(pw.job, Some(w(0, 600)));
        assert_eq!(pw.measured, Some(w(200, 600)));
        assert_eq!(pw.prompt_tokens, 16);
        assert_eq!(pw.generated_tokens, 4);
        assert_eq!(pw.repetitions, 2);
        assert_eq!(pw.unclosed, Unclosed::default());
        assert_eq!(pw.label_at(50), PhaseLabel::Load);
        assert_eq!(pw.label_at(105), PhaseLabel::Other);
        assert_eq!(pw.label_at(120), PhaseLabel::Warmup);
        assert_eq!(pw.label_at(220), PhaseLabel::Prefill);
        assert_eq!(pw.label_at(250), PhaseLabel::Decode);
        assert_eq!(pw.label_at(601), PhaseLabel::After);
    }

    #[test]
    fn cut_short_job_is_flagged() {
        use MarkerKind::*;
        let pw = phase_windows(&[
            mk(10, PrefillStart { prompt_tokens: 3 }),
            mk(20, PrefillEnd),
            mk(30, Token { index: 0 }),
        ]);
        assert_eq!(pw.decode, vec![w(20, 30)]);
        assert!(pw.unclosed.decode);
        assert!(!pw.unclosed.prefill);
        assert_eq!(pw.measured, Some(w(10, 30)));
        assert!(pw.load.is_empty());
    }

    #[test]
    fn cached_model_has_no_load_window() {
        use MarkerKind::*;
        let pw = phase_windows(&[
            mk(10, LoadStart),
            mk(12, LoadEnd { cached: true }),
            mk(20, PrefillStart { prompt_tokens: 3 }),
            mk(30, PrefillEnd),
            mk(
                40,
                Done {
                    finish_reason: FinishReason::Eog,
                },
            ),
        ]);
        assert!(pw.load.is_empty());
        assert!(!pw.unclosed.load);
        assert_eq!(pw.job, Some(w(10, 40)));
        assert_eq!(pw.label_at(11), PhaseLabel::Other);
    }

    #[test]
    fn no_markers_no_windows() {
        let pw = phase_windows(&[]);
        assert_eq!(pw.job, None);
        assert_eq!(pw.label_at(5), PhaseLabel::Idle);
    }

    #[test]
    fn merge_joins_overlaps() {
        assert_eq!(
            merge(vec![w(0, 10), w(5, 20), w(20, 30), w(40, 50), w(60, 60)]),
            vec![w(0, 30), w(40, 50)]
        );
    }
}
