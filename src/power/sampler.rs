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

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::factory::{self, BuiltSensor};
use super::sensor::{ErrorKind, Sensor, SensorError, SensorInfo};
use super::sim::{SimCounters, SimStats};
use super::stats::{RailCounters, SamplerStats, ThreadStats};
use super::timing::{
    pin_to_cpu, precise_sleep_until_ns, set_precise_timer_slack, set_realtime_priority,
    thread_cpu_ns,
};
use super::{PowerError, RailInfo, Sample, SensorSpec};
use crate::clock::monotonic_ns;

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

/// Longest parked slice of an idle sleep, ns: bounds how late a parent-token cancel
/// (without `shutdown`, which unparks) is seen.
const IDLE_SLICE_NS: u64 = 50_000_000;

/// Most closed gaps kept per thread (the oldest are dropped beyond).
const MAX_GAPS: usize = 65_536;

struct Ring {
    buf: VecDeque<Sample>,
    capacity: usize,
    overflows: u64,
    /// Samples ever pushed: the sequence number of the next one. The oldest sample
    /// in `buf` is number `pushed - buf.len()`.
    pushed: u64,
}

impl Ring {
    /// Sequence number of `buf[0]`.
    fn first_seq(&self) -> u64 {
        self.pushed - self.buf.len() as u64
    }
}

/// Where a reader stands in each sampler thread's ring (see
/// [`SamplerHandle::read_since`]): the next sequence number to read, and the end of
/// the last sample read, per thread.
#[derive(Debug, Clone, Default)]
pub struct RingCursor {
    next_seq: Vec<u64>,
    last_after_ns: Vec<Option<u64>>,
}

#[derive(Default)]
struct ThreadState {
    gaps: VecDeque<Gap>,
    open_gaps: BTreeMap<u16, (u64, String)>,
    /// This thread's rails, in order; `rails`, `latest` are parallel to it (a few
    /// entries: a linear search beats hashing, and touches less memory per sample).
    rail_ids: Vec<u16>,
    rails: Vec<RailCounters>,
    latest: Vec<Option<Sample>>,
    errors: BTreeMap<String, u64>,
    gap_count: u64,
}

impl ThreadState {
    fn add_rail(&mut self, rail: u16, period_ns: u64) {
        self.rail_ids.push(rail);
        self.rails.push(RailCounters {
            period_ns,
            ..Default::default()
        });
        self.latest.push(None);
    }

    fn index(&self, rail: u16) -> Option<usize> {
        self.rail_ids.iter().position(|&r| r == rail)
    }

    fn rail_mut(&mut self, rail: u16) -> Option<&mut RailCounters> {
        self.index(rail).map(|i| &mut self.rails[i])
    }
}

struct ThreadShared {
    name: String,
    /// The rails this thread reads (for gaps a ring overflow leaves).
    rails: Vec<u16>,
    ring: Mutex<Ring>,
    state: Mutex<ThreadState>,
    cpu_ns: AtomicU64,
    started_ns: u64,
    stopped_ns: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the sampler down with it: use the data anyway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Inner {
    rails: Vec<RailInfo>,
    infos: Vec<SensorInfo>,
    threads: Vec<Arc<ThreadShared>>,
    joins: Mutex<Vec<JoinHandle<()>>>,
    /// The sampler threads, to unpark an idle sleep on activation or shutdown.
    wake: Vec<std::thread::Thread>,
    cancel: CancellationToken,
    /// Raised by `shutdown`: the threads stop at their next loop.
    stopping: Arc<AtomicBool>,
    sims: Vec<(String, Arc<SimCounters>)>,
    /// Full rate (true) or idle rate; read by the threads before each sleep and read.
    active: Arc<AtomicBool>,
}

/// A running sampler. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct SamplerHandle {
    inner: Arc<Inner>,
}

