//! The per-thread ring of samples and the state a sampler thread shares with readers
//! (gaps, per-rail counters, the newest sample).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};

use super::Gap;
use crate::power::stats::RailCounters;
use crate::power::Sample;

/// Most closed gaps kept per thread (the oldest are dropped beyond).
pub(super) const MAX_GAPS: usize = 65_536;

pub(super) struct Ring {
    pub(super) buf: VecDeque<Sample>,
    pub(super) capacity: usize,
    pub(super) overflows: u64,
    /// Samples ever pushed: the sequence number of the next one. The oldest sample
    /// in `buf` is number `pushed - buf.len()`.
    pub(super) pushed: u64,
}

impl Ring {
    /// Sequence number of `buf[0]`.
    pub(super) fn first_seq(&self) -> u64 {
        self.pushed - self.buf.len() as u64
    }
}

/// Where a reader stands in each sampler thread's ring (see
/// [`SamplerHandle::read_since`]): the next sequence number to read, and the end of
/// the last sample read, per thread.
#[derive(Debug, Clone, Default)]
pub struct RingCursor {
    pub(super) next_seq: Vec<u64>,
    pub(super) last_after_ns: Vec<Option<u64>>,
}

#[derive(Default)]
pub(super) struct ThreadState {
    pub(super) gaps: VecDeque<Gap>,
    pub(super) open_gaps: BTreeMap<u16, (u64, String)>,
    /// This thread's rails, in order; `rails`, `latest` are parallel to it (a few
    /// entries: a linear search beats hashing, and touches less memory per sample).
    pub(super) rail_ids: Vec<u16>,
    pub(super) rails: Vec<RailCounters>,
    pub(super) latest: Vec<Option<Sample>>,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) gap_count: u64,
}

impl ThreadState {
    pub(super) fn add_rail(&mut self, rail: u16, period_ns: u64) {
        self.rail_ids.push(rail);
        self.rails.push(RailCounters {
            period_ns,
            ..Default::default()
        });
        self.latest.push(None);
    }

    pub(super) fn index(&self, rail: u16) -> Option<usize> {
        self.rail_ids.iter().position(|&r| r == rail)
    }

    pub(super) fn rail_mut(&mut self, rail: u16) -> Option<&mut RailCounters> {
        self.index(rail).map(|i| &mut self.rails[i])
    }
}

pub(super) struct ThreadShared {
    pub(super) name: String,
    /// The rails this thread reads (for gaps a ring overflow leaves).
    pub(super) rails: Vec<u16>,
    pub(super) ring: Mutex<Ring>,
    pub(super) state: Mutex<ThreadState>,
    pub(super) cpu_ns: AtomicU64,
    pub(super) started_ns: u64,
    pub(super) stopped_ns: AtomicU64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the sampler down with it: use the data anyway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn push_gap(st: &mut ThreadState, gap: Gap) {
    if st.gaps.len() >= MAX_GAPS {
        st.gaps.pop_front();
    }
    st.gap_count += 1;
    if let Some(c) = st.rail_mut(gap.rail) {
        c.gaps += 1;
    }
    st.gaps.push_back(gap);
}
