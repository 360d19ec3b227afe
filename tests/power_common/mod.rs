//! Shared by the sampler tests: a simulated INA219 at its 12-bit rate and the spec parser.

#![allow(dead_code)] // each test binary uses its own subset

use edgewatt::power::SensorSpec;

/// A simulated INA219, 12-bit shunt+bus (940 Hz), a 50 ms square-wave load.
pub const INA219_SIM: &str = r#"
kind = "sim"
chip = "ina219"
shunt_ohms = 0.1
max_current_a = 3.2
adc_bits = 12
rails = ["5V_IN"]
total = true
load = [{ source = "square", low_a = 0.2, high_a = 0.8, period_ms = 50.0, bus_v = 5.0 }]
"#;

/// Parses a `[[power.sensors]]` entry.
pub fn spec(text: &str) -> SensorSpec {
    toml::from_str(text).expect("spec parses")
}
