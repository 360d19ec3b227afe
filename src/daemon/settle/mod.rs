//! The settle gate (job field `settle`, docs/protocol.md): before a measured run the
//! board waits until it is cool and idle. This module is the decision, pure: it is
//! fed one [`Observation`] per tick (hottest thermal zone, total-rail power) and says
//! when the wait is over. [`wait`] drives it from the daemon's sensors.
//!
//! Rules (the same on the daemon and in `study run --local`):
//! - temperature is ok when the hottest zone is at most `max_temp_c`, **or** within
//!   `delta_c` of the idle temperature; neither set: no temperature condition;
//! - power is ok when total-rail power is within `idle_rel` × the idle power of the
//!   idle power;
//! - settled once both have been ok without a break for `settle_s`; not settled once
//!   `timeout_s` has passed (the run then starts, flagged `settled: false`, with the
//!   reason);
//! - a condition whose source the board lacks (no thermal zone, no power sensor) is
//!   not waited for and is listed in `unchecked`;
//! - the idle references ([`IdleRefs`]) are the lowest values the board has shown:
//!   every observation lowers them, and they persist for the daemon's life.

pub mod wait;

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::jobs::protocol::SettleSpec;

/// The board's idle references: the coolest hottest-zone temperature and the lowest
/// total-rail power (a short window's mean) it has shown since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct IdleRefs {
    /// °C.
    pub temp_c: Option<f64>,
    /// W.
    pub power_w: Option<f64>,
}

impl IdleRefs {
    /// Lowers the references to what `o` shows, where it shows lower.
    pub fn fold(&mut self, temp_c: Option<f64>, power_w: Option<f64>) {
        fn low(r: &mut Option<f64>, v: Option<f64>) {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                *r = Some(r.map_or(v, |r| r.min(v)));
            }
        }
        low(&mut self.temp_c, temp_c);
        low(&mut self.power_w, power_w);
    }
}

/// One look at the board.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Since the gate began, ms.
    pub t_ms: f64,
    /// Hottest readable thermal zone, °C; `None` without one.
    pub temp_c: Option<f64>,
    /// Total-rail power (mean over a short window), W; `None` without sensors.
    pub power_w: Option<f64>,
}

/// The result's `settle` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettleOutcome {
    /// True when the conditions held for `settle_s` before `timeout_s`.
    pub settled: bool,
    /// How long the gate waited, ms.
    pub settle_ms: f64,
    /// Hottest zone when the gate began, °C.
    pub temp_c_start: Option<f64>,
    /// … and when it ended.
    pub temp_c_end: Option<f64>,
    /// Total-rail power when the gate began, W.
    pub power_w_start: Option<f64>,
    /// … and when it ended.
    pub power_w_end: Option<f64>,
    /// The idle temperature `delta_c` was measured from, °C.
    pub temp_c_idle: Option<f64>,
    /// The idle power `idle_rel` was measured from, W.
    pub power_w_idle: Option<f64>,
    /// Conditions asked for that the board could not check (`temperature`, `power`).
    pub unchecked: Vec<&'static str>,
    /// Why it did not settle (`None` when it did).
    pub reason: Option<String>,
    /// The spec it waited for.
    pub spec: SettleSpec,
}

/// The gate's state over one wait.
#[derive(Debug, Clone)]
pub struct Gate {
    spec: SettleSpec,
    refs: IdleRefs,
    first: Option<Observation>,
    last: Option<Observation>,
    ok_since_ms: Option<f64>,
    /// Highest temperature and power since `ok_since_ms`: a reference that falls
    /// during the hold can make them out of bounds, and the hold restarts.
    hold_max: (Option<f64>, Option<f64>),
    seen_temp: bool,
    seen_power: bool,
    why_not: Option<String>,
}

impl Gate {
    /// A gate for `spec`, starting from the board's idle references so far.
    pub fn new(spec: SettleSpec, refs: IdleRefs) -> Gate {
        Gate {
            spec,
            refs,
            first: None,
            last: None,
            ok_since_ms: None,
            hold_max: (None, None),
            seen_temp: false,
            seen_power: false,
            why_not: None,
        }
    }

    /// The idle references, lowered by what the gate has seen.
    pub fn refs(&self) -> IdleRefs {
        self.refs
    }

