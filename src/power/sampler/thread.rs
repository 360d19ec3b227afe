//! The sampler thread: sleeps (cancellable, parked while idle), services the slot due
//! next (poll, gate, learn, record), and handles failures with backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::ring::{lock, push_gap, ThreadShared};
use super::schedule::*;
use super::{Gap, SamplerOptions};
use crate::clock::monotonic_ns;
use crate::power::sensor::{ErrorKind, SensorError};
use crate::power::timing::{
    pin_to_cpu, precise_sleep_until_ns, set_precise_timer_slack, set_realtime_priority,
    thread_cpu_ns,
};
use crate::power::Sample;

/// Longest parked slice of an idle sleep, ns: bounds how late a parent-token cancel
/// (without `shutdown`, which unparks) is seen.
pub(super) const IDLE_SLICE_NS: u64 = 50_000_000;

/// Why a sleep ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Woke {
    /// The deadline came.
    Deadline,
    /// `wake_if_active` was set: the sampler switched to the full rate.
    Activated,
    /// The sampler is shutting down.
    Cancelled,
}

/// How often a sampler thread looks at the parent cancellation token, ns.
pub(super) const TOKEN_CHECK_NS: u64 = 5_000_000;

/// When a sampler thread stops: at once when `shutdown` raised `stopping` (one atomic
/// load before every sleep), or within [`TOKEN_CHECK_NS`] of the parent token being
/// cancelled: checking the token takes its lock, which is not worth paying once per
/// sample for a stop that may come a few ms late.
pub(super) struct StopCheck {
    pub(super) stopping: Arc<AtomicBool>,
    pub(super) token: CancellationToken,
    pub(super) next_token_check_ns: std::cell::Cell<u64>,
}

impl StopCheck {
    pub(super) fn new(stopping: Arc<AtomicBool>, token: CancellationToken) -> Self {
        StopCheck {
            stopping,
            token,
            next_token_check_ns: std::cell::Cell::new(0),
        }
    }

    pub(super) fn should_stop(&self, now_ns: u64) -> bool {
        if self.stopping.load(Ordering::Relaxed) {
            return true;
        }
        if now_ns < self.next_token_check_ns.get() {
            return false;
        }
        self.next_token_check_ns.set(now_ns + TOKEN_CHECK_NS);
        self.token.is_cancelled()
    }
}

/// Sleeps until `deadline_ns` in slices of at most 10 ms, ending early on a stop or,
/// when given, as soon as `wake_if_active` is set: then the thread parks in slices of
/// up to [`IDLE_SLICE_NS`] and `set_active(true)` / `shutdown` unpark it.
pub(super) fn sleep_until_cancellable(
    deadline_ns: u64,
    stop: &StopCheck,
    wake_if_active: Option<&AtomicBool>,
) -> Woke {
    loop {
        let now = monotonic_ns();
        if stop.should_stop(now) {
            return Woke::Cancelled;
        }
        if wake_if_active.is_some_and(|a| a.load(Ordering::Relaxed)) {
            return Woke::Activated;
        }
        if now >= deadline_ns {
            return Woke::Deadline;
        }
        if wake_if_active.is_some() {
            // Idle: precision does not matter, wake-ups do. A spurious or stale unpark
            // just goes round the loop again.
            let ns = (deadline_ns - now).min(IDLE_SLICE_NS);
            std::thread::park_timeout(std::time::Duration::from_nanos(ns));
        } else {
            precise_sleep_until_ns(deadline_ns.min(now + 10_000_000));
        }
    }
}

