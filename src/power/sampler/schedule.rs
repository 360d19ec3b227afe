//! A slot (one sensor in a sampler thread) and its schedule: period bounds learned
//! from completion brackets, re-bracketing and calibration cycles, fixed-rate ticks.

use std::collections::VecDeque;

use crate::power::sensor::Sensor;

pub(super) struct Slot {
    pub(super) sensor: Box<dyn Sensor>,
    pub(super) base: u16,
    pub(super) rails: u16,
    /// The chip's nominal conversion period (from its settings).
    pub(super) period_ns: u64,
    /// Hard bounds on the chip's period: the oscillator tolerance, narrowed by pairs
    /// of bracketed completions (see [`period_bounds`]); their middle is the period
    /// used ([`Slot::period_est_ns`]). Oscillators differ by chip (the INA219's
    /// 12-bit conversion is 532 µs typical, 586 µs max).
    pub(super) period_bounds_ns: (u64, u64),
    /// The last brackets' completion bounds (after, at or before), oldest first:
    /// a new bracket is measured against each (see [`period_bounds`]); those many
    /// periods back narrow the bounds most.
    pub(super) brackets: VecDeque<(u64, u64)>,
    pub(super) gated: bool,
    /// Some(backoff) while failed and retrying.
    pub(super) failed: Option<u64>,
    pub(super) next_wake_ns: u64,
    pub(super) next_health_ns: u64,
    pub(super) last_after_ns: Option<u64>,
    /// Estimated completion time of the last conversion read.
    pub(super) c_est: Option<u64>,
    /// (start, end) of the last poll that found nothing fresh, this cycle: the
    /// conversion completed after its start (a hard bound) and, as an estimate,
    /// between its end and the fresh poll's.
    pub(super) empty_poll: Option<(u64, u64)>,
    /// Width of the last completion bracket, ns.
    pub(super) bracket_ns: u64,
    /// Duration of the gating read (moving average), ns.
    pub(super) gate_read_ns: u64,
    pub(super) since_bracket: u32,
    /// Why the current poll comes when it does.
    pub(super) poll_kind: PollKind,
    /// How early a deliberate early poll comes: period >> this (3: an eighth; less
    /// after an early poll that still found the conversion done).
    pub(super) early_shift: u32,
    /// Calibration cycles still wanted: after a bracket, poll just before the
    /// earliest the next conversion can complete, so the next bracket is exactly one
    /// period on (see [`period_bounds`]). Set at start and when the chip turns out
    /// faster or slower than estimated.
    pub(super) calibrate: u8,
    /// The interval since the last fresh read included idle-rate time: its skipped
    /// conversions and its length are expected, not misses, gaps or jitter.
    pub(super) idle_interval: bool,
}

/// Why a gated chip's poll comes when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PollKind {
    /// When the next conversion should have completed, plus a margin.
    OnSchedule,
    /// Deliberately early, to re-bracket the phase.
    Early,
    /// Just before the earliest the next conversion can complete (see `calibrate`).
    Calibration,
}

impl Slot {
    /// The period the schedule uses: the middle of the period bounds (the nominal
    /// period until they narrow, and always for ungated sensors).
    pub(super) fn period_est_ns(&self) -> u64 {
        (self.period_bounds_ns.0 + self.period_bounds_ns.1) / 2
    }

    pub(super) fn reset_schedule(&mut self) {
        self.c_est = None;
        self.empty_poll = None;
        self.bracket_ns = 0;
        self.since_bracket = 0;
        self.brackets.clear();
        self.poll_kind = PollKind::OnSchedule;
        self.early_shift = 3;
    }
}

/// Bounds on a gated chip's period from two completion brackets `(after, before)`:
/// a conversion completed in `base`, a later one in `cur`, so `m` periods apart
/// with `m × period` in `[cur.0 - base.1, cur.1 - base.0]`. `m` is not counted
/// (a conversion may have gone unread between them) but worked out from the period
/// bounds already `known`; `None` when they allow more than one `m`. Consecutive
/// brackets always give one, and each narrowing lets brackets further apart count,
/// whose bounds are tighter still (the width divides by `m`).
pub(super) fn period_bounds(
    base: (u64, u64),
    cur: (u64, u64),
    known: (u64, u64),
) -> Option<(u64, u64)> {
    let d_min = cur.0.saturating_sub(base.1);
    let d_max = cur.1.checked_sub(base.0)?;
    let m_lo = d_min.div_ceil(known.1.max(1)).max(1);
    let m_hi = d_max / known.0.max(1);
    (m_lo == m_hi).then(|| (d_min / m_lo, d_max.div_ceil(m_lo)))
}

/// `known` narrowed by `sample`; `None` when they exclude each other (the
/// oscillator drifted with temperature: the caller starts over).
pub(super) fn narrow(known: (u64, u64), sample: (u64, u64)) -> Option<(u64, u64)> {
    let both = (known.0.max(sample.0), known.1.min(sample.1));
    (both.0 <= both.1).then_some(both)
}