    /// Feeds one observation; `Some` when the wait is over (settled or timed out).
    pub fn observe(&mut self, o: Observation) -> Option<SettleOutcome> {
        self.refs.fold(o.temp_c, o.power_w);
        self.first.get_or_insert(o);
        self.last = Some(o);
        self.seen_temp |= o.temp_c.is_some();
        self.seen_power |= o.power_w.is_some();
        let why_not = self
            .temp_problem(o.temp_c)
            .or_else(|| self.power_problem(o.power_w));
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if why_not.is_some() {
            self.ok_since_ms = None;
        } else {
            let hold = (
                max(self.hold_max.0, o.temp_c),
                max(self.hold_max.1, o.power_w),
            );
            let broken =
                self.temp_problem(hold.0).is_some() || self.power_problem(hold.1).is_some();
            if self.ok_since_ms.is_none() || broken {
                self.ok_since_ms = Some(o.t_ms);
                self.hold_max = (o.temp_c, o.power_w);
            } else {
                self.hold_max = hold;
            }
        }
        let held = self
            .ok_since_ms
            .is_some_and(|s| o.t_ms - s >= self.spec.settle_s * 1e3);
        if held {
            return Some(self.outcome(true, None));
        }
        if o.t_ms >= self.spec.timeout_s * 1e3 {
            let reason = why_not.unwrap_or_else(|| {
                format!(
                    "the conditions held for less than settle_s = {} s before timeout_s = {} s",
                    self.spec.settle_s, self.spec.timeout_s
                )
            });
            return Some(self.outcome(false, Some(reason)));
        }
        self.why_not = why_not;
        None
    }

    /// Ends the wait early (canceled, shutting down): not settled, with `reason`.
    pub fn abort(&self, reason: &str) -> SettleOutcome {
        self.outcome(false, Some(reason.to_string()))
    }

    fn temp_problem(&self, temp_c: Option<f64>) -> Option<String> {
        let t = temp_c?;
        if !self.spec.wants_temperature() {
            return None;
        }
        let under_max = self.spec.max_temp_c.is_some_and(|m| t <= m);
        let idle = self.refs.temp_c.unwrap_or(t);
        let near_idle = self.spec.delta_c.is_some_and(|d| t <= idle + d);
        if under_max || near_idle {
            return None;
        }
        let mut limits = Vec::new();
        if let Some(m) = self.spec.max_temp_c {
            limits.push(format!("above max_temp_c {m} °C"));
        }
        if let Some(d) = self.spec.delta_c {
            limits.push(format!(
                "more than delta_c {d} °C over the idle {idle:.1} °C"
            ));
        }
        Some(format!("temperature {t:.1} °C is {}", limits.join(" and ")))
    }

    fn power_problem(&self, power_w: Option<f64>) -> Option<String> {
        let p = power_w?;
        let idle = self.refs.power_w.unwrap_or(p);
        if (p - idle).abs() <= self.spec.idle_rel * idle {
            None
        } else {
            Some(format!(
                "total-rail power {p:.3} W is not within idle_rel {} of the idle {idle:.3} W",
                self.spec.idle_rel
            ))
        }
    }

    fn outcome(&self, settled: bool, reason: Option<String>) -> SettleOutcome {
        let (first, last) = (self.first, self.last);
        let mut unchecked = Vec::new();
        if self.spec.wants_temperature() && !self.seen_temp {
            unchecked.push("temperature");
        }
        if !self.seen_power {
            unchecked.push("power");
        }
        SettleOutcome {
            settled,
            settle_ms: last.map_or(0.0, |o| o.t_ms),
            temp_c_start: first.and_then(|o| o.temp_c),
            temp_c_end: last.and_then(|o| o.temp_c),
            power_w_start: first.and_then(|o| o.power_w),
            power_w_end: last.and_then(|o| o.power_w),
            temp_c_idle: self.refs.temp_c,
            power_w_idle: self.refs.power_w,
            unchecked,
            reason: reason.or_else(|| (!settled).then(|| self.why_not.clone()).flatten()),
            spec: self.spec,
        }
    }
}

