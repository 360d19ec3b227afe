//! Energy per rail since start, for `edgewatt_rail_energy_joules_total`: a task reads
//! the sampler's rings with its own cursor once a second (other readers, such as a
//! job's recorder, keep theirs) and integrates each rail's power by the trapezoid
//! rule, like the per-job energy math (docs/energy.md). A stretch between two samples
//! longer than the bridge limit is a gap: it adds nothing, and the counter then
//! under-reads instead of inventing energy (the gap shows in `edgewatt_sampler_gaps_total`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::power::{RingCursor, Sample, SamplerHandle};

/// How often the task reads the rings; well inside the ring's capacity at full rate.
const READ_EVERY: Duration = Duration::from_secs(1);

/// Per-rail trapezoid integration across batches of samples.
#[derive(Debug, Clone)]
pub struct RailIntegrator {
    /// Last (t_ns, power_uw) per rail, the left end of the next trapezoid.
    last: Vec<Option<(u64, i64)>>,
    /// Longest interval bridged, ns.
    max_bridge_ns: u64,
}

impl RailIntegrator {
    /// For `rails` rails, bridging intervals up to `max_bridge_ns`.
    pub fn new(rails: usize, max_bridge_ns: u64) -> Self {
        RailIntegrator {
            last: vec![None; rails],
            max_bridge_ns,
        }
    }

    /// Integrates `samples` (each rail's in time order; rails may interleave) and
    /// returns the joules added per rail.
    pub fn push(&mut self, samples: &[Sample]) -> Vec<f64> {
        let mut added_j = vec![0.0; self.last.len()];
        for s in samples {
            let rail = usize::from(s.rail);
            let (Some(slot), Some(acc)) = (self.last.get_mut(rail), added_j.get_mut(rail)) else {
                continue;
            };
            let t = s.t_ns();
            if let Some((t0, p0)) = *slot {
                if t <= t0 {
                    continue; // not newer: already counted
                }
                let dt_ns = t - t0;
                if dt_ns <= self.max_bridge_ns {
                    // µW × ns = 1e-15 J.
                    *acc += (p0 as f64 + s.power_uw as f64) / 2.0 * dt_ns as f64 * 1e-15;
                }
            }
            *slot = Some((t, s.power_uw));
        }
        added_j
    }

    /// Forgets a rail's last sample (the ring overwrote samples after it).
    pub fn reset(&mut self, rail: u16) {
        if let Some(slot) = self.last.get_mut(usize::from(rail)) {
            *slot = None;
        }
    }
}

/// The bridge limit: `power.max_gap_ms`, but never below three idle-rate periods, so
/// the idle rate between jobs is not mistaken for gaps.
pub fn max_bridge_ns(max_gap_ns: u64, idle_rate_hz: u32) -> u64 {
    let idle_ns = if idle_rate_hz == 0 {
        0
    } else {
        3_000_000_000 / u64::from(idle_rate_hz)
    };
    max_gap_ns.max(idle_ns)
}

/// Feeds the rail energy counters until `cancel` fires.
pub async fn run(
    sampler: Arc<SamplerHandle>,
    metrics: Metrics,
    max_bridge_ns: u64,
    cancel: CancellationToken,
) {
    let rails: Vec<String> = sampler.rails().into_iter().map(|r| r.name).collect();
    let mut integ = RailIntegrator::new(rails.len(), max_bridge_ns);
    let (_, mut cursor): (_, RingCursor) = sampler.window_from(u64::MAX);
    let mut batch = Vec::new();
    let mut tick = tokio::time::interval(READ_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        // A second of samples is a copy of a few thousand small structs and one
        // short lock per ring: cheap enough for the runtime.
        batch.clear();
        for gap in sampler.read_since(&mut cursor, &mut batch) {
            integ.reset(gap.rail);
        }
        batch.sort_by_key(Sample::t_ns);
        for (rail, j) in integ.push(&batch).into_iter().enumerate() {
            if let Some(name) = rails.get(rail) {
                metrics.add_rail_energy(name, j);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rail: u16, t_ms: u64, power_w: f64) -> Sample {
        let t = t_ms * 1_000_000;
        Sample {
            t_before_ns: t,
            t_after_ns: t,
            rail,
            bus_mv: 5000,
            current_ua: 0,
            power_uw: (power_w * 1e6) as i64,
        }
    }

    #[test]
    fn constant_power_over_batches_integrates_to_p_times_t() {
        let mut i = RailIntegrator::new(2, 250_000_000);
        // 5 W on rail 0 and 2 W on rail 1, every 10 ms for 1 s, split in two batches.
        let all: Vec<Sample> = (0..=100)
            .flat_map(|k| [s(0, k * 10, 5.0), s(1, k * 10, 2.0)])
            .collect();
        let (a, b) = all.split_at(61);
        let mut total = [0.0; 2];
        for batch in [a, b] {
            for (r, j) in i.push(batch).into_iter().enumerate() {
                total[r] += j;
            }
        }
        assert!((total[0] - 5.0).abs() < 1e-9, "{total:?}");
        assert!((total[1] - 2.0).abs() < 1e-9, "{total:?}");
    }

    #[test]
    fn a_ramp_is_integrated_by_trapezoids() {
        let mut i = RailIntegrator::new(1, u64::MAX);
        // 0 W → 10 W linearly over 2 s: 10 J.
        let j = i.push(&[s(0, 0, 0.0), s(0, 1000, 5.0), s(0, 2000, 10.0)]);
        assert!((j[0] - 10.0).abs() < 1e-9, "{j:?}");
    }

    #[test]
    fn gaps_repeats_and_unknown_rails_add_nothing() {
        let mut i = RailIntegrator::new(1, 250_000_000);
        let j = i.push(&[
            s(0, 0, 4.0),
            s(0, 100, 4.0),  // 0.4 J
            s(0, 100, 4.0),  // repeat
            s(0, 50, 4.0),   // older
            s(0, 1100, 4.0), // 1 s gap: not bridged
            s(0, 1200, 4.0), // 0.4 J
            s(3, 1300, 9.0), // no such rail
        ]);
        assert!((j[0] - 0.8).abs() < 1e-9, "{j:?}");
        // After an overflow the next sample starts afresh.
        i.reset(0);
        assert_eq!(i.push(&[s(0, 1250, 4.0)]), vec![0.0]);
    }

    #[test]
    fn the_idle_rate_is_bridged() {
        assert_eq!(max_bridge_ns(250_000_000, 20), 250_000_000);
        assert_eq!(max_bridge_ns(250_000_000, 2), 1_500_000_000);
        assert_eq!(max_bridge_ns(250_000_000, 0), 250_000_000);
    }
}
