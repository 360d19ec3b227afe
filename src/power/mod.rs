//! Power sensing: drivers, simulators, hwmon, and the sampler.
pub mod sample;
pub mod spec;

pub use sample::{RailInfo, Sample};
pub use spec::SensorSpec;
