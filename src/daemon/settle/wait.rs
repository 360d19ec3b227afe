//! Drives the settle [`Gate`] from the board's sensors: every 100 ms the hottest
//! thermal zone (the thermal recorder's latest reading) and the total-rail power (the
//! mean over the last 500 ms of the sampler's rings: the total rail, or the sum of the
//! component rails when none is marked total — the energy summary's basis). Blocking;
//! the daemon calls it on the blocking pool, `study run --local` on its own thread.

use std::time::{Duration, Instant};

use super::{Gate, Observation, SettleOutcome};
use crate::clock::monotonic_ns;
use crate::daemon::measure::Measure;
use crate::jobs::protocol::SettleSpec;
use crate::power::SamplerHandle;
use crate::trace::ThermalRecorder;

/// Time between two observations.
pub const TICK: Duration = Duration::from_millis(100);
/// Power is the mean over this window, ns (a single sample is too noisy).
pub const POWER_WINDOW_NS: u64 = 500_000_000;

/// Waits for `spec` on the board `measure` reads; `stop()` true ends the wait early
/// (not settled). The board's idle references are updated for the next wait.
pub fn wait_blocking(
    measure: &Measure,
    spec: &SettleSpec,
    stop: impl Fn() -> bool,
) -> SettleOutcome {
    let mut refs = *measure
        .settle_refs()
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // What the rings still hold since the last wait (idle time between jobs).
    let (temp, power) = history(measure);
    refs.fold(temp, power);
    let mut gate = Gate::new(*spec, refs);
    let t0 = Instant::now();
    let outcome = loop {
        let o = Observation {
            t_ms: t0.elapsed().as_secs_f64() * 1e3,
            temp_c: measure.thermal_recorder().and_then(hottest_now),
            power_w: measure
                .sampler_handle()
                .and_then(|s| power_w(s, monotonic_ns().saturating_sub(POWER_WINDOW_NS), u64::MAX)),
        };
        if let Some(out) = gate.observe(o) {
            break out;
        }
        if stop() {
            break gate
                .abort("the job was canceled or the daemon is stopping before the board settled");
        }
        std::thread::sleep(TICK);
    };
    *measure
        .settle_refs()
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = gate.refs();
    outcome
}

/// The hottest zone of the latest reading, °C.
fn hottest_now(t: &ThermalRecorder) -> Option<f64> {
    let now = monotonic_ns();
    let w = t.window(now.saturating_sub(2_000_000_000), u64::MAX);
    hottest(w.readings.last()?)
}

fn hottest(r: &crate::trace::thermal::ThermalReading) -> Option<f64> {
    r.temp_mc
        .iter()
        .flatten()
        .map(|mc| *mc as f64 / 1000.0)
        .reduce(f64::max)
}

/// The coolest hottest-zone temperature and the lowest 500 ms power still in the rings.
fn history(m: &Measure) -> (Option<f64>, Option<f64>) {
    let temp = m.thermal_recorder().and_then(|t| {
        t.window(0, u64::MAX)
            .readings
            .iter()
            .filter_map(hottest)
            .reduce(f64::min)
    });
    let power = m.sampler_handle().and_then(|s| {
        let samples = s.window(0, u64::MAX);
        let (first, last) = (samples.first()?.t_ns(), samples.last()?.t_ns());
        let mut lowest: Option<f64> = None;
        let mut from = first;
        // Whole windows only; the one still filling is the next observation's.
        while from + POWER_WINDOW_NS <= last {
            let to = from + POWER_WINDOW_NS;
            let lo = samples.partition_point(|x| x.t_ns() < from);
            let hi = samples.partition_point(|x| x.t_ns() < to);
            if let Some(p) = basis_power_w(&s.rails(), &samples[lo..hi]) {
                lowest = Some(lowest.map_or(p, |l| l.min(p)));
            }
            from = to;
        }
        lowest
    });
    (temp, power)
}

/// Mean total-rail power of the samples in `[from_ns, to_ns]`, W.
fn power_w(s: &SamplerHandle, from_ns: u64, to_ns: u64) -> Option<f64> {
    basis_power_w(&s.rails(), &s.window(from_ns, to_ns))
}

/// The energy summary's basis over `samples`: the first total rail's mean power, or
/// the sum of every rail's mean when none is total; `None` when a basis rail has no
/// sample.
pub fn basis_power_w(
    rails: &[crate::power::RailInfo],
    samples: &[crate::power::Sample],
) -> Option<f64> {
    let basis: Vec<usize> = match rails.iter().position(|r| r.total) {
        Some(i) => vec![i],
        None => (0..rails.len()).collect(),
    };
    if basis.is_empty() {
        return None;
    }
    let mut total = 0.0;
    for i in basis {
        let (sum, n) = samples
            .iter()
            .filter(|x| usize::from(x.rail) == i)
            .fold((0.0, 0u32), |(s, n), x| {
                (s + x.power_uw as f64 / 1e6, n + 1)
            });
        if n == 0 {
            return None;
        }
        total += sum / f64::from(n);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::{RailInfo, Sample};

    fn rail(name: &str, total: bool) -> RailInfo {
        RailInfo {
            name: name.into(),
            total,
            source: "test".into(),
            simulated: true,
        }
    }

    fn s(rail: u16, power_uw: i64) -> Sample {
        Sample {
            t_before_ns: 0,
            t_after_ns: 0,
            rail,
            bus_mv: 5000,
            current_ua: 0,
            power_uw,
        }
    }

    #[test]
    fn basis_is_the_total_rail_or_the_sum() {
        let samples = [
            s(0, 1_000_000),
            s(1, 5_000_000),
            s(1, 6_000_000),
            s(0, 2_000_000),
        ];
        let with_total = [rail("CPU", false), rail("VDD_IN", true)];
        assert_eq!(basis_power_w(&with_total, &samples), Some(5.5));
        let parts = [rail("CPU", false), rail("GPU", false)];
        assert_eq!(basis_power_w(&parts, &samples), Some(1.5 + 5.5));
        assert_eq!(basis_power_w(&parts, &samples[..1]), None);
        assert_eq!(basis_power_w(&[], &samples), None);
    }
}