pub(super) fn run_thread(
    shared: Arc<ThreadShared>,
    mut slots: Vec<Slot>,
    opts: SamplerOptions,
    stop: StopCheck,
    active: Arc<AtomicBool>,
) {
    set_precise_timer_slack();
    if let Some(p) = opts.realtime_priority {
        if let Err(e) = set_realtime_priority(p) {
            tracing::warn!(priority = p, error = %e, "sampler: real-time priority refused; running at normal priority");
        }
    }
    if let Some(cpu) = opts.cpu_affinity {
        if let Err(e) = pin_to_cpu(cpu) {
            tracing::warn!(cpu, error = %e, "sampler: cannot pin to cpu");
        }
    }
    let mut buf = Vec::with_capacity(8);
    let idle_mode = opts.idle_period_ns() > 0;
    // CPU time is a syscall; publish it every 64 iterations (or 100 ms, for the slow
    // idle rate), not every one.
    let mut until_cpu_update: u32 = 64;
    let mut next_cpu_update_ns = monotonic_ns() + 100_000_000;
    while !slots.is_empty() {
        let Some(i) = (0..slots.len()).min_by_key(|&i| slots[i].next_wake_ns) else {
            break;
        };
        // Asleep on an idle deadline, wake as soon as the full rate is wanted.
        let wake_if_active = (idle_mode && !active.load(Ordering::Relaxed)).then_some(&*active);
        match sleep_until_cancellable(slots[i].next_wake_ns, &stop, wake_if_active) {
            Woke::Cancelled => break,
            Woke::Deadline => {}
            Woke::Activated => {
                // Every healthy slot is due now, not at the end of its idle period.
                let now = monotonic_ns();
                for s in slots.iter_mut().filter(|s| s.failed.is_none()) {
                    s.next_wake_ns = s.next_wake_ns.min(now);
                }
            }
        }
        let is_active = active.load(Ordering::Relaxed);
        service(&shared, &mut slots[i], &opts, &mut buf, is_active);
        until_cpu_update -= 1;
        let now = monotonic_ns();
        if until_cpu_update == 0 || now >= next_cpu_update_ns {
            until_cpu_update = 64;
            next_cpu_update_ns = now + 100_000_000;
            shared.cpu_ns.store(thread_cpu_ns(), Ordering::Relaxed);
        }
    }
    shared.cpu_ns.store(thread_cpu_ns(), Ordering::Relaxed);
    shared.stopped_ns.store(monotonic_ns(), Ordering::Relaxed);
}

