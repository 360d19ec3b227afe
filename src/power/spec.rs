//! PLACEHOLDER — owned by the power work; replaced by the real `[[power.sensors]]` schema.
use serde::{Deserialize, Serialize};

/// One `[[power.sensors]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorSpec {
    pub kind: String,
}
