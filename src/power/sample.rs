//! What the sensing side produces: samples on rails, and the description of where
//! they came from. Shared with `trace/` (which never knows which chip produced them).

use serde::{Deserialize, Serialize};

/// One reading of one rail. Timestamps are CLOCK_MONOTONIC ns read immediately
/// before and after the bus transaction(s) that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Monotonic ns just before the read started.
    pub t_before_ns: u64,
    /// Monotonic ns just after the read finished.
    pub t_after_ns: u64,
    /// Index of the rail in the sampler's rail list (`RailInfo`).
    pub rail: u16,
    /// Bus (load-side) voltage, mV.
    pub bus_mv: u32,
    /// Current, µA; signed: reverse current reads negative.
    pub current_ua: i64,
    /// Power, µW; signed like the current.
    pub power_uw: i64,
}

impl Sample {
    /// The instant the sample stands for: the midpoint of the read.
    pub fn t_ns(&self) -> u64 {
        self.t_before_ns + (self.t_after_ns.saturating_sub(self.t_before_ns)) / 2
    }
}

/// One measured rail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RailInfo {
    /// Rail name, e.g. `VDD_IN`, `5V_IN`, `VDD_CPU_GPU_CV`.
    pub name: String,
    /// True when this rail measures the whole board: totals use it alone and never
    /// add component rails on top of it.
    pub total: bool,
    /// Which sensor produced it, e.g. `ina219@/dev/i2c-1:0x40`, `hwmon:ina3221/in1`, `sim:ina219`.
    pub source: String,
    /// True when the readings come from a simulator, not a chip.
    pub simulated: bool,
}
