//! The `SamplerHandle`: what the rest of the program sees of a running sampler.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio_util::sync::CancellationToken;

use super::ring::{lock, RingCursor, ThreadShared};
use super::Gap;
use crate::clock::monotonic_ns;
use crate::power::sensor::SensorInfo;
use crate::power::sim::{SimCounters, SimStats};
use crate::power::stats::{SamplerStats, ThreadStats};
use crate::power::{RailInfo, Sample};

pub(super) struct Inner {
    pub(super) rails: Vec<RailInfo>,
    pub(super) infos: Vec<SensorInfo>,
    pub(super) threads: Vec<Arc<ThreadShared>>,
    pub(super) joins: Mutex<Vec<JoinHandle<()>>>,
    /// The sampler threads, to unpark an idle sleep on activation or shutdown.
    pub(super) wake: Vec<std::thread::Thread>,
    pub(super) cancel: CancellationToken,
    /// Raised by `shutdown`: the threads stop at their next loop.
    pub(super) stopping: Arc<AtomicBool>,
    pub(super) sims: Vec<(String, Arc<SimCounters>)>,
    /// Full rate (true) or idle rate; read by the threads before each sleep and read.
    pub(super) active: Arc<AtomicBool>,
}

/// A running sampler. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct SamplerHandle {
    pub(super) inner: Arc<Inner>,
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
}
