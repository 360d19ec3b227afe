//! Builds sensors from `[[power.sensors]]`: the one place that opens
//! `linux_embedded_hal::I2cdev`.

use std::path::Path;

use linux_embedded_hal::I2cdev;

use super::hwmon::HwmonSensor;
use super::ina219::{self, Adc, BusRange, Ina219, Pga};
use super::ina3221::{self, Averaging, ConversionTime, Ina3221};
use super::pi5pmic::{self, Pi5PmicSensor, PmicOptions};
use super::rapl::RaplSensor;
use super::sensor::{Ina219Sensor, Ina3221Sensor, Sensor};
use super::sim::ina219::Ina219Model;
use super::sim::ina3221::Ina3221Model;
use super::sim::load::Load;
use super::sim::{FaultSchedule, SimI2c};
use super::spec::{ChipKind, SensorKind, SensorSpec};
use super::{PowerError, RailInfo};
use crate::clock::monotonic_ns;

/// A built sensor and the sampler thread it belongs to (one per I2C bus).
pub struct BuiltSensor {
    /// Thread key: the bus path, `sim:<bus>`, or `hwmon:<index>`.
    pub group: String,
    /// The sensor.
    pub sensor: Box<dyn Sensor>,
}

/// Opens an I2C bus device.
pub fn open_i2c(bus: &str) -> Result<I2cdev, PowerError> {
    I2cdev::new(bus).map_err(|e| PowerError::Open {
        bus: bus.to_string(),
        message: e.to_string(),
    })
}

fn ohms_to_uohm(ohms: f64) -> u32 {
    (ohms * 1e6).round().clamp(1.0, f64::from(u32::MAX)) as u32
}

fn ina219_config(spec: &SensorSpec) -> ina219::Config {
    let adc = Adc::from_settings(spec.adc_bits.unwrap_or(12), spec.averaging.unwrap_or(1))
        .unwrap_or_default();
    ina219::Config {
        bus_range: if spec.bus_range_v == Some(16) {
            BusRange::V16
        } else {
            BusRange::V32
        },
        pga: spec.pga_mv.and_then(Pga::from_mv).unwrap_or_default(),
        bus_adc: adc,
        shunt_adc: adc,
        mode: ina219::Mode::ShuntBusContinuous,
    }
}

fn ina3221_config(spec: &SensorSpec) -> ina3221::Config {
    let ct = spec
        .conversion_us
        .and_then(ConversionTime::from_us)
        .unwrap_or_default();
    let n = spec.channel_count();
    ina3221::Config {
        channels: [n >= 1, n >= 2, n >= 3],
        averaging: spec
            .averaging
            .and_then(Averaging::from_count)
            .unwrap_or_default(),
        bus_ct: ct,
        shunt_ct: ct,
        mode: 7,
    }
}

fn rail_infos(spec: &SensorSpec, source: &str, simulated: bool) -> Vec<RailInfo> {
    (0..spec.channel_count())
        .map(|i| {
            let name = spec
                .rails
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("{source}:ch{}", i + 1));
            let total = match &spec.total_rail {
                Some(t) => *t == name,
                None => spec.total == Some(true) && i == 0,
            };
            RailInfo {
                name,
                total,
                source: source.to_string(),
                simulated,
            }
        })
        .collect()
}

fn shunts(spec: &SensorSpec) -> [u32; 3] {
    [0, 1, 2].map(|i| {
        ohms_to_uohm(
            spec.shunt_ohms
                .as_ref()
                .and_then(|s| s.channel(i))
                .unwrap_or(0.1),
        )
    })
}

fn max_current_ua(spec: &SensorSpec) -> u64 {
    let shunt = spec
        .shunt_ohms
        .as_ref()
        .and_then(|s| s.channel(0))
        .unwrap_or(0.1);
    let pga_v = f64::from(spec.pga_mv.unwrap_or(320)) / 1000.0;
    let amps = spec.max_current_a.unwrap_or(pga_v / shunt);
    (amps * 1e6) as u64
}

