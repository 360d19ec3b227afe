//! Power sensing: drivers, simulators, hwmon, and the sampler.
//!
//! - [`ina219`], [`ina3221`] — register-level drivers over `embedded_hal::i2c::I2c`
//! - [`sim`]     — register-level chip simulators (`kind = "sim"`), load sources, faults
//! - [`hwmon`]   — kernel-owned monitors via sysfs hwmon / legacy Jetson IIO
//! - [`rapl`]    — CPU package / DRAM energy counters via powercap sysfs
//! - [`pi5pmic`] — the Raspberry Pi 5 PMIC's rails via the firmware (mailbox / vcgencmd)
//! - [`sensor`]  — the `Sensor` trait the sampler drives, chip adapters, error kinds
//! - [`factory`] — `[[power.sensors]]` → sensors; the only place that opens `/dev/i2c-*`
//! - [`sampler`] — per-bus threads, CNVR/CVRF gating, ring buffer, gaps
//! - [`recorder`] — a job's samples drained from the rings while it runs
//! - [`stats`]   — counters and percentiles
//! - [`scan`]    — probing 0x40–0x4F and naming what answers
//! - [`spec`]    — the config schema (`spec/mod.rs`) and its validation (`spec/validate.rs`)
//! - [`timing`]  — precise sleeps, thread CPU time, RT priority / pinning
pub mod factory;
pub mod hwmon;
pub mod ina219;
pub mod ina3221;
pub mod pi5pmic;
pub mod rapl;
pub mod recorder;
mod register;
pub mod sample;
pub mod sampler;
pub mod scan;
pub mod sensor;
pub mod sim;
pub mod spec;
pub mod stats;
pub mod timing;

pub use recorder::{Recorded, Recorder};
pub use sample::{RailInfo, Sample};
pub use sampler::{
    start_sampler, start_with_sensors, Gap, RingCursor, SamplerHandle, SamplerOptions,
};
pub use sensor::{ErrorKind, Sensor, SensorError, SensorInfo};
pub use spec::{SensorSpec, SpecError};
pub use stats::{RailStats, SamplerStats};

/// The sensing side failed to start.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// A `[[power.sensors]]` entry is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// An I2C bus device could not be opened.
    #[error("cannot open i2c bus '{bus}': {message} (is the i2c-dev module loaded and are you in the i2c group?)")]
    Open {
        /// Bus path.
        bus: String,
        /// OS error.
        message: String,
    },
    /// A sensor refused its set-up (wrong chip, configuration not kept, no hwmon).
    #[error("{sensor}: {message}")]
    Init {
        /// Which sensor.
        sensor: String,
        /// What happened.
        message: String,
    },
    /// No sensor configured.
    #[error("no power sensors configured: add a [[power.sensors]] entry (kind = \"sim\" without hardware)")]
    NoSensors,
    /// A sampler thread could not be spawned.
    #[error("cannot start sampler thread: {0}")]
    Thread(std::io::Error),
}