pub(super) fn service(
    shared: &ThreadShared,
    slot: &mut Slot,
    opts: &SamplerOptions,
    buf: &mut Vec<Sample>,
    active: bool,
) {
    let now = monotonic_ns();
    // Idle rate only slows a rail down; one already slower than it is unaffected.
    let idle_period = opts.idle_period_ns();
    let slow = !active && idle_period > slot.period_ns;
    if slow {
        slot.idle_interval = true;
    }
    if let Some(backoff) = slot.failed {
        match slot.sensor.init() {
            Ok(()) => {
                slot.failed = None;
                slot.reset_schedule();
                slot.next_wake_ns = monotonic_ns();
                slot.next_health_ns = now + opts.health_check_ns;
            }
            Err(e) => {
                record_error(shared, slot, &e, now);
                let next = (backoff * 2).clamp(1_000_000, opts.max_backoff_ns.max(1_000_000));
                slot.failed = Some(next);
                slot.next_wake_ns = monotonic_ns() + next;
            }
        }
        return;
    }
    if now >= slot.next_health_ns {
        slot.next_health_ns = now + opts.health_check_ns;
        if let Err(e) = slot.sensor.health_check() {
            fail(shared, slot, e, opts);
            return;
        }
    }
    buf.clear();
    let r = match slot.sensor.poll(buf) {
        Ok(r) => r,
        Err(e) => {
            fail(shared, slot, e, opts);
            return;
        }
    };
    let gate_read = r.gate_ns.saturating_sub(r.start_ns);
    slot.gate_read_ns = if slot.gate_read_ns == 0 {
        gate_read
    } else {
        (slot.gate_read_ns * 7 + gate_read) / 8
    };
    let period = slot.period_est_ns();
    if !r.fresh {
        {
            let mut st = lock(&shared.state);
            for rail in slot.base..slot.base + slot.rails {
                if let Some(c) = st.rail_mut(rail) {
                    c.duplicates_avoided += 1;
                }
            }
        }
        if slot.gated {
            slot.empty_poll = Some((r.start_ns, r.gate_ns));
            // Poll again soon: a sixteenth of a period, 10 µs … 1 ms.
            slot.next_wake_ns = r.gate_ns + (period / 16).clamp(10_000, 1_000_000);
        } else {
            slot.next_wake_ns = next_fixed_rate(slot.next_wake_ns, period, monotonic_ns());
        }
        return;
    }

    // This interval spanned idle-rate time: the conversions not read were skipped on
    // purpose, and the phase estimate is stale (drift over many periods); count the
    // skips, then restart the estimate as at start-up.
    let idle_interval = std::mem::replace(&mut slot.idle_interval, slow);
    let mut idle_skipped = 0;
    if idle_interval && slot.gated {
        if let Some(prev) = slot.c_est {
            let n = (r.gate_ns.saturating_sub(prev) as f64 / period as f64).round() as u64;
            idle_skipped = n.saturating_sub(1);
        }
        slot.reset_schedule();
    }

    let mut missed = 0;
    if slot.gated {
        let empty_poll = slot.empty_poll.take();
        let bracketed = empty_poll.is_some();
        let c_est = match (empty_poll, slot.c_est) {
            (Some((_, p)), _) => {
                slot.bracket_ns = r.gate_ns.saturating_sub(p);
                p + slot.bracket_ns / 2
            }
            (None, Some(prev)) => {
                let n = ((r.gate_ns.saturating_sub(prev)) as f64 / period as f64)
                    .round()
                    .max(1.0) as u64;
                (prev + n * period).min(r.gate_ns)
            }
            (None, None) => r.gate_ns,
        };
        if let Some(prev) = slot.c_est {
            let n = (c_est.saturating_sub(prev) as f64 / period as f64).round() as u64;
            missed = n.saturating_sub(1);
        }
        slot.c_est = Some(c_est);
        // Learn the chip's own period (a slow chip otherwise costs an empty poll and
        // a wake-up per conversion; a fast one, misses) from hard bounds, so which
        // pairs happen to be measured cannot bias it.
        let poll_kind = std::mem::replace(&mut slot.poll_kind, PollKind::OnSchedule);
        if let Some((after, _)) = empty_poll {
            let cur = (after, r.gate_ns);
            for i in 0..slot.brackets.len() {
                let Some(b) = period_bounds(slot.brackets[i], cur, slot.period_bounds_ns) else {
                    continue;
                };
                match narrow(slot.period_bounds_ns, b) {
                    Some(n) => slot.period_bounds_ns = n,
                    None => {
                        // The chip's period moved: start over from its tolerance.
                        slot.period_bounds_ns = tolerance(slot.period_ns);
                        slot.brackets.clear();
                        slot.calibrate = CALIBRATION_CYCLES;
                        break;
                    }
                }
            }
            if slot.brackets.len() == BRACKETS_KEPT {
                slot.brackets.pop_front();
            }
            slot.brackets.push_back(cur);
        }
        let margin = (slot.bracket_ns / 2 + 10_000).clamp(10_000, (period / 4).max(10_000));
        if bracketed {
            slot.early_shift = 3;
            if poll_kind == PollKind::OnSchedule {
                // A poll on the usual schedule came early: the chip runs behind the
                // estimate (or a wake-up came early). Measure it.
                slot.calibrate = slot.calibrate.max(2);
            }
        } else if poll_kind == PollKind::Early {
            // The deliberate early poll found the conversion already done: the chip
            // runs ahead of the estimate. Poll earlier next cycle, and measure it.
            slot.early_shift = slot.early_shift.saturating_sub(1).max(1);
            slot.since_bracket = REBRACKET_CYCLES;
            slot.calibrate = slot.calibrate.max(2);
        }
        if missed > 0 {
            // The chip may be faster than estimated: re-bracket now, and measure it.
            slot.since_bracket = REBRACKET_CYCLES;
            slot.calibrate = slot.calibrate.max(2);
        }
        let target = if bracketed && slot.calibrate > 0 {
            // Just before the earliest the next conversion can complete (the period's
            // lower bound after this bracket's start): that poll finds nothing, so the
            // next bracket is exactly one period on.
            slot.calibrate -= 1;
            slot.since_bracket = 0;
            slot.poll_kind = PollKind::Calibration;
            let lower = c_est.saturating_sub(slot.bracket_ns / 2);
            lower + slot.period_bounds_ns.0
        } else if bracketed {
            slot.since_bracket = 0;
            c_est + period + margin
        } else if slot.since_bracket
            >= rebracket_cycles(margin, slot.period_bounds_ns.1 - slot.period_bounds_ns.0)
            || slot.bracket_ns == 0
        {
            // Deliberately early: expect one empty poll, which re-brackets the phase.
            slot.since_bracket = 0;
            slot.poll_kind = PollKind::Early;
            c_est + period - (period >> slot.early_shift)
        } else {
            slot.since_bracket += 1;
            c_est + period + margin
        };
        slot.next_wake_ns = target.saturating_sub(slot.gate_read_ns).max(r.gate_ns);
    } else {
        slot.next_wake_ns = next_fixed_rate(slot.next_wake_ns, period, monotonic_ns());
    }
    if slow {
        slot.next_wake_ns = slot.next_wake_ns.max(r.start_ns + idle_period);
    }

    let mut max_gap = opts.max_gap_ns.max(3 * period);
    if idle_interval {
        max_gap = max_gap.max(3 * idle_period);
    }
    let prev_after = slot.last_after_ns;
    {
        let mut st = lock(&shared.state);
        for s in buf.iter_mut() {
            s.rail += slot.base;
            let t = s.t_ns();
            if let Some((start, reason)) = st.open_gaps.remove(&s.rail) {
                push_gap(
                    &mut st,
                    Gap {
                        rail: s.rail,
                        start_ns: start,
                        end_ns: s.t_before_ns,
                        reason,
                    },
                );
            } else if let Some(pa) = prev_after {
                if s.t_before_ns.saturating_sub(pa) > max_gap {
                    let reason = format!(
                        "no fresh sample for {:.1} ms (sampler late or chip stalled)",
                        (s.t_before_ns - pa) as f64 / 1e6
                    );
                    push_gap(
                        &mut st,
                        Gap {
                            rail: s.rail,
                            start_ns: pa,
                            end_ns: s.t_before_ns,
                            reason,
                        },
                    );
                }
            }
            let Some(i) = st.index(s.rail) else {
                continue;
            };
            st.latest[i] = Some(*s);
            let c = &mut st.rails[i];
            c.samples += 1;
            c.period_est_ns = period;
            c.conversions_missed += missed;
            c.idle_skipped += idle_skipped;
            // A zero-width sample at the rail's last instant is the start of an
            // energy counter's step (`rapl`), not a read: no latency, no interval.
            let step_start = s.t_after_ns == s.t_before_ns && c.last_t_ns == Some(t);
            if !step_start {
                c.latency_ns
                    .push(s.t_after_ns.saturating_sub(s.t_before_ns));
            }
            if let (Some(last), false, false) = (c.last_t_ns, idle_interval, step_start) {
                let dt = t.saturating_sub(last);
                let n = (dt as f64 / period as f64).round().max(1.0) as u64;
                c.jitter_ns.push(dt.abs_diff(n * period));
            }
            if c.first_t_ns.is_none() {
                c.first_t_ns = Some(t);
            }
            c.last_t_ns = Some(t);
        }
    }
    if let Some(last) = buf.last() {
        slot.last_after_ns = Some(last.t_after_ns);
    }
    let mut ring = lock(&shared.ring);
    for s in buf.iter() {
        if ring.buf.len() >= ring.capacity {
            ring.buf.pop_front();
            ring.overflows += 1;
        }
        ring.buf.push_back(*s);
        ring.pushed += 1;
    }
}