/// Builds one sensor (validated first; `index` names it in errors).
pub fn build_one(spec: &SensorSpec, index: usize) -> Result<BuiltSensor, PowerError> {
    let prefix = format!("power.sensors[{index}]");
    spec.validate(&prefix).map_err(PowerError::Spec)?;
    let address = spec.address.unwrap_or(0x40) as u8;
    let init_err = |message: String| PowerError::Init {
        sensor: prefix.clone(),
        message,
    };
    match spec.kind {
        SensorKind::Hwmon => {
            let root = spec.sysfs_root.clone().unwrap_or_else(|| "/".into());
            // `total = true` on a one-rail entry names that rail the total.
            let total_rail = spec.total_rail.clone().or_else(|| {
                (spec.total == Some(true))
                    .then(|| spec.rails.first().cloned())
                    .flatten()
            });
            let s = HwmonSensor::open(
                Path::new(&root),
                spec.hwmon_name.as_deref(),
                &spec.rails,
                total_rail.as_deref(),
                spec.rate_hz,
            )
            .map_err(|e| init_err(e.to_string()))?;
            Ok(BuiltSensor {
                group: format!("hwmon:{index}"),
                sensor: Box::new(s),
            })
        }
        SensorKind::Rapl => {
            let root = spec.sysfs_root.clone().unwrap_or_else(|| "/".into());
            let s = RaplSensor::open(Path::new(&root), &spec.rails, spec.rate_hz)
                .map_err(|e| init_err(e.to_string()))?;
            Ok(BuiltSensor {
                group: format!("rapl:{index}"),
                sensor: Box::new(s),
            })
        }
        SensorKind::Pi5Pmic => {
            let opts = PmicOptions {
                vcio: spec.vcio.as_ref().map(Into::into),
                vcgencmd: spec.vcgencmd.as_ref().map(Into::into),
                rails: spec.rails.clone(),
                // The PMIC sum is the board total only on the operator's say-so.
                total: spec.total == Some(true)
                    || spec.total_rail.as_deref() == Some(pi5pmic::PMIC_TOTAL),
                rate_hz: spec.rate_hz,
            };
            let gencmd = pi5pmic::transport(&opts).map_err(|e| init_err(e.to_string()))?;
            Ok(BuiltSensor {
                group: format!("pi5-pmic:{index}"),
                sensor: Box::new(Pi5PmicSensor::new(gencmd, &opts)),
            })
        }
        SensorKind::Ina219 | SensorKind::Ina3221 => {
            let bus = spec.bus.clone().unwrap_or_default();
            let i2c = open_i2c(&bus)?;
            let location = format!("{bus}:{address:#04x}");
            let sensor: Box<dyn Sensor> = if spec.kind == SensorKind::Ina219 {
                let source = format!("ina219@{location}");
                let drv = Ina219::new(
                    i2c,
                    address,
                    shunts(spec)[0],
                    max_current_ua(spec),
                    ina219_config(spec),
                )
                .map_err(|e| init_err(e.to_string()))?;
                let rail = rail_infos(spec, &source, false).remove(0);
                Box::new(Ina219Sensor::new(drv, rail, location, None))
            } else {
                let source = format!("ina3221@{location}");
                let drv = Ina3221::new(i2c, address, shunts(spec), ina3221_config(spec))
                    .map_err(|e| init_err(e.to_string()))?;
                Box::new(Ina3221Sensor::new(
                    drv,
                    rail_infos(spec, &source, false),
                    location,
                    None,
                ))
            };
            Ok(BuiltSensor { group: bus, sensor })
        }
        SensorKind::Sim => {
            let now = monotonic_ns();
            let bus_label = spec.bus.clone().unwrap_or_else(|| "sim".into());
            let location = if bus_label.starts_with("sim") {
                format!("{bus_label}:{address:#04x}")
            } else {
                format!("sim:{bus_label}:{address:#04x}")
            };
            let khz = spec.bus_khz.unwrap_or(400);
            let faults = FaultSchedule::new(&spec.faults, now);
            let mut loads = Vec::new();
            for l in &spec.load {
                loads.push(Load::from_spec(l, now).map_err(|e| init_err(e.to_string()))?);
            }
            let mut loads = loads.into_iter();
            let sensor: Box<dyn Sensor> = match spec.chip.unwrap_or(ChipKind::Ina219) {
                ChipKind::Ina219 => {
                    let shunt_ohms = spec
                        .shunt_ohms
                        .as_ref()
                        .and_then(|s| s.channel(0))
                        .unwrap_or(0.1);
                    let load = loads.next().ok_or_else(|| init_err("no load".into()))?;
                    let sim = SimI2c::new(
                        Ina219Model::new(shunt_ohms, load, now)
                            .with_clock_error_pct(spec.clock_error_pct.unwrap_or(0.0)),
                        address,
                        khz,
                        faults,
                    );
                    let counters = sim.counters();
                    let source = format!("ina219@{location}");
                    let drv = Ina219::new(
                        sim,
                        address,
                        shunts(spec)[0],
                        max_current_ua(spec),
                        ina219_config(spec),
                    )
                    .map_err(|e| init_err(e.to_string()))?;
                    let rail = rail_infos(spec, &source, true).remove(0);
                    Box::new(Ina219Sensor::new(drv, rail, location, Some(counters)))
                }
                ChipKind::Ina3221 => {
                    let ohms = [0, 1, 2].map(|i| {
                        spec.shunt_ohms
                            .as_ref()
                            .and_then(|s| s.channel(i))
                            .unwrap_or(0.1)
                    });
                    let model_loads = [loads.next(), loads.next(), loads.next()];
                    let sim = SimI2c::new(
                        Ina3221Model::new(ohms, model_loads, now)
                            .with_clock_error_pct(spec.clock_error_pct.unwrap_or(0.0)),
                        address,
                        khz,
                        faults,
                    );
                    let counters = sim.counters();
                    let source = format!("ina3221@{location}");
                    let drv = Ina3221::new(sim, address, shunts(spec), ina3221_config(spec))
                        .map_err(|e| init_err(e.to_string()))?;
                    Box::new(Ina3221Sensor::new(
                        drv,
                        rail_infos(spec, &source, true),
                        location,
                        Some(counters),
                    ))
                }
            };
            Ok(BuiltSensor {
                group: format!("sim:{bus_label}"),
                sensor,
            })
        }
    }
}

/// Builds every configured sensor.
pub fn build(specs: &[SensorSpec]) -> Result<Vec<BuiltSensor>, PowerError> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| build_one(s, i))
        .collect()
}
