//! The `[[power.sensors]]` configuration schema and its validation.
//!
//! One entry per physical (or simulated) sensor. The schema is flat on purpose: TOML
//! tables stay short, and `deny_unknown_fields` catches typos such as `shunt_ohm`.
//!
//! ```toml
//! [[power.sensors]]
//! kind = "ina219"
//! bus = "/dev/i2c-1"
//! address = 0x40
//! shunt_ohms = 0.1
//! max_current_a = 3.2
//! adc_bits = 12
//! rails = ["5V_IN"]
//! total = true
//!
//! [[power.sensors]]
//! kind = "sim"
//! chip = "ina3221"
//! shunt_ohms = [0.01, 0.01, 0.01]
//! conversion_us = 140
//! rails = ["VDD_IN", "VDD_CPU", "VDD_SOC"]
//! total_rail = "VDD_IN"
//! load = [{ source = "cpu", idle_w = 2.5, max_w = 6.0, bus_v = 5.0 },
//!         { source = "constant", current_a = 0.4, bus_v = 5.0 },
//!         { source = "square", low_a = 0.1, high_a = 0.5, period_ms = 100.0, bus_v = 5.0 }]
//! faults = [{ kind = "nack", at_ms = 500, every_ms = 2000, count = 2 }]
//! ```

mod validate;

use serde::{Deserialize, Serialize};

/// Which backend reads the sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorKind {
    /// TI INA219 on an I2C bus we own (`/dev/i2c-N`).
    Ina219,
    /// TI INA3221 (three channels) on an I2C bus we own.
    Ina3221,
    /// A chip owned by a kernel driver, read through sysfs hwmon / IIO.
    Hwmon,
    /// A register-level chip simulator (`chip` says which one).
    Sim,
    /// CPU package / DRAM energy counters through powercap sysfs (x86).
    Rapl,
    /// The Raspberry Pi 5 PMIC's rails through the firmware (`pmic_read_adc`).
    #[serde(rename = "pi5-pmic")]
    Pi5Pmic,
}

impl SensorKind {
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            SensorKind::Ina219 => "ina219",
            SensorKind::Ina3221 => "ina3221",
            SensorKind::Hwmon => "hwmon",
            SensorKind::Sim => "sim",
            SensorKind::Rapl => "rapl",
            SensorKind::Pi5Pmic => "pi5-pmic",
        }
    }
}

/// Which chip a simulator models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChipKind {
    /// INA219: one channel, CNVR in the bus-voltage register.
    Ina219,
    /// INA3221: three channels, CVRF in the mask/enable register.
    Ina3221,
}

/// Shunt resistance: one value, or one per INA3221 channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ShuntOhms {
    /// One shunt (INA219, or the same value on every INA3221 channel).
    One(f64),
    /// One shunt per channel, in channel order.
    PerChannel(Vec<f64>),
}

impl ShuntOhms {
    /// The shunt for channel `i` (0-based); a single value applies to all channels.
    pub fn channel(&self, i: usize) -> Option<f64> {
        match self {
            ShuntOhms::One(v) => Some(*v),
            ShuntOhms::PerChannel(v) => v.get(i).copied(),
        }
    }
}

/// What a simulated channel draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum LoadSpec {
    /// A fixed current at a fixed bus voltage.
    Constant {
        /// Current, A (negative for reverse current).
        current_a: f64,
        /// Bus voltage, V.
        bus_v: f64,
    },
    /// A square wave between two currents.
    Square {
        /// Current in the low half, A.
        low_a: f64,
        /// Current in the high half, A.
        high_a: f64,
        /// Period, ms.
        period_ms: f64,
        /// Fraction of the period spent high (0–1); default 0.5.
        #[serde(default)]
        duty: Option<f64>,
        /// Bus voltage, V.
        bus_v: f64,
    },
    /// A recorded trace: CSV lines `t_s,current_a[,bus_v]` (a header line and `#`
    /// comments are skipped), replayed in a loop, linearly interpolated.
    Trace {
        /// Path of the CSV file.
        path: String,
        /// Bus voltage when the file has no third column, V.
        bus_v: f64,
    },
    /// The host's CPU utilisation from `/proc/stat`, mapped linearly to power:
    /// `P = idle_w + util × (max_w − idle_w)`, `I = P / bus_v`.
    Cpu {
        /// Power at 0 % CPU, W.
        idle_w: f64,
        /// Power at 100 % CPU, W.
        max_w: f64,
        /// Bus voltage, V.
        bus_v: f64,
    },
}

