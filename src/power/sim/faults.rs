//! Fault injection for simulators: when each configured fault fires and what is
//! still pending.

use crate::power::spec::{FaultKind, FaultSpec};

/// What fired on one `poll`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    /// Registers must go back to POR now.
    pub brown_out: bool,
    /// A stuck-bus episode began.
    pub stuck_started: bool,
}

/// The fault plan of one simulator.
#[derive(Debug, Default)]
pub struct FaultSchedule {
    /// (fault, next time it fires in monotonic ns; u64::MAX = done).
    entries: Vec<(FaultSpec, u64)>,
    pending_nacks: u32,
    pending_bus_errors: u32,
    stuck_until_ns: u64,
}

impl FaultSchedule {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Faults timed from `origin_ns` (the simulator's start).
    pub fn new(faults: &[FaultSpec], origin_ns: u64) -> Self {
        FaultSchedule {
            entries: faults
                .iter()
                .map(|f| (f.clone(), origin_ns + f.at_ms * 1_000_000))
                .collect(),
            ..Default::default()
        }
    }

    /// Fires every fault due at `now_ns`. A repeating fault that fell several periods
    /// behind fires once and moves on (a sleeping sampler sees one event, not a burst).
    pub fn poll(&mut self, now_ns: u64) -> Fired {
        let mut fired = Fired::default();
        for (f, next) in &mut self.entries {
            if *next > now_ns {
                continue;
            }
            match f.kind {
                FaultKind::Nack => self.pending_nacks += f.count.unwrap_or(1),
                FaultKind::BusError => self.pending_bus_errors += f.count.unwrap_or(1),
                FaultKind::Stuck => {
                    self.stuck_until_ns = now_ns + f.duration_ms.unwrap_or(50) * 1_000_000;
                    fired.stuck_started = true;
                }
                FaultKind::BrownOut => fired.brown_out = true,
            }
            *next = match f.every_ms {
                Some(every) => {
                    let period = every.max(1) * 1_000_000;
                    let behind = (now_ns - *next) / period + 1;
                    *next + behind * period
                }
                None => u64::MAX,
            };
        }
        fired
    }

    /// The end of the current stuck episode, if the bus is stuck at `now_ns`.
    pub fn stuck_until(&self, now_ns: u64) -> Option<u64> {
        (now_ns < self.stuck_until_ns).then_some(self.stuck_until_ns)
    }

    /// Consumes one pending NACK.
    pub fn take_nack(&mut self) -> bool {
        if self.pending_nacks > 0 {
            self.pending_nacks -= 1;
            true
        } else {
            false
        }
    }

    /// Consumes one pending bus error.
    pub fn take_bus_error(&mut self) -> bool {
        if self.pending_bus_errors > 0 {
            self.pending_bus_errors -= 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: FaultKind, at_ms: u64, every_ms: Option<u64>) -> FaultSpec {
        FaultSpec {
            kind,
            at_ms,
            every_ms,
            count: Some(2),
            duration_ms: Some(10),
        }
    }

    #[test]
    fn nack_fires_once_with_count() {
        let mut s = FaultSchedule::new(&[fault(FaultKind::Nack, 5, None)], 0);
        s.poll(4_000_000);
        assert!(!s.take_nack());
        s.poll(5_000_000);
        assert!(s.take_nack() && s.take_nack() && !s.take_nack());
        s.poll(50_000_000);
        assert!(!s.take_nack());
    }

    #[test]
    fn repeating_fault_catches_up_without_burst() {
        let mut s = FaultSchedule::new(&[fault(FaultKind::BrownOut, 10, Some(10))], 0);
        assert!(s.poll(55_000_000).brown_out);
        assert!(!s.poll(56_000_000).brown_out);
        assert!(s.poll(60_000_000).brown_out);
    }

    #[test]
    fn stuck_window() {
        let mut s = FaultSchedule::new(&[fault(FaultKind::Stuck, 1, None)], 0);
        assert!(s.poll(1_000_000).stuck_started);
        assert_eq!(s.stuck_until(2_000_000), Some(11_000_000));
        assert_eq!(s.stuck_until(11_000_000), None);
    }
}