pub(super) fn record_error(shared: &ThreadShared, slot: &Slot, e: &SensorError, now: u64) {
    let mut st = lock(&shared.state);
    let kind = e.kind.as_str().to_string();
    *st.errors.entry(kind.clone()).or_default() += 1;
    for rail in slot.base..slot.base + slot.rails {
        if let Some(c) = st.rail_mut(rail) {
            *c.errors.entry(kind.clone()).or_default() += 1;
        }
        let start = slot.last_after_ns.unwrap_or(now);
        st.open_gaps
            .entry(rail)
            .or_insert_with(|| (start, format!("{}: {}", e.kind.as_str(), e.message)));
    }
}

pub(super) fn fail(shared: &ThreadShared, slot: &mut Slot, e: SensorError, opts: &SamplerOptions) {
    let now = monotonic_ns();
    let first = slot.failed.is_none();
    if first {
        tracing::warn!(error = %e, "power sensor read failed; gap opened, re-initialising with backoff");
    }
    record_error(shared, slot, &e, now);
    slot.reset_schedule();
    // A brown-out wants re-initialising now; a bus error a short pause first.
    let backoff = if e.kind == ErrorKind::BrownOut {
        0
    } else {
        1_000_000
    };
    slot.failed = Some(backoff.min(opts.max_backoff_ns));
    slot.next_wake_ns = now + backoff;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_sleep_ends_when_activated_or_cancelled() {
        let active = Arc::new(AtomicBool::new(false));
        let cancel = CancellationToken::new();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = StopCheck::new(stopping.clone(), cancel.clone());
        let far = monotonic_ns() + 5_000_000_000;
        let a = active.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            a.store(true, Ordering::Relaxed);
        });
        let t0 = monotonic_ns();
        assert_eq!(
            sleep_until_cancellable(far, &stop, Some(&active)),
            Woke::Activated
        );
        assert!(monotonic_ns() - t0 < 1_000_000_000);
        t.join().expect("setter");
        // Without the flag the deadline (or a stop) is what ends it.
        let soon = monotonic_ns() + 1_000_000;
        assert_eq!(sleep_until_cancellable(soon, &stop, None), Woke::Deadline);
        // The parent token is seen within TOKEN_CHECK_NS (plus one idle slice).
        active.store(false, Ordering::Relaxed);
        cancel.cancel();
        let t0 = monotonic_ns();
        assert_eq!(
            sleep_until_cancellable(far, &stop, Some(&active)),
            Woke::Cancelled
        );
        assert!(monotonic_ns() - t0 < 1_000_000_000);
        // `shutdown`'s flag, at once.
        let stop = StopCheck::new(stopping.clone(), CancellationToken::new());
        // The token was just looked at, so the next look is 5 ms away; the flag is not.
        assert!(!stop.should_stop(monotonic_ns()));
        stopping.store(true, Ordering::Relaxed);
        assert!(stop.should_stop(monotonic_ns()));
    }
}