/// What goes wrong, on purpose, in a simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The chip does not acknowledge its address (`count` transactions).
    Nack,
    /// A bus error (misplaced START/STOP) on `count` transactions.
    BusError,
    /// SDA held low for `duration_ms`: transactions time out.
    Stuck,
    /// Supply dip: every register back to its power-on value.
    BrownOut,
}

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// What happens.
    pub kind: FaultKind,
    /// First occurrence, ms after the simulator starts.
    pub at_ms: u64,
    /// Repeat period, ms; absent = once.
    #[serde(default)]
    pub every_ms: Option<u64>,
    /// Transactions affected (nack, bus_error); default 1.
    #[serde(default)]
    pub count: Option<u32>,
    /// How long the bus stays stuck (stuck), ms; default 50.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

/// One `[[power.sensors]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorSpec {
    /// Backend: `ina219`, `ina3221`, `hwmon` or `sim`.
    pub kind: SensorKind,
    /// I2C bus device (`/dev/i2c-1`); for `sim` a label that groups simulators onto one
    /// sampler thread (default `sim`). One sampler thread runs per bus.
    #[serde(default)]
    pub bus: Option<String>,
    /// 7-bit I2C address: 0x40–0x4F (INA219), 0x40–0x43 (INA3221).
    #[serde(default)]
    pub address: Option<u16>,
    /// I2C clock, kHz (10–3400); default 400. Sets the modelled transaction time on `sim`.
    #[serde(default)]
    pub bus_khz: Option<u32>,
    /// Shunt resistance, Ω: one value, or one per INA3221 channel.
    #[serde(default)]
    pub shunt_ohms: Option<ShuntOhms>,
    /// Largest current expected, A; sets the INA219 calibration (Current_LSB = I/2^15).
    #[serde(default)]
    pub max_current_a: Option<f64>,
    /// INA219 ADC resolution for bus and shunt, bits (9–12); default 12.
    #[serde(default)]
    pub adc_bits: Option<u8>,
    /// Samples averaged per conversion: INA219 1, 2, 4 … 128 (at 12 bit);
    /// INA3221 1, 4, 16, 64, 128, 256, 512, 1024. Default 1.
    #[serde(default)]
    pub averaging: Option<u16>,
    /// INA219 PGA full scale, mV: 40, 80, 160 or 320; default 320.
    #[serde(default)]
    pub pga_mv: Option<u16>,
    /// INA219 bus range, V: 16 or 32; default 32.
    #[serde(default)]
    pub bus_range_v: Option<u8>,
    /// INA3221 conversion time for bus and shunt, µs: 140, 204, 332, 588, 1100, 2116,
    /// 4156 or 8244; default 1100.
    #[serde(default)]
    pub conversion_us: Option<u32>,
    /// Rail names, one per channel (INA3221: channels 1.. in order; hwmon: labels to
    /// keep, empty = all).
    #[serde(default)]
    pub rails: Vec<String>,
    /// This sensor's (first) rail is the board total.
    #[serde(default)]
    pub total: Option<bool>,
    /// Name of the rail that is the board total, for multi-rail sensors.
    #[serde(default)]
    pub total_rail: Option<String>,
    /// Highest read rate, Hz; default: the chip's conversion rate (hwmon: its
    /// `update_interval`, or 10 Hz where unknown).
    #[serde(default)]
    pub rate_hz: Option<f64>,
    /// hwmon: sysfs root (tests point it at a fake tree); default `/`.
    #[serde(default)]
    pub sysfs_root: Option<String>,
    /// hwmon: the device `name` to read (`ina3221`, `ina219`, `ina226`, …); default: any
    /// known power monitor.
    #[serde(default)]
    pub hwmon_name: Option<String>,
    /// pi5-pmic: the `vcgencmd` to run when the mailbox is not there; default: PATH.
    #[serde(default)]
    pub vcgencmd: Option<String>,
    /// pi5-pmic: the VideoCore mailbox device; default `/dev/vcio`.
    #[serde(default)]
    pub vcio: Option<String>,
    /// sim: which chip to model.
    #[serde(default)]
    pub chip: Option<ChipKind>,
    /// sim: the load on each channel, in channel order.
    #[serde(default)]
    pub load: Vec<LoadSpec>,
    /// sim: injected faults.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// sim: how far the chip's conversion clock is off its nominal period, %
    /// (−15 … 15; the INA219's 12-bit conversion is 532 µs typical, 586 µs max, so
    /// real parts are up to ~10 % slow). Default 0.
    #[serde(default)]
    pub clock_error_pct: Option<f64>,
}

