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

    /// Checks every key against the chip's limits; `key_prefix` is the entry's path,
    /// e.g. `power.sensors[0]`, so errors name the full key.
    pub fn validate(&self, key_prefix: &str) -> Result<(), SpecError> {
        let key = |k: &str| format!("{key_prefix}.{k}");
        let kind_name = self.kind.as_str().to_string();
        let missing = |k: &str, expected: &str| SpecError::Missing {
            key: key(k),
            kind: kind_name.clone(),
            expected: expected.to_string(),
        };
        let invalid = |k: &str, value: String, expected: &str| SpecError::Invalid {
            key: key(k),
            value,
            expected: expected.to_string(),
        };

        if let Some(rate) = self.rate_hz {
            if !(rate > 0.0 && rate <= 20_000.0) {
                return Err(invalid("rate_hz", rate.to_string(), "0 < rate_hz <= 20000"));
            }
        }
        if let Some(khz) = self.bus_khz {
            if !(10..=3400).contains(&khz) {
                return Err(invalid("bus_khz", khz.to_string(), "10..=3400 kHz"));
            }
        }
        for (i, r) in self.rails.iter().enumerate() {
            if r.trim().is_empty() || r.len() > 64 {
                return Err(invalid(
                    &format!("rails[{i}]"),
                    r.clone(),
                    "a non-empty name of at most 64 characters",
                ));
            }
        }
        if let Some(t) = &self.total_rail {
            if !self.rails.is_empty() && !self.rails.contains(t) {
                return Err(invalid(
                    "total_rail",
                    t.clone(),
                    &format!("one of the rails {:?}", self.rails),
                ));
            }
        }

        let chip = match self.kind {
            SensorKind::Hwmon | SensorKind::Rapl | SensorKind::Pi5Pmic => {
                return self.validate_hwmon(key_prefix)
            }
            SensorKind::Sim => match self.chip {
                Some(c) => c,
                None => return Err(missing("chip", "chip = \"ina219\" or \"ina3221\"")),
            },
            SensorKind::Ina219 => ChipKind::Ina219,
            SensorKind::Ina3221 => ChipKind::Ina3221,
        };
        if self.kind != SensorKind::Sim {
            match &self.bus {
                None => return Err(missing("bus", "an I2C device such as \"/dev/i2c-1\"")),
                Some(b) if !b.starts_with("/dev/") => {
                    return Err(invalid("bus", b.clone(), "an I2C device path under /dev/"))
                }
                Some(_) => {}
            }
            if self.address.is_none() {
                return Err(missing("address", "a 7-bit address such as 0x40"));
            }
            if !self.load.is_empty() {
                return Err(invalid(
                    "load",
                    "[...]".into(),
                    "no load: only kind 'sim' takes one",
                ));
            }
            if !self.faults.is_empty() {
                return Err(invalid(
                    "faults",
                    "[...]".into(),
                    "no faults: only kind 'sim' takes them",
                ));
            }
            if let Some(e) = self.clock_error_pct {
                return Err(invalid(
                    "clock_error_pct",
                    e.to_string(),
                    "no clock_error_pct: only kind 'sim' takes one",
                ));
            }
        } else if let Some(e) = self.clock_error_pct {
            if !(-15.0..=15.0).contains(&e) {
                return Err(invalid("clock_error_pct", e.to_string(), "-15 ..= 15 (%)"));
            }
        }
        let addr_range = match chip {
            ChipKind::Ina219 => 0x40..=0x4F,
            ChipKind::Ina3221 => 0x40..=0x43,
        };
        if let Some(a) = self.address {
            if !addr_range.contains(&a) {
                return Err(invalid(
                    "address",
                    format!("{a:#04x}"),
                    &format!("{:#04x}..={:#04x}", addr_range.start(), addr_range.end()),
                ));
            }
        }
        let channels = self.channel_count();
        match &self.shunt_ohms {
            None => {
                return Err(missing(
                    "shunt_ohms",
                    "the shunt resistance in ohms, e.g. 0.1",
                ))
            }
            Some(s) => {
                let values: Vec<(String, f64)> = match s {
                    ShuntOhms::One(v) => vec![("shunt_ohms".into(), *v)],
                    ShuntOhms::PerChannel(v) => {
                        if chip == ChipKind::Ina219 && v.len() != 1 {
                            return Err(invalid(
                                "shunt_ohms",
                                format!("{v:?}"),
                                "one value (the INA219 has one channel)",
                            ));
                        }
                        if v.len() < channels {
                            return Err(invalid(
                                "shunt_ohms",
                                format!("{v:?}"),
                                &format!("one value per channel ({channels})"),
                            ));
                        }
                        v.iter()
                            .enumerate()
                            .map(|(i, x)| (format!("shunt_ohms[{i}]"), *x))
                            .collect()
                    }
                };
                for (k, v) in values {
                    // 1 mΩ … 100 Ω: below, the 10/40 µV LSB is tens of amps; above, the
                    // shunt is a resistor in series with the load, not a sense element.
                    if !(0.001..=100.0).contains(&v) {
                        return Err(invalid(&k, v.to_string(), "0.001..=100 ohms"));
                    }
                }
            }
        }
        if self.rails.len() > 3 && chip == ChipKind::Ina3221 {
            return Err(invalid(
                "rails",
                format!("{:?}", self.rails),
                "1 to 3 names (INA3221 channels 1..=3)",
            ));
        }
        if self.rails.len() > 1 && chip == ChipKind::Ina219 {
            return Err(invalid(
                "rails",
                format!("{:?}", self.rails),
                "one name (the INA219 has one channel)",
            ));
        }
        if self.total == Some(true) && self.rails.len() > 1 && self.total_rail.is_none() {
            return Err(invalid(
                "total",
                "true".into(),
                "total_rail = \"NAME\" on a sensor with several rails",
            ));
        }

        match chip {
            ChipKind::Ina219 => {
                if let Some(bits) = self.adc_bits {
                    if !(9..=12).contains(&bits) {
                        return Err(invalid("adc_bits", bits.to_string(), "9..=12"));
                    }
                }
                if let Some(avg) = self.averaging {
                    if !INA219_AVERAGING.contains(&avg) {
                        return Err(invalid(
                            "averaging",
                            avg.to_string(),
                            "1, 2, 4, 8, 16, 32, 64 or 128",
                        ));
                    }
                    if avg > 1 && self.adc_bits.is_some_and(|b| b != 12) {
                        return Err(invalid(
                            "averaging",
                            avg.to_string(),
                            "1 unless adc_bits = 12 (the INA219 averages 12-bit samples only)",
                        ));
                    }
                }
                if let Some(p) = self.pga_mv {
                    if ![40, 80, 160, 320].contains(&p) {
                        return Err(invalid("pga_mv", p.to_string(), "40, 80, 160 or 320"));
                    }
                }
                if let Some(r) = self.bus_range_v {
                    if r != 16 && r != 32 {
                        return Err(invalid("bus_range_v", r.to_string(), "16 or 32"));
                    }
                }
                if self.conversion_us.is_some() {
                    return Err(invalid(
                        "conversion_us",
                        format!("{:?}", self.conversion_us.unwrap_or_default()),
                        "absent on the INA219 (set adc_bits and averaging)",
                    ));
                }
                if let Some(i) = self.max_current_a {
                    let shunt = self
                        .shunt_ohms
                        .as_ref()
                        .and_then(|s| s.channel(0))
                        .unwrap_or(0.1);
                    let pga_v = f64::from(self.pga_mv.unwrap_or(320)) / 1000.0;
                    let max_possible = pga_v / shunt;
                    if !(i > 0.0 && i <= max_possible * 1.0001) {
                        return Err(invalid(
                            "max_current_a",
                            i.to_string(),
                            &format!(
                                "0 < max_current_a <= {max_possible:.3} (pga_mv / shunt_ohms)"
                            ),
                        ));
                    }
                }
            }
            ChipKind::Ina3221 => {
                if let Some(avg) = self.averaging {
                    if !INA3221_AVERAGING.contains(&avg) {
                        return Err(invalid(
                            "averaging",
                            avg.to_string(),
                            "1, 4, 16, 64, 128, 256, 512 or 1024",
                        ));
                    }
                }
                if let Some(ct) = self.conversion_us {
                    if !INA3221_CONVERSION_US.contains(&ct) {
                        return Err(invalid(
                            "conversion_us",
                            ct.to_string(),
                            "140, 204, 332, 588, 1100, 2116, 4156 or 8244",
                        ));
                    }
                }
                for (k, present) in [
                    ("adc_bits", self.adc_bits.is_some()),
                    ("pga_mv", self.pga_mv.is_some()),
                    ("bus_range_v", self.bus_range_v.is_some()),
                    ("max_current_a", self.max_current_a.is_some()),
                ] {
                    if present {
                        return Err(invalid(
                            k,
                            "set".into(),
                            "absent on the INA3221 (fixed 163.84 mV / 26 V ranges)",
                        ));
                    }
                }
            }
        }

        if self.kind == SensorKind::Sim {
            if self.load.len() < channels {
                return Err(missing(
                    "load",
                    &format!("one load per channel ({channels}), e.g. {{ source = \"constant\", current_a = 0.5, bus_v = 5.0 }}"),
                ));
            }
            for (i, l) in self.load.iter().enumerate() {
                validate_load(l, &key(&format!("load[{i}]")))?;
            }
            for (i, f) in self.faults.iter().enumerate() {
                let k = key(&format!("faults[{i}]"));
                if f.every_ms == Some(0) {
                    return Err(SpecError::Invalid {
                        key: format!("{k}.every_ms"),
                        value: "0".into(),
                        expected: "at least 1 ms".into(),
                    });
                }
                if let Some(c) = f.count {
                    if !(1..=1000).contains(&c) {
                        return Err(SpecError::Invalid {
                            key: format!("{k}.count"),
                            value: c.to_string(),
                            expected: "1..=1000".into(),
                        });
                    }
                }
                if let Some(d) = f.duration_ms {
                    if !(1..=60_000).contains(&d) {
                        return Err(SpecError::Invalid {
                            key: format!("{k}.duration_ms"),
                            value: d.to_string(),
                            expected: "1..=60000".into(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_hwmon(&self, key_prefix: &str) -> Result<(), SpecError> {
        let key = |k: &str| format!("{key_prefix}.{k}");
        for (k, present) in [
            ("address", self.address.is_some()),
            ("shunt_ohms", self.shunt_ohms.is_some()),
            ("adc_bits", self.adc_bits.is_some()),
            ("conversion_us", self.conversion_us.is_some()),
            ("chip", self.chip.is_some()),
            ("load", !self.load.is_empty()),
            ("faults", !self.faults.is_empty()),
            ("clock_error_pct", self.clock_error_pct.is_some()),
        ] {
            if present {
                return Err(SpecError::Invalid {
                    key: key(k),
                    value: "set".into(),
                    expected: format!(
                        "absent for kind '{}' (the kernel driver or firmware owns the chip settings)",
                        self.kind.as_str()
                    ),
                });
            }
        }
        let only_for = |k: &str, present: bool, kind: SensorKind| {
            (present && self.kind != kind).then(|| SpecError::Invalid {
                key: key(k),
                value: "set".into(),
                expected: format!("only for kind '{}'", kind.as_str()),
            })
        };
        if let Some(e) = [
            only_for("hwmon_name", self.hwmon_name.is_some(), SensorKind::Hwmon),
            only_for("vcgencmd", self.vcgencmd.is_some(), SensorKind::Pi5Pmic),
            only_for("vcio", self.vcio.is_some(), SensorKind::Pi5Pmic),
        ]
        .into_iter()
        .flatten()
        .next()
        {
            return Err(e);
        }
        if self.kind == SensorKind::Pi5Pmic {
            if let Some(rate) = self.rate_hz.filter(|&r| r > super::pi5pmic::MAX_RATE_HZ) {
                return Err(SpecError::Invalid {
                    key: key("rate_hz"),
                    value: rate.to_string(),
                    expected: "at most 40 Hz for kind 'pi5-pmic' (one pmic_read_adc takes ~23 ms)"
                        .into(),
                });
            }
            for (i, r) in self.rails.iter().enumerate() {
                let known = super::pi5pmic::parse::PMIC_RAILS.contains(&r.as_str());
                if !known && r != super::pi5pmic::PMIC_TOTAL {
                    return Err(SpecError::Invalid {
                        key: key(&format!("rails[{i}]")),
                        value: r.clone(),
                        expected: format!(
                            "a PMIC rail: one of {:?} or \"PMIC_TOTAL\"",
                            super::pi5pmic::parse::PMIC_RAILS
                        ),
                    });
                }
            }
        }
        if let Some(n) = &self.hwmon_name {
            if n.is_empty() || n.contains('/') {
                return Err(SpecError::Invalid {
                    key: key("hwmon_name"),
                    value: n.clone(),
                    expected: "a hwmon device name such as \"ina3221\"".into(),
                });
            }
        }
        Ok(())
    }
}

fn validate_load(l: &LoadSpec, k: &str) -> Result<(), SpecError> {
    let bad = |field: &str, v: f64, expected: &str| SpecError::Invalid {
        key: format!("{k}.{field}"),
        value: v.to_string(),
        expected: expected.to_string(),
    };
    let bus = match l {
        LoadSpec::Constant { current_a, bus_v } => {
            if !current_a.is_finite() || current_a.abs() > 100.0 {
                return Err(bad("current_a", *current_a, "-100..=100 A"));
            }
            *bus_v
        }
        LoadSpec::Square {
            low_a,
            high_a,
            period_ms,
            duty,
            bus_v,
        } => {
            for (f, v) in [("low_a", low_a), ("high_a", high_a)] {
                if !v.is_finite() || v.abs() > 100.0 {
                    return Err(bad(f, *v, "-100..=100 A"));
                }
            }
            if !(*period_ms >= 0.01 && *period_ms <= 3_600_000.0) {
                return Err(bad("period_ms", *period_ms, "0.01..=3600000 ms"));
            }
            if let Some(d) = duty {
                if !(0.0..=1.0).contains(d) {
                    return Err(bad("duty", *d, "0..=1"));
                }
            }
            *bus_v
        }
        LoadSpec::Trace { path, bus_v } => {
            if path.is_empty() {
                return Err(SpecError::Invalid {
                    key: format!("{k}.path"),
                    value: String::new(),
                    expected: "a CSV file path".into(),
                });
            }
            *bus_v
        }
        LoadSpec::Cpu {
            idle_w,
            max_w,
            bus_v,
        } => {
            if !(*idle_w >= 0.0 && *idle_w <= 1000.0) {
                return Err(bad("idle_w", *idle_w, "0..=1000 W"));
            }
            if !(*max_w >= *idle_w && *max_w <= 1000.0) {
                return Err(bad("max_w", *max_w, "idle_w..=1000 W"));
            }
            *bus_v
        }
    };
    if !(bus > 0.0 && bus <= 36.0) {
        return Err(bad("bus_v", bus, "0 < bus_v <= 36 V"));
    }
    Ok(())
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