/// The oscillator tolerance around `nominal_ns`: ±15 %, centred on it exactly (so
/// its middle, the estimate before any measurement, is the nominal period).
pub(super) fn tolerance(nominal_ns: u64) -> (u64, u64) {
    let lo = nominal_ns * MIN_PERIOD_NUM / MIN_PERIOD_DEN;
    (lo, 2 * nominal_ns - lo)
}

/// Cycles between deliberately early polls that re-bracket a gated chip's phase
/// (each costs an empty read and a wake-up), while its period is not known closely.
/// A poll that comes early by itself re-brackets at once, and a missed conversion
/// forces one.
pub(super) const REBRACKET_CYCLES: u32 = 16;

/// At most this many cycles between re-brackets once the period is known closely.
pub(super) const REBRACKET_CYCLES_MAX: u32 = 64;

/// Cycles until the next deliberate re-bracket: the phase estimate drifts by at most
/// half the period bounds' width per cycle, and may use half the poll's `margin_ns`.
pub(super) fn rebracket_cycles(margin_ns: u64, bounds_width_ns: u64) -> u32 {
    (margin_ns / bounds_width_ns.max(1))
        .clamp(u64::from(REBRACKET_CYCLES), u64::from(REBRACKET_CYCLES_MAX)) as u32
}

/// Calibration cycles (one period measured exactly each) at start; two more each
/// time the chip proves faster or slower than estimated.
pub(super) const CALIBRATION_CYCLES: u8 = 8;

/// Brackets kept to measure new ones against (about 16 periods apart each, once the
/// period is known: 8 span over a hundred periods).
pub(super) const BRACKETS_KEPT: usize = 8;

/// The shortest period a chip's oscillator allows, as a fraction of nominal (±15 %).
pub(super) const MIN_PERIOD_NUM: u64 = 17;
pub(super) const MIN_PERIOD_DEN: u64 = 20;

/// Fixed-rate schedule for ungated (hwmon) sensors: the next tick after `now`.
pub(super) fn next_fixed_rate(prev_wake: u64, period: u64, now: u64) -> u64 {
    let next = prev_wake + period;
    if next > now {
        next
    } else {
        now + period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_bounds_work_out_the_periods_between_brackets() {
        let nominal = 1_064_000;
        let tol = tolerance(nominal);
        assert_eq!(tol, (904_400, 1_223_600));
        // A chip 8 % slow (1.149 ms): completions at 1.1 ms and then 2 periods on,
        // bracketed 300 µs wide each.
        let base = (1_000_000, 1_300_000);
        let cur = (
            1_100_000 + 2 * 1_149_000 - 100_000,
            1_100_000 + 2 * 1_149_000 + 200_000,
        );
        let b = period_bounds(base, cur, tol).expect("2 periods, unambiguous");
        assert_eq!(b, (999_000, 1_299_000));
        // 3 periods on could be 4 as far as the tolerance knows.
        let three = (cur.0 + 1_149_000, cur.1 + 1_149_000);
        assert_eq!(period_bounds(base, three, tol), None);
        let known = narrow(tol, b).expect("overlap");
        assert!(known.0 <= 1_149_000 && 1_149_000 <= known.1);
        // 20 periods on: ambiguous with the tolerance alone, counted once narrowed.
        let far = (
            1_100_000 + 20 * 1_149_000 - 10_000,
            1_100_000 + 20 * 1_149_000 + 10_000,
        );
        assert_eq!(period_bounds(base, far, tol), None);
        let b = period_bounds(base, far, (1_140_000, 1_160_000)).expect("20 periods");
        assert!(
            b.0 <= 1_149_000 && 1_149_000 <= b.1 && b.1 - b.0 < 20_000,
            "{b:?}"
        );
        // Time going backwards gives nothing.
        assert_eq!(period_bounds((5_000, 6_000), (1_000, 2_000), tol), None);
    }

    #[test]
    fn narrowing_intersects_or_refuses() {
        assert_eq!(narrow((900, 1200), (1000, 1300)), Some((1000, 1200)));
        assert_eq!(narrow((900, 1000), (1100, 1300)), None);
    }

    #[test]
    fn rebracket_interval_follows_how_well_the_period_is_known() {
        // Bounds 30 µs wide: every 16 cycles; 2.5 µs: every 42; 0.5 µs: 64 at most.
        assert_eq!(rebracket_cycles(105_000, 30_000), 16);
        assert_eq!(rebracket_cycles(105_000, 2_500), 42);
        assert_eq!(rebracket_cycles(105_000, 500), 64);
        assert_eq!(rebracket_cycles(105_000, 0), 64);
    }

    #[test]
    fn fixed_rate_skips_missed_ticks() {
        assert_eq!(next_fixed_rate(1000, 100, 1050), 1100);
        assert_eq!(next_fixed_rate(1000, 100, 1500), 1600);
    }
}