/// A `[[power.sensors]]` entry that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A key holds a value outside what the chip or the backend accepts.
    #[error("invalid value '{value}' for {key}: expected {expected}")]
    Invalid {
        /// Full key, e.g. `power.sensors[0].address`.
        key: String,
        /// The value as written.
        value: String,
        /// The allowed range or set.
        expected: String,
    },
    /// A key this kind needs is absent.
    #[error("missing {key}: required for kind '{kind}' ({expected})")]
    Missing {
        /// Full key.
        key: String,
        /// The sensor kind that needs it.
        kind: String,
        /// What to put there.
        expected: String,
    },
}

/// INA219 averaging counts accepted (at 12-bit resolution).
pub const INA219_AVERAGING: [u16; 8] = [1, 2, 4, 8, 16, 32, 64, 128];
/// INA3221 averaging counts accepted.
pub const INA3221_AVERAGING: [u16; 8] = [1, 4, 16, 64, 128, 256, 512, 1024];
/// INA3221 conversion times accepted, µs.
pub const INA3221_CONVERSION_US: [u32; 8] = [140, 204, 332, 588, 1100, 2116, 4156, 8244];

impl SensorSpec {
    /// The chip behind this entry (`sim` → its `chip`), if it is an I2C chip.
    pub fn chip_kind(&self) -> Option<ChipKind> {
        match self.kind {
            SensorKind::Ina219 => Some(ChipKind::Ina219),
            SensorKind::Ina3221 => Some(ChipKind::Ina3221),
            SensorKind::Sim => self.chip,
            SensorKind::Hwmon | SensorKind::Rapl | SensorKind::Pi5Pmic => None,
        }
    }