/// The daemon's gate before a job (runner): `running` with phase `settle` is
/// published, then the wait runs on the blocking pool until settled, timed out, the
/// job canceled or the daemon draining. `None` (at once) for a job without `settle`;
/// otherwise the result's `settle` object.
pub async fn before_job(
    ctx: &Arc<super::Ctx>,
    job: &crate::jobs::protocol::Job,
    token: &CancellationToken,
) -> Option<Value> {
    let spec = job.settle?;
    ctx.publish_status(
        &job.id,
        crate::jobs::protocol::JobState::Running,
        Some("settle"),
        None,
        None,
    )
    .await;
    let (measure, token, draining) = (ctx.measure.clone(), token.clone(), ctx.draining.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        wait::wait_blocking(&measure, &spec, || {
            token.is_cancelled() || draining.is_cancelled()
        })
    })
    .await
    .ok()?;
    tracing::info!(
        "job '{}' settle: {} after {:.0} ms{}",
        job.id,
        if outcome.settled {
            "settled"
        } else {
            "not settled"
        },
        outcome.settle_ms,
        outcome
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    serde_json::to_value(&outcome).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max: Option<f64>, delta: Option<f64>) -> SettleSpec {
        SettleSpec {
            max_temp_c: max,
            delta_c: delta,
            idle_rel: 0.1,
            settle_s: 1.0,
            timeout_s: 10.0,
        }
    }

    fn obs(t_ms: f64, temp_c: Option<f64>, power_w: Option<f64>) -> Observation {
        Observation {
            t_ms,
            temp_c,
            power_w,
        }
    }

    /// Feeds `f(t)` every 100 ms until the gate answers.
    fn run(gate: &mut Gate, f: impl Fn(f64) -> (Option<f64>, Option<f64>)) -> SettleOutcome {
        let mut t = 0.0;
        loop {
            let (temp, p) = f(t);
            if let Some(o) = gate.observe(obs(t, temp, p)) {
                return o;
            }
            t += 100.0;
            assert!(t < 1e6, "gate never answered");
        }
    }

    #[test]
    fn waits_for_the_temperature_to_fall_under_max() {
        // 80 °C falling 1 °C per 100 ms; idle power throughout.
        let mut g = Gate::new(spec(Some(70.0), None), IdleRefs::default());
        let o = run(&mut g, |t| (Some(80.0 - t / 100.0), Some(2.5)));
        assert!(o.settled, "{o:?}");
        assert_eq!(o.temp_c_start, Some(80.0));
        // ≤ 70 from t = 1000 ms, then held 1 s.
        assert_eq!(o.settle_ms, 2000.0);
        assert!(o.temp_c_end.unwrap() <= 70.0);
        assert!(o.unchecked.is_empty() && o.reason.is_none());
    }

    #[test]
    fn delta_is_measured_from_the_coolest_idle_temperature() {
        // The board was idle at 45 °C earlier; now 60 °C cooling 0.5 °C / 100 ms.
        let refs = IdleRefs {
            temp_c: Some(45.0),
            power_w: Some(2.5),
        };
        let mut g = Gate::new(spec(None, Some(5.0)), refs);
        let o = run(&mut g, |t| (Some(60.0 - t / 200.0), Some(2.6)));
        assert!(o.settled);
        assert_eq!(o.temp_c_idle, Some(45.0));
        // ≤ 50 °C at t = 2000 ms, held to 3000 ms.
        assert_eq!(o.settle_ms, 3000.0);
        // Either bound is enough: a loose max_temp_c settles at once.
        let mut g = Gate::new(spec(Some(65.0), Some(5.0)), refs);
        assert_eq!(run(&mut g, |_| (Some(60.0), Some(2.5))).settle_ms, 1000.0);
    }

    #[test]
    fn waits_for_power_to_come_back_to_idle() {
        // Power 6 W for 2 s (a previous job's tail), then 2.5 W, the idle power the
        // board showed before; no thermal zone.
        let known = IdleRefs {
            temp_c: None,
            power_w: Some(2.5),
        };
        let mut g = Gate::new(spec(Some(70.0), None), known);
        let o = run(&mut g, |t| (None, Some(if t < 2000.0 { 6.0 } else { 2.5 })));
        assert!(o.settled);
        assert_eq!(o.settle_ms, 3000.0);
        assert_eq!(o.power_w_start, Some(6.0));
        assert_eq!(o.power_w_idle, Some(2.5));
        assert_eq!(o.unchecked, vec!["temperature"]);
        // A steady 6 W never settles.
        let mut g = Gate::new(spec(None, None), known);
        let o = run(&mut g, |_| (None, Some(6.0)));
        assert!(!o.settled);
        assert_eq!(o.settle_ms, 10_000.0);
        assert!(o
            .reason
            .unwrap()
            .contains("not within idle_rel 0.1 of the idle 2.500 W"));
    }

    #[test]
    fn power_within_idle_rel_counts_as_idle() {
        let refs = IdleRefs {
            temp_c: None,
            power_w: Some(2.5),
        };
        let mut g = Gate::new(spec(None, None), refs);
        // 2.7 W is within 10 % of 2.5 W: settled after settle_s.
        let o = run(&mut g, |_| (None, Some(2.7)));
        assert!(o.settled);
        assert_eq!(o.settle_ms, 1000.0);
    }

    #[test]
    fn a_break_restarts_the_hold() {
        // Ok, then one hot reading at 600 ms, then ok: the hold counts from 700 ms.
        let mut g = Gate::new(spec(Some(70.0), None), IdleRefs::default());
        let o = run(&mut g, |t| {
            (Some(if t == 600.0 { 75.0 } else { 60.0 }), Some(2.5))
        });
        assert_eq!(o.settle_ms, 1700.0);
    }

    #[test]
    fn timeout_gives_settled_false_with_the_reason() {
        let mut g = Gate::new(spec(Some(70.0), None), IdleRefs::default());
        // Starts at 90 °C, falls to 80 and stays.
        let o = run(&mut g, |t| (Some((90.0 - t / 100.0).max(80.0)), Some(2.5)));
        assert!(!o.settled);
        assert_eq!(o.settle_ms, 10_000.0);
        assert_eq!((o.temp_c_start, o.temp_c_end), (Some(90.0), Some(80.0)));
        let r = o.reason.unwrap();
        assert_eq!(r, "temperature 80.0 °C is above max_temp_c 70 °C");
    }

    #[test]
    fn a_falling_reference_restarts_the_hold() {
        // No idle power known: 3.0 W is ok against itself, then power falls 3.0 →
        // 2.0 W within the hold; the first readings are then > 10 % over the new idle.
        let mut g = Gate::new(spec(None, None), IdleRefs::default());
        let o = run(&mut g, |t| (None, Some((3.0 - t / 1000.0).max(2.0))));
        assert!(o.settled);
        assert_eq!(o.power_w_idle, Some(2.0));
        // Holding from a reading within 10 % of 2.0 W (≤ 2.2 W at t ≥ 800 ms).
        assert!(o.settle_ms >= 1800.0, "{o:?}");
        assert!(o.power_w_end.unwrap() <= 2.2);
    }

    #[test]
    fn nothing_to_check_settles_after_settle_s_and_says_so() {
        let mut g = Gate::new(spec(Some(70.0), None), IdleRefs::default());
        let o = run(&mut g, |_| (None, None));
        assert!(o.settled);
        assert_eq!(o.settle_ms, 1000.0);
        assert_eq!(o.unchecked, vec!["temperature", "power"]);
        // settle_s = 0 and a cool board: no wait at all.
        let mut s = spec(None, None);
        s.settle_s = 0.0;
        let o = Gate::new(s, IdleRefs::default())
            .observe(obs(0.0, Some(40.0), Some(2.0)))
            .unwrap();
        assert!(o.settled && o.settle_ms == 0.0);
    }

    #[test]
    fn abort_is_not_settled_and_refs_only_fall() {
        let mut g = Gate::new(spec(Some(50.0), None), IdleRefs::default());
        assert!(g.observe(obs(0.0, Some(60.0), Some(3.0))).is_none());
        assert!(g.observe(obs(100.0, Some(58.0), Some(3.5))).is_none());
        assert_eq!(
            g.refs(),
            IdleRefs {
                temp_c: Some(58.0),
                power_w: Some(3.0)
            }
        );
        let o = g.abort("canceled");
        assert!(!o.settled);
        assert_eq!(o.reason.as_deref(), Some("canceled"));
        assert_eq!(o.settle_ms, 100.0);
    }
}