struct Slot {
    sensor: Box<dyn Sensor>,
    base: u16,
    rails: u16,
    /// The chip's nominal conversion period (from its settings).
    period_ns: u64,
    /// Hard bounds on the chip's period: the oscillator tolerance, narrowed by pairs
    /// of bracketed completions (see [`period_bounds`]); their middle is the period
    /// used ([`Slot::period_est_ns`]). Oscillators differ by chip (the INA219's
    /// 12-bit conversion is 532 µs typical, 586 µs max).
    period_bounds_ns: (u64, u64),
    /// The last brackets' completion bounds (after, at or before), oldest first:
    /// a new bracket is measured against each (see [`period_bounds`]); those many
    /// periods back narrow the bounds most.
    brackets: VecDeque<(u64, u64)>,
    gated: bool,
    /// Some(backoff) while failed and retrying.
    failed: Option<u64>,
    next_wake_ns: u64,
    next_health_ns: u64,
    last_after_ns: Option<u64>,
    /// Estimated completion time of the last conversion read.
    c_est: Option<u64>,
    /// (start, end) of the last poll that found nothing fresh, this cycle: the
    /// conversion completed after its start (a hard bound) and, as an estimate,
    /// between its end and the fresh poll's.
    empty_poll: Option<(u64, u64)>,
    /// Width of the last completion bracket, ns.
    bracket_ns: u64,
    /// Duration of the gating read (moving average), ns.
    gate_read_ns: u64,
    since_bracket: u32,
    /// Why the current poll comes when it does.
    poll_kind: PollKind,
    /// How early a deliberate early poll comes: period >> this (3: an eighth; less
    /// after an early poll that still found the conversion done).
    early_shift: u32,
    /// Calibration cycles still wanted: after a bracket, poll just before the
    /// earliest the next conversion can complete, so the next bracket is exactly one
    /// period on (see [`period_bounds`]). Set at start and when the chip turns out
    /// faster or slower than estimated.
    calibrate: u8,
    /// The interval since the last fresh read included idle-rate time: its skipped
    /// conversions and its length are expected, not misses, gaps or jitter.
    idle_interval: bool,
}

