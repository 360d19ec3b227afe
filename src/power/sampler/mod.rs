//! The sampler: one dedicated thread per I2C bus (and per hwmon sensor) reading each
//! rail at the chip's conversion rate, gated on CNVR/CVRF, into a bounded ring.
//!
//! # Scheduling a gated chip
//! After a fresh read the thread estimates when that conversion completed (`c_est`)
//! and sleeps until the next one should have: `c_est + period + margin`, started
//! early by the gating read's own duration. A poll that finds nothing fresh (counted
//! as a duplicate avoided) brackets the completion between itself and the next poll;
//! every 16–64 cycles the thread wakes deliberately early to re-bracket, so drift
//! between the chip's oscillator and CLOCK_MONOTONIC never accumulates into a missed
//! conversion.
//!
//! # Learning the chip's period
//! A chip's oscillator is not its datasheet's typical value (the INA219's 12-bit
//! conversion is 532 µs typical, 586 µs max): scheduled on the nominal period, a slow
//! chip costs an empty poll and a wake-up per conversion and a fast one loses
//! conversions. So the period is measured, from hard facts only: a bracket says a
//! conversion completed after the empty poll started and before the fresh one ended.
//! Two brackets `m` periods apart bound `m × period`; `m` is never counted (a
//! conversion may have gone unread between them) but worked out from the bounds
//! already known, and a pair that allows two values of `m` is skipped. Bounds start at
//! the oscillator tolerance (±15 %) and narrow with every pair; the estimate is their
//! middle. Neighbouring brackets narrow them first, which lets brackets further apart
//! count, whose bounds are tighter still: a few µs within a second. Calibration cycles
//! (a poll just before the earliest the next conversion can complete, so the next
//! bracket is one period on) supply brackets at start and whenever the chip proves
//! faster or slower than the estimate; bounds that a new pair excludes (the
//! oscillator drifted with temperature) start over.
//!
//! # Idle rate mode
//! Reading every conversion costs a few percent of a core, which an idle daemon does
//! not need. [`SamplerHandle::set_active`]`(false)` slows every rail to at most
//! `idle_rate_hz`; `set_active(true)` restores the full rate at once: a thread asleep
//! on an idle deadline is parked, and is unparked by the switch (or by `shutdown`).
//! Idle sleeps are parked in slices of up to 50 ms rather than 10 ms, so an idle
//! thread wakes about once per read (waking costs more than reading on a VM); only a
//! cancel of the parent token, with no `shutdown`, may take that long to be seen.
//! Conversions left
//! unread on purpose are counted as `idle_skipped`, not `conversions_missed`; an
//! interval that spanned idle time is allowed `3 / idle_rate_hz` before it counts as
//! a gap, and leaves the jitter statistics alone. The phase estimate of a gated chip
//! is restarted after an idle interval, as at start-up. A new sampler is active.
//!
//! # Failures
//! A read error opens a gap on the sensor's rails (from its last good sample) and puts
//! the sensor into re-initialisation with exponential backoff (1 ms … `max_backoff_ns`);
//! the first good sample closes the gap. A brown-out (registers back at power-on
//! values, seen by the periodic health check) is handled the same way. Nothing here
//! panics, and nothing here runs on the async runtime.

// Layout: `ring` (the ring and per-thread state), `schedule` (a slot's period learning and
// scheduling math), `thread` (the sampler thread loop), `handle` (the `SamplerHandle` API).
mod handle;
mod ring;
mod schedule;
mod thread;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::factory::{self, BuiltSensor};
use super::sensor::{ErrorKind, SensorError};
use super::{PowerError, SensorSpec};
use crate::clock::monotonic_ns;
use handle::Inner;
use ring::{lock, Ring, ThreadShared, ThreadState};
use schedule::{tolerance, PollKind, Slot, BRACKETS_KEPT, CALIBRATION_CYCLES};
use thread::{run_thread, StopCheck};

pub use handle::SamplerHandle;
pub use ring::RingCursor;

/// How the sampler runs.
#[derive(Debug, Clone)]
pub struct SamplerOptions {
    /// Samples kept per sampler thread; the oldest are dropped (and counted) beyond.
    pub ring_capacity: usize,
    /// SCHED_FIFO priority for the sampler threads (needs CAP_SYS_NICE); off by default.
    pub realtime_priority: Option<i32>,
    /// Pin the sampler threads to this CPU; off by default.
    pub cpu_affinity: Option<usize>,
    /// An interval between fresh samples longer than this (and than 3 conversion
    /// periods) is recorded as a gap.
    pub max_gap_ns: u64,
    /// How often each chip's configuration is checked for a brown-out.
    pub health_check_ns: u64,
    /// Longest retry backoff for a failing sensor.
    pub max_backoff_ns: u64,
    /// Most reads per second of each rail while the sampler is inactive
    /// ([`SamplerHandle::set_active`]); 0 = always the full rate.
    pub idle_rate_hz: u32,
}

impl SamplerOptions {
    /// Shortest interval between reads of a rail while inactive, ns; 0 = no idle mode.
    fn idle_period_ns(&self) -> u64 {
        match self.idle_rate_hz {
            0 => 0,
            hz => 1_000_000_000 / u64::from(hz),
        }
    }
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            // 2^18 samples ≈ 4.4 min of one rail at 1 kHz, ≈ 10 MB.
            ring_capacity: 1 << 18,
            realtime_priority: None,
            cpu_affinity: None,
            max_gap_ns: 50_000_000,
            health_check_ns: 250_000_000,
            max_backoff_ns: 1_000_000_000,
            idle_rate_hz: 20,
        }
    }
}