    /// Channels this entry measures (INA219: 1; INA3221: number of rails, 1–3).
    pub fn channel_count(&self) -> usize {
        match self.chip_kind() {
            Some(ChipKind::Ina219) => 1,
            Some(ChipKind::Ina3221) => self.rails.len().clamp(1, 3),
            None => self.rails.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ina219() -> SensorSpec {
        SensorSpec {
            kind: SensorKind::Ina219,
            bus: Some("/dev/i2c-1".into()),
            address: Some(0x40),
            bus_khz: None,
            shunt_ohms: Some(ShuntOhms::One(0.1)),
            max_current_a: Some(2.0),
            adc_bits: Some(12),
            averaging: None,
            pga_mv: None,
            bus_range_v: None,
            conversion_us: None,
            rails: vec!["5V_IN".into()],
            total: Some(true),
            total_rail: None,
            rate_hz: None,
            sysfs_root: None,
            hwmon_name: None,
            vcgencmd: None,
            vcio: None,
            chip: None,
            load: vec![],
            faults: vec![],
            clock_error_pct: None,
        }
    }

    #[test]
    fn clock_error_is_for_simulators_and_bounded() {
        let mut s: SensorSpec = toml::from_str(
            r#"
            kind = "sim"
            chip = "ina219"
            shunt_ohms = 0.1
            rails = ["5V_IN"]
            load = [{ source = "constant", current_a = 0.5, bus_v = 5.0 }]
            clock_error_pct = 8.0
            "#,
        )
        .expect("parses");
        assert!(s.validate("power.sensors[0]").is_ok());
        s.clock_error_pct = Some(20.0);
        let e = s.validate("power.sensors[0]").unwrap_err().to_string();
        assert!(
            e.contains("clock_error_pct") && e.contains("-15 ..= 15"),
            "{e}"
        );
        let mut hw = ina219();
        hw.clock_error_pct = Some(1.0);
        let e = hw.validate("power.sensors[0]").unwrap_err().to_string();
        assert!(e.contains("only kind 'sim'"), "{e}");
    }

    #[test]
    fn parses_toml_and_validates() {
        let text = r#"
            kind = "sim"
            chip = "ina3221"
            shunt_ohms = [0.01, 0.02, 0.05]
            conversion_us = 140
            rails = ["VDD_IN", "VDD_CPU", "VDD_SOC"]
            total_rail = "VDD_IN"
            load = [{ source = "cpu", idle_w = 2.5, max_w = 6.0, bus_v = 5.0 },
                    { source = "constant", current_a = 0.4, bus_v = 5.0 },
                    { source = "square", low_a = 0.1, high_a = 0.5, period_ms = 100.0, bus_v = 5.0 }]
            faults = [{ kind = "nack", at_ms = 500, every_ms = 2000, count = 2 }]
        "#;
        let s: SensorSpec = toml::from_str(text).expect("parses");
        assert_eq!(s.chip, Some(ChipKind::Ina3221));
        assert_eq!(s.shunt_ohms.as_ref().and_then(|x| x.channel(2)), Some(0.05));
        assert_eq!(s.faults[0].kind, FaultKind::Nack);
        s.validate("power.sensors[1]").expect("valid");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<SensorSpec>("kind = \"ina219\"\nshunt_ohm = 0.1\n").unwrap_err();
        assert!(err.to_string().contains("shunt_ohm"), "{err}");
    }

    #[test]
    fn address_error_names_key_value_and_range() {
        let mut s = ina219();
        s.address = Some(0x50);
        let e = s.validate("power.sensors[0]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value '0x50' for power.sensors[0].address: expected 0x40..=0x4f"
        );
    }

    #[test]
    fn ina219_limits() {
        let mut s = ina219();
        s.adc_bits = Some(13);
        assert!(
            matches!(s.validate("p").unwrap_err(), SpecError::Invalid { key, .. } if key == "p.adc_bits")
        );
        let mut s = ina219();
        s.max_current_a = Some(4.0); // 320 mV / 0.1 Ω = 3.2 A
        let e = s.validate("p").unwrap_err().to_string();
        assert!(e.contains("'4'") && e.contains("3.200"), "{e}");
        let mut s = ina219();
        s.pga_mv = Some(100);
        assert!(s
            .validate("p")
            .unwrap_err()
            .to_string()
            .contains("40, 80, 160 or 320"));
        let mut s = ina219();
        s.bus = None;
        assert_eq!(
            s.validate("power.sensors[2]").unwrap_err().to_string(),
            "missing power.sensors[2].bus: required for kind 'ina219' (an I2C device such as \"/dev/i2c-1\")"
        );
    }

    #[test]
    fn ina3221_limits() {
        let mut s = ina219();
        s.kind = SensorKind::Ina3221;
        s.max_current_a = None;
        s.adc_bits = None;
        s.rails = vec!["A".into(), "B".into()];
        s.total = None;
        s.shunt_ohms = Some(ShuntOhms::PerChannel(vec![0.1]));
        assert!(s
            .validate("p")
            .unwrap_err()
            .to_string()
            .contains("one value per channel (2)"));
        s.shunt_ohms = Some(ShuntOhms::PerChannel(vec![0.1, 0.0001]));
        let e = s.validate("p").unwrap_err().to_string();
        assert!(
            e.contains("p.shunt_ohms[1]") && e.contains("'0.0001'"),
            "{e}"
        );
        s.shunt_ohms = Some(ShuntOhms::One(0.1));
        s.conversion_us = Some(150);
        assert!(s
            .validate("p")
            .unwrap_err()
            .to_string()
            .contains("140, 204"));
        s.conversion_us = Some(140);
        s.address = Some(0x44);
        assert!(s
            .validate("p")
            .unwrap_err()
            .to_string()
            .contains("0x40..=0x43"));
        s.address = Some(0x41);
        s.validate("p").expect("valid");
    }

    #[test]
    fn sim_needs_a_load_per_channel() {
        let mut s = ina219();
        s.kind = SensorKind::Sim;
        s.chip = Some(ChipKind::Ina219);
        s.bus = None;
        s.address = None;
        let e = s.validate("power.sensors[3]").unwrap_err().to_string();
        assert!(e.starts_with("missing power.sensors[3].load"), "{e}");
        s.load = vec![LoadSpec::Constant {
            current_a: 0.5,
            bus_v: 40.0,
        }];
        let e = s.validate("power.sensors[3]").unwrap_err().to_string();
        assert!(
            e.contains("power.sensors[3].load[0].bus_v") && e.contains("'40'"),
            "{e}"
        );
    }
}