/// Why a gated chip's poll comes when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PollKind {
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
    fn period_est_ns(&self) -> u64 {
        (self.period_bounds_ns.0 + self.period_bounds_ns.1) / 2
    }

    fn reset_schedule(&mut self) {
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
fn period_bounds(base: (u64, u64), cur: (u64, u64), known: (u64, u64)) -> Option<(u64, u64)> {
    let d_min = cur.0.saturating_sub(base.1);
    let d_max = cur.1.checked_sub(base.0)?;
    let m_lo = d_min.div_ceil(known.1.max(1)).max(1);
    let m_hi = d_max / known.0.max(1);
    (m_lo == m_hi).then(|| (d_min / m_lo, d_max.div_ceil(m_lo)))
}

/// `known` narrowed by `sample`; `None` when they exclude each other (the
/// oscillator drifted with temperature: the caller starts over).
fn narrow(known: (u64, u64), sample: (u64, u64)) -> Option<(u64, u64)> {
    let both = (known.0.max(sample.0), known.1.min(sample.1));
    (both.0 <= both.1).then_some(both)
}

/// The oscillator tolerance around `nominal_ns`: ±15 %, centred on it exactly (so
/// its middle, the estimate before any measurement, is the nominal period).
fn tolerance(nominal_ns: u64) -> (u64, u64) {
    let lo = nominal_ns * MIN_PERIOD_NUM / MIN_PERIOD_DEN;
    (lo, 2 * nominal_ns - lo)
}

/// Cycles between deliberately early polls that re-bracket a gated chip's phase
/// (each costs an empty read and a wake-up), while its period is not known closely.
/// A poll that comes early by itself re-brackets at once, and a missed conversion
/// forces one.
const REBRACKET_CYCLES: u32 = 16;

/// At most this many cycles between re-brackets once the period is known closely.
const REBRACKET_CYCLES_MAX: u32 = 64;

/// Cycles until the next deliberate re-bracket: the phase estimate drifts by at most
/// half the period bounds' width per cycle, and may use half the poll's `margin_ns`.
fn rebracket_cycles(margin_ns: u64, bounds_width_ns: u64) -> u32 {
    (margin_ns / bounds_width_ns.max(1))
        .clamp(u64::from(REBRACKET_CYCLES), u64::from(REBRACKET_CYCLES_MAX)) as u32
}

/// Calibration cycles (one period measured exactly each) at start; two more each
/// time the chip proves faster or slower than estimated.
const CALIBRATION_CYCLES: u8 = 8;

/// Brackets kept to measure new ones against (about 16 periods apart each, once the
/// period is known: 8 span over a hundred periods).
const BRACKETS_KEPT: usize = 8;

/// The shortest period a chip's oscillator allows, as a fraction of nominal (±15 %).
const MIN_PERIOD_NUM: u64 = 17;
const MIN_PERIOD_DEN: u64 = 20;

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

/// Why a sleep ended.
#[derive(Debug, PartialEq, Eq)]
enum Woke {
    /// The deadline came.
    Deadline,
    /// `wake_if_active` was set: the sampler switched to the full rate.
    Activated,
    /// The sampler is shutting down.
    Cancelled,
}

/// How often a sampler thread looks at the parent cancellation token, ns.
const TOKEN_CHECK_NS: u64 = 5_000_000;

/// When a sampler thread stops: at once when `shutdown` raised `stopping` (one atomic
/// load before every sleep), or within [`TOKEN_CHECK_NS`] of the parent token being
/// cancelled: checking the token takes its lock, which is not worth paying once per
/// sample for a stop that may come a few ms late.
struct StopCheck {
    stopping: Arc<AtomicBool>,
    token: CancellationToken,
    next_token_check_ns: std::cell::Cell<u64>,
}

impl StopCheck {
    fn new(stopping: Arc<AtomicBool>, token: CancellationToken) -> Self {
        StopCheck {
            stopping,
            token,
            next_token_check_ns: std::cell::Cell::new(0),
        }
    }

    fn should_stop(&self, now_ns: u64) -> bool {
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
fn sleep_until_cancellable(
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

fn run_thread(
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

fn service(
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
            c.latency_ns
                .push(s.t_after_ns.saturating_sub(s.t_before_ns));
            if let (Some(last), false) = (c.last_t_ns, idle_interval) {
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

/// Fixed-rate schedule for ungated (hwmon) sensors: the next tick after `now`.
fn next_fixed_rate(prev_wake: u64, period: u64, now: u64) -> u64 {
    let next = prev_wake + period;
    if next > now {
        next
    } else {
        now + period
    }
}

fn push_gap(st: &mut ThreadState, gap: Gap) {
    if st.gaps.len() >= MAX_GAPS {
        st.gaps.pop_front();
    }
    st.gap_count += 1;
    if let Some(c) = st.rail_mut(gap.rail) {
        c.gaps += 1;
    }
    st.gaps.push_back(gap);
}

fn record_error(shared: &ThreadShared, slot: &Slot, e: &SensorError, now: u64) {
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

fn fail(shared: &ThreadShared, slot: &mut Slot, e: SensorError, opts: &SamplerOptions) {
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

impl SamplerHandle {
    /// All rails; `Sample::rail` indexes this.
    pub fn rails(&self) -> Vec<RailInfo> {
        self.inner.rails.clone()
    }

    /// Full rate (`true`, the default) or at most `idle_rate_hz` per rail (`false`),
    /// e.g. between jobs. Lock-free; a parked idle thread is woken at once.
    pub fn set_active(&self, active: bool) {
        let was = self.inner.active.swap(active, Ordering::Relaxed);
        if active && !was {
            for t in &self.inner.wake {
                t.unpark();
            }
        }
    }

    /// Whether the sampler runs at the full rate.
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// True when any rail comes from a simulator.
    pub fn simulated(&self) -> bool {
        self.inner.rails.iter().any(|r| r.simulated)
    }

    /// Samples with `from_ns <= t_ns() <= to_ns` still in the rings, sorted by `t_ns`.
    pub fn window(&self, from_ns: u64, to_ns: u64) -> Vec<Sample> {
        let mut out = Vec::new();
        for t in &self.inner.threads {
            let ring = lock(&t.ring);
            // Each thread reads sequentially, so its ring is ordered by t_ns.
            let lo = ring.buf.partition_point(|s| s.t_ns() < from_ns);
            let hi = ring.buf.partition_point(|s| s.t_ns() <= to_ns);
            out.extend(ring.buf.range(lo..hi.max(lo)).copied());
        }
        out.sort_by_key(|s| (s.t_ns(), s.rail));
        out
    }

    /// Samples with `t_ns() >= from_ns` still in the rings (sorted by `t_ns`), and a
    /// cursor just after the newest of them: each ring is read and its position taken
    /// under one lock, so [`read_since`](Self::read_since) from that cursor neither
    /// repeats nor skips a sample.
    pub fn window_from(&self, from_ns: u64) -> (Vec<Sample>, RingCursor) {
        let mut out = Vec::new();
        let mut cursor = RingCursor::default();
        for t in &self.inner.threads {
            let ring = lock(&t.ring);
            let lo = ring.buf.partition_point(|s| s.t_ns() < from_ns);
            out.extend(ring.buf.range(lo..).copied());
            cursor.next_seq.push(ring.pushed);
            cursor
                .last_after_ns
                .push(ring.buf.back().map(|s| s.t_after_ns));
        }
        out.sort_by_key(|s| (s.t_ns(), s.rail));
        (out, cursor)
    }

    /// Appends the samples pushed since `cursor` to `out` (each thread's in push
    /// order, threads one after the other) and advances the cursor. Samples the ring
    /// overwrote before this read are returned as gaps on that thread's rails, from
    /// the last sample read to the first one still there.
    pub fn read_since(&self, cursor: &mut RingCursor, out: &mut Vec<Sample>) -> Vec<Gap> {
        let n = self.inner.threads.len();
        cursor.next_seq.resize(n, 0);
        cursor.last_after_ns.resize(n, None);
        let mut lost = Vec::new();
        for (i, t) in self.inner.threads.iter().enumerate() {
            let ring = lock(&t.ring);
            let first = ring.first_seq();
            let want = cursor.next_seq[i];
            if want < first {
                let missing = first - want;
                let end = ring
                    .buf
                    .front()
                    .map(|s| s.t_before_ns)
                    .unwrap_or_else(monotonic_ns);
                let start = cursor.last_after_ns[i].unwrap_or(end);
                for &rail in &t.rails {
                    lost.push(Gap {
                        rail,
                        start_ns: start,
                        end_ns: end,
                        reason: format!(
                            "sampler ring overflowed: {missing} samples of thread {} were overwritten before they were read (raise power.ring_capacity)",
                            t.name
                        ),
                    });
                }
            }
            let skip = want.saturating_sub(first).min(ring.buf.len() as u64) as usize;
            out.extend(ring.buf.range(skip..).copied());
            if skip < ring.buf.len() {
                cursor.last_after_ns[i] = ring.buf.back().map(|s| s.t_after_ns);
            }
            cursor.next_seq[i] = ring.pushed;
        }
        lost
    }

    /// Gaps overlapping `[from_ns, to_ns]`; a gap still open ends at now.
    pub fn gaps(&self, from_ns: u64, to_ns: u64) -> Vec<Gap> {
        let now = monotonic_ns();
        let mut out = Vec::new();
        for t in &self.inner.threads {
            let st = lock(&t.state);
            let open = st.open_gaps.iter().map(|(&rail, (start, reason))| Gap {
                rail,
                start_ns: *start,
                end_ns: now,
                reason: format!("{reason} (ongoing)"),
            });
            out.extend(
                st.gaps
                    .iter()
                    .cloned()
                    .chain(open)
                    .filter(|g| g.end_ns >= from_ns && g.start_ns <= to_ns),
            );
        }
        out.sort_by_key(|g| (g.start_ns, g.rail));
        out
    }

    /// Counters and percentiles.
    pub fn stats(&self) -> SamplerStats {
        let now = monotonic_ns();
        let mut rails = Vec::new();
        let mut threads = Vec::new();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut overflows = 0;
        let mut gaps = 0;
        for t in &self.inner.threads {
            let (ring_len, ring_overflows) = {
                let r = lock(&t.ring);
                (r.buf.len(), r.overflows)
            };
            let st = lock(&t.state);
            for (&rail, c) in st.rail_ids.iter().zip(&st.rails) {
                let name = self
                    .inner
                    .rails
                    .get(usize::from(rail))
                    .map(|r| r.name.as_str())
                    .unwrap_or("?");
                rails.push(c.to_stats(rail, name));
            }
            for (k, v) in &st.errors {
                *errors.entry(k.clone()).or_default() += v;
            }
            gaps += st.gap_count;
            overflows += ring_overflows;
            let stopped = t.stopped_ns.load(Ordering::Relaxed);
            let wall_ns = if stopped > 0 { stopped } else { now }.saturating_sub(t.started_ns);
            let cpu_ns = t.cpu_ns.load(Ordering::Relaxed);
            threads.push(ThreadStats {
                name: t.name.clone(),
                cpu_ns,
                wall_ns,
                cpu_percent: if wall_ns > 0 {
                    cpu_ns as f64 * 100.0 / wall_ns as f64
                } else {
                    0.0
                },
                ring_len,
                ring_overflows,
            });
        }
        rails.sort_by_key(|r| r.rail);
        SamplerStats {
            rails,
            threads,
            ring_overflows: overflows,
            gaps,
            errors_by_kind: errors,
        }
    }

    /// The newest sample of each rail (index = rail).
    pub fn latest(&self) -> Vec<Option<Sample>> {
        let mut out = vec![None; self.inner.rails.len()];
        for t in &self.inner.threads {
            let st = lock(&t.state);
            for (&rail, s) in st.rail_ids.iter().zip(&st.latest) {
                if let Some(slot) = out.get_mut(usize::from(rail)) {
                    *slot = *s;
                }
            }
        }
        out
    }

    /// What each sensor is and how it is set up.
    pub fn describe(&self) -> Vec<SensorInfo> {
        self.inner.infos.clone()
    }

    /// Simulator counters (location, snapshot) for every simulated sensor.
    pub fn sim_stats(&self) -> Vec<(String, SimStats)> {
        self.inner
            .sims
            .iter()
            .map(|(l, c)| (l.clone(), c.snapshot()))
            .collect()
    }

    /// Cancels and joins the sampler threads. Idempotent.
    pub fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        self.inner.cancel.cancel();
        for t in &self.inner.wake {
            t.unpark();
        }
        let joins: Vec<JoinHandle<()>> = lock(&self.inner.joins).drain(..).collect();
        for j in joins {
            if j.join().is_err() {
                tracing::error!("a sampler thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<SamplerHandle>();
    }

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
