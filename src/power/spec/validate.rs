//! Validation of one `[[power.sensors]]` entry: every key against its kind's and its
//! chip's limits, with errors that name the full key, the value and what is allowed.

use super::*;

impl SensorSpec {
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
            if let Some(rate) = self
                .rate_hz
                .filter(|&r| r > crate::power::pi5pmic::MAX_RATE_HZ)
            {
                return Err(SpecError::Invalid {
                    key: key("rate_hz"),
                    value: rate.to_string(),
                    expected: "at most 40 Hz for kind 'pi5-pmic' (one pmic_read_adc takes ~23 ms)"
                        .into(),
                });
            }
            for (i, r) in self.rails.iter().enumerate() {
                let known = crate::power::pi5pmic::parse::PMIC_RAILS.contains(&r.as_str());
                if !known && r != crate::power::pi5pmic::PMIC_TOTAL {
                    return Err(SpecError::Invalid {
                        key: key(&format!("rails[{i}]")),
                        value: r.clone(),
                        expected: format!(
                            "a PMIC rail: one of {:?} or \"PMIC_TOTAL\"",
                            crate::power::pi5pmic::parse::PMIC_RAILS
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