/// A span with no samples on a rail, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// Rail index.
    pub rail: u16,
    /// Last good sample's end (or when the failure was seen), monotonic ns.
    pub start_ns: u64,
    /// Next good sample's start (or now, for a gap still open), monotonic ns.
    pub end_ns: u64,
    /// What happened.
    pub reason: String,
}

/// Builds the configured sensors, initialises them, and starts one sampler thread per
/// bus. A device that answers as the wrong chip, or cannot be configured, fails here;
/// one that does not answer yet is retried by its thread (with a gap recorded).
pub fn start_sampler(
    specs: &[SensorSpec],
    opts: SamplerOptions,
    cancel: CancellationToken,
) -> Result<SamplerHandle, PowerError> {
    start_with_sensors(factory::build(specs)?, opts, cancel)
}

/// `start_sampler` with sensors already built (tests and the bench use their own).
pub fn start_with_sensors(
    built: Vec<BuiltSensor>,
    opts: SamplerOptions,
    cancel: CancellationToken,
) -> Result<SamplerHandle, PowerError> {
    if built.is_empty() {
        return Err(PowerError::NoSensors);
    }
    let cancel = cancel.child_token();
    let now = monotonic_ns();
    let mut rails = Vec::new();
    let mut infos = Vec::new();
    let mut sims = Vec::new();
    let mut groups: Vec<(String, Vec<Slot>)> = Vec::new();
    let mut initial_failures: Vec<(u16, u16, SensorError)> = Vec::new();
    for BuiltSensor { group, mut sensor } in built {
        let base = rails.len() as u16;
        let sensor_rails = sensor.rails();
        let n = sensor_rails.len() as u16;
        rails.extend(sensor_rails);
        let info = sensor.info();
        if let Some(c) = sensor.sim_counters() {
            sims.push((info.location.clone(), c));
        }
        infos.push(info);
        let failed = match sensor.init() {
            Ok(()) => None,
            Err(e) if matches!(e.kind, ErrorKind::IdMismatch | ErrorKind::Config) => {
                return Err(PowerError::Init {
                    sensor: e.sensor.clone(),
                    message: e.message,
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "power sensor not answering yet; retrying in the background");
                initial_failures.push((base, n, e));
                Some(1_000_000)
            }
        };
        let sensor_period_ns = sensor.period_ns().max(1);
        let slot = Slot {
            period_ns: sensor_period_ns,
            period_bounds_ns: tolerance(sensor_period_ns),
            brackets: VecDeque::with_capacity(BRACKETS_KEPT),
            gated: sensor.gated(),
            sensor,
            base,
            rails: n,
            failed,
            next_wake_ns: now,
            next_health_ns: now + opts.health_check_ns,
            last_after_ns: None,
            c_est: None,
            empty_poll: None,
            bracket_ns: 0,
            gate_read_ns: 0,
            since_bracket: 0,
            poll_kind: PollKind::OnSchedule,
            early_shift: 3,
            calibrate: CALIBRATION_CYCLES,
            idle_interval: false,
        };
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, v)) => v.push(slot),
            None => groups.push((group, vec![slot])),
        }
    }

    let active = Arc::new(AtomicBool::new(true));
    let stopping = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut joins = Vec::new();
    for (group, slots) in groups {
        let shared = Arc::new(ThreadShared {
            name: group.clone(),
            rails: slots
                .iter()
                .flat_map(|s| s.base..s.base + s.rails)
                .collect(),
            ring: Mutex::new(Ring {
                buf: VecDeque::with_capacity(opts.ring_capacity.min(1 << 16)),
                capacity: opts.ring_capacity.max(1),
                overflows: 0,
                pushed: 0,
            }),
            state: Mutex::new(ThreadState::default()),
            cpu_ns: AtomicU64::new(0),
            started_ns: now,
            stopped_ns: AtomicU64::new(0),
        });
        {
            let mut st = lock(&shared.state);
            for s in &slots {
                for r in s.base..s.base + s.rails {
                    st.add_rail(r, s.period_ns);
                }
            }
            for (base, n, e) in initial_failures
                .iter()
                .filter(|(b, _, _)| slots.iter().any(|s| s.base == *b))
            {
                for r in *base..*base + *n {
                    st.open_gaps.insert(r, (now, e.to_string()));
                    if let Some(c) = st.rail_mut(r) {
                        *c.errors.entry(e.kind.as_str().into()).or_default() += 1;
                    }
                }
                *st.errors.entry(e.kind.as_str().into()).or_default() += 1;
            }
        }
        let t_shared = shared.clone();
        let t_stop = StopCheck::new(stopping.clone(), cancel.clone());
        let t_opts = opts.clone();
        let t_active = active.clone();
        let join = std::thread::Builder::new()
            .name(format!(
                "ew-sampler-{}",
                group.rsplit('/').next().unwrap_or("bus")
            ))
            .spawn(move || run_thread(t_shared, slots, t_opts, t_stop, t_active))
            .map_err(PowerError::Thread)?;
        threads.push(shared);
        joins.push(join);
    }
    Ok(SamplerHandle {
        inner: Arc::new(Inner {
            rails,
            infos,
            threads,
            wake: joins.iter().map(|j| j.thread().clone()).collect(),
            joins: Mutex::new(joins),
            cancel,
            stopping,
            sims,
            active,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_period_from_rate() {
        let at = |idle_rate_hz| {
            SamplerOptions {
                idle_rate_hz,
                ..SamplerOptions::default()
            }
            .idle_period_ns()
        };
        assert_eq!((at(0), at(20), at(1000)), (0, 50_000_000, 1_000_000));
    }
}
