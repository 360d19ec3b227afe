//! The `Sensor` trait the sampler drives, and its INA219 / INA3221 implementations
//! over any `embedded_hal::i2c::I2c` (a real `/dev/i2c-N` or a simulator).

use std::collections::BTreeMap;
use std::sync::Arc;

use embedded_hal::i2c::{ErrorKind as I2cErrorKind, I2c};
use serde::Serialize;

use super::ina219::{self, Ina219};
use super::ina3221::{self, Ina3221};
use super::sim::SimCounters;
use super::RailInfo;
use super::Sample;
use crate::clock::monotonic_ns;

/// Why a read failed, for counting errors by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The address was not acknowledged.
    Nack,
    /// Bus error (misplaced START/STOP) or overrun.
    Bus,
    /// Arbitration lost.
    Arbitration,
    /// The transaction timed out (stuck bus, clock stretching).
    Timeout,
    /// Registers back at power-on values.
    BrownOut,
    /// The device is not the chip configured.
    IdMismatch,
    /// The chip did not keep its configuration.
    Config,
    /// A sysfs read failed.
    Io,
    /// A sysfs value did not parse.
    Parse,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Stable lowercase name (stats keys, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Nack => "nack",
            ErrorKind::Bus => "bus",
            ErrorKind::Arbitration => "arbitration",
            ErrorKind::Timeout => "timeout",
            ErrorKind::BrownOut => "brown_out",
            ErrorKind::IdMismatch => "id_mismatch",
            ErrorKind::Config => "config",
            ErrorKind::Io => "io",
            ErrorKind::Parse => "parse",
            ErrorKind::Other => "other",
        }
    }
}

/// A sensor read or set-up failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{sensor}: {message}")]
pub struct SensorError {
    /// Classification.
    pub kind: ErrorKind,
    /// Which sensor (its `describe` location).
    pub sensor: String,
    /// What happened, for operators.
    pub message: String,
}

/// An I2C transaction longer than this that fails is a timeout (Linux adapters report
/// ETIMEDOUT as `ErrorKind::Other`; telling it apart by duration is what is left).
const TIMEOUT_NS: u64 = 5_000_000;

/// Classifies a bus error, using how long the failed transaction took.
pub fn classify_i2c(kind: I2cErrorKind, elapsed_ns: u64) -> ErrorKind {
    match kind {
        I2cErrorKind::NoAcknowledge(_) => ErrorKind::Nack,
        I2cErrorKind::Bus | I2cErrorKind::Overrun => ErrorKind::Bus,
        I2cErrorKind::ArbitrationLoss => ErrorKind::Arbitration,
        _ if elapsed_ns >= TIMEOUT_NS => ErrorKind::Timeout,
        _ => ErrorKind::Other,
    }
}

/// What one `poll` saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollResult {
    /// A fresh conversion was read (samples were pushed).
    pub fresh: bool,
    /// Monotonic ns when the poll started.
    pub start_ns: u64,
    /// Monotonic ns right after the gating read (CNVR / CVRF / first sysfs file).
    pub gate_ns: u64,
}

/// A sensor as `describe()` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SensorInfo {
    /// `ina219`, `ina3221`, `hwmon:ina3221`, `iio:ina3221x`, …
    pub chip: String,
    /// `/dev/i2c-1:0x40`, `sim:0x40`, or the sysfs directory.
    pub location: String,
    /// Settings as written (or as the kernel reports them).
    pub settings: BTreeMap<String, String>,
    /// Produced by a simulator.
    pub simulated: bool,
    /// Time between fresh conversions, µs (hwmon: the polling period).
    pub conversion_period_us: f64,
    /// Whether freshness is known from the chip (CNVR/CVRF) or inferred (hwmon).
    pub gated: bool,
    /// Rail names, in order.
    pub rails: Vec<String>,
}

/// What the sampler drives. One value per physical (or simulated) sensor; rail
/// indices in pushed samples are local (0..rails().len()).
pub trait Sensor: Send {
    /// The rails this sensor measures.
    fn rails(&self) -> Vec<RailInfo>;
    /// Description for `describe()` / `edgewatt sensors`.
    fn info(&self) -> SensorInfo;
    /// Expected time between fresh results, ns.
    fn period_ns(&self) -> u64;
    /// True when the chip flags fresh results (CNVR/CVRF).
    fn gated(&self) -> bool;
    /// (Re-)initialises the device.
    fn init(&mut self) -> Result<(), SensorError>;
    /// Reads if fresh data is ready, appending one sample per rail to `out`.
    fn poll(&mut self, out: &mut Vec<Sample>) -> Result<PollResult, SensorError>;
    /// Cheap periodic check that the device still holds its settings (brown-out).
    fn health_check(&mut self) -> Result<(), SensorError>;
    /// A simulator's counters, if this is one.
    fn sim_counters(&self) -> Option<Arc<SimCounters>> {
        None
    }
}

fn i2c_err<E: embedded_hal::i2c::Error>(sensor: &str, e: &E, elapsed_ns: u64) -> SensorError {
    SensorError {
        kind: classify_i2c(e.kind(), elapsed_ns),
        sensor: sensor.to_string(),
        message: format!("i2c error: {:?}", e.kind()),
    }
}

/// A driver error that is not a bus error, as `kind`.
fn chip_err(sensor: &str, kind: ErrorKind, e: &impl std::fmt::Display) -> SensorError {
    SensorError {
        kind,
        sensor: sensor.into(),
        message: e.to_string(),
    }
}

fn ina219_err<E: embedded_hal::i2c::Error>(
    sensor: &str,
    e: ina219::Error<E>,
    elapsed_ns: u64,
) -> SensorError {
    match e {
        ina219::Error::I2c(e) => i2c_err(sensor, &e, elapsed_ns),
        ina219::Error::BrownOut { .. } => chip_err(sensor, ErrorKind::BrownOut, &e),
        other => chip_err(sensor, ErrorKind::Config, &other),
    }
}

fn ina3221_err<E: embedded_hal::i2c::Error>(
    sensor: &str,
    e: ina3221::Error<E>,
    elapsed_ns: u64,
) -> SensorError {
    match e {
        ina3221::Error::I2c(e) => i2c_err(sensor, &e, elapsed_ns),
        ina3221::Error::BrownOut { .. } => chip_err(sensor, ErrorKind::BrownOut, &e),
        ina3221::Error::IdMismatch { .. } => chip_err(sensor, ErrorKind::IdMismatch, &e),
        other => chip_err(sensor, ErrorKind::Config, &other),
    }
}

/// An INA219 as a sampler `Sensor`.
pub struct Ina219Sensor<I2C> {
    drv: Ina219<I2C>,
    rail: RailInfo,
    location: String,
    sim: Option<Arc<SimCounters>>,
}

impl<I2C: I2c> Ina219Sensor<I2C> {
    /// Maps a driver error, with the time since `since_ns` (a long call is a timeout).
    fn err_since(
        &self,
        since_ns: u64,
    ) -> impl FnOnce(ina219::Error<I2C::Error>) -> SensorError + '_ {
        move |e| ina219_err(&self.location, e, monotonic_ns() - since_ns)
    }

    /// Wraps a driver (not yet initialised).
    pub fn new(
        drv: Ina219<I2C>,
        rail: RailInfo,
        location: String,
        sim: Option<Arc<SimCounters>>,
    ) -> Self {
        Ina219Sensor {
            drv,
            rail,
            location,
            sim,
        }
    }
}

impl<I2C: I2c + Send> Sensor for Ina219Sensor<I2C> {
    fn rails(&self) -> Vec<RailInfo> {
        vec![self.rail.clone()]
    }

    fn info(&self) -> SensorInfo {
        let c = self.drv.config();
        let mut settings = BTreeMap::new();
        settings.insert("address".into(), format!("{:#04x}", self.drv.address()));
        settings.insert("config".into(), format!("{:#06x}", c.bits()));
        settings.insert(
            "bus_range_mv".into(),
            c.bus_range.full_scale_mv().to_string(),
        );
        settings.insert("pga_uv".into(), c.pga.full_scale_uv().to_string());
        settings.insert("bus_adc".into(), format!("{:?}", c.bus_adc));
        settings.insert("shunt_adc".into(), format!("{:?}", c.shunt_adc));
        settings.insert("mode".into(), format!("{:?}", c.mode));
        settings.insert(
            "calibration".into(),
            self.drv.calibration_value().to_string(),
        );
        settings.insert(
            "current_lsb_na".into(),
            self.drv.current_lsb_na().to_string(),
        );
        SensorInfo {
            chip: "ina219".into(),
            location: self.location.clone(),
            settings,
            simulated: self.rail.simulated,
            conversion_period_us: c.conversion_period_ns() as f64 / 1000.0,
            gated: true,
            rails: vec![self.rail.name.clone()],
        }
    }

    fn period_ns(&self) -> u64 {
        self.drv.config().conversion_period_ns()
    }

    fn gated(&self) -> bool {
        true
    }

    fn init(&mut self) -> Result<(), SensorError> {
        let t = monotonic_ns();
        self.drv.init().map_err(self.err_since(t))
    }

    fn poll(&mut self, out: &mut Vec<Sample>) -> Result<PollResult, SensorError> {
        let start_ns = monotonic_ns();
        let ready = self.drv.poll_ready().map_err(self.err_since(start_ns))?;
        let gate_ns = monotonic_ns();
        let Some(bus) = ready else {
            return Ok(PollResult {
                fresh: false,
                start_ns,
                gate_ns,
            });
        };
        let r = self
            .drv
            .read_after_ready(bus)
            .map_err(self.err_since(gate_ns))?;
        let t_after_ns = monotonic_ns();
        // Brown-out shows first as a zero power register (calibration back to 0)
        // while shunt and bus say power flows; confirm with the registers.
        let lsb_uw = 20 * self.drv.current_lsb_na() as i64 / 1000;
        if r.power_register_uw == 0 && r.power_uw.abs() > 4 * lsb_uw.max(1) {
            self.health_check()?;
        }
        out.push(Sample {
            t_before_ns: start_ns,
            t_after_ns,
            rail: 0,
            bus_mv: r.bus_mv,
            current_ua: r.current_ua,
            power_uw: r.power_uw,
        });
        Ok(PollResult {
            fresh: true,
            start_ns,
            gate_ns,
        })
    }

    fn health_check(&mut self) -> Result<(), SensorError> {
        let t = monotonic_ns();
        self.drv.check_brown_out().map_err(self.err_since(t))
    }

    fn sim_counters(&self) -> Option<Arc<SimCounters>> {
        self.sim.clone()
    }
}

/// An INA3221 as a sampler `Sensor`; rails are the enabled channels in order.
pub struct Ina3221Sensor<I2C> {
    drv: Ina3221<I2C>,
    rails: Vec<RailInfo>,
    location: String,
    sim: Option<Arc<SimCounters>>,
}

impl<I2C: I2c> Ina3221Sensor<I2C> {
    /// Maps a driver error, with the time since `since_ns` (a long call is a timeout).
    fn err_since(
        &self,
        since_ns: u64,
    ) -> impl FnOnce(ina3221::Error<I2C::Error>) -> SensorError + '_ {
        move |e| ina3221_err(&self.location, e, monotonic_ns() - since_ns)
    }

    /// Wraps a driver; `rails` has one entry per enabled channel, in channel order.
    pub fn new(
        drv: Ina3221<I2C>,
        rails: Vec<RailInfo>,
        location: String,
        sim: Option<Arc<SimCounters>>,
    ) -> Self {
        Ina3221Sensor {
            drv,
            rails,
            location,
            sim,
        }
    }
}

impl<I2C: I2c + Send> Sensor for Ina3221Sensor<I2C> {
    fn rails(&self) -> Vec<RailInfo> {
        self.rails.clone()
    }

    fn info(&self) -> SensorInfo {
        let c = self.drv.config();
        let mut settings = BTreeMap::new();
        settings.insert("address".into(), format!("{:#04x}", self.drv.address()));
        settings.insert("config".into(), format!("{:#06x}", c.bits()));
        settings.insert("channels".into(), format!("{:?}", c.channels));
        settings.insert("averaging".into(), c.averaging.count().to_string());
        settings.insert(
            "bus_conversion_us".into(),
            (c.bus_ct.ns() / 1000).to_string(),
        );
        settings.insert(
            "shunt_conversion_us".into(),
            (c.shunt_ct.ns() / 1000).to_string(),
        );
        settings.insert("mode".into(), c.mode.to_string());
        SensorInfo {
            chip: "ina3221".into(),
            location: self.location.clone(),
            settings,
            simulated: self.rails.iter().any(|r| r.simulated),
            conversion_period_us: c.conversion_period_ns() as f64 / 1000.0,
            gated: true,
            rails: self.rails.iter().map(|r| r.name.clone()).collect(),
        }
    }

    fn period_ns(&self) -> u64 {
        self.drv.config().conversion_period_ns()
    }

    fn gated(&self) -> bool {
        true
    }

    fn init(&mut self) -> Result<(), SensorError> {
        let t = monotonic_ns();
        self.drv.init().map_err(self.err_since(t))
    }

    fn poll(&mut self, out: &mut Vec<Sample>) -> Result<PollResult, SensorError> {
        let start_ns = monotonic_ns();
        let ready = self.drv.poll_ready().map_err(self.err_since(start_ns))?;
        let gate_ns = monotonic_ns();
        if !ready {
            return Ok(PollResult {
                fresh: false,
                start_ns,
                gate_ns,
            });
        }
        let channels = self.drv.read_channels().map_err(self.err_since(gate_ns))?;
        let t_after_ns = monotonic_ns();
        // CVRF was cleared *before* the data reads. If the next cycle completed while
        // they ran (the thread was late or preempted), part of what we read is that
        // newer cycle and CVRF is set again for it: the next gated read would return it
        // a second time. Reading Mask/Enable once more closes that window for good (a
        // cycle completing in the few µs after the last data read is lost instead,
        // counted as missed, never duplicated). One read per cycle.
        let t = monotonic_ns();
        self.drv.poll_ready().map_err(self.err_since(t))?;
        for (rail, r) in channels.iter().flatten().enumerate() {
            out.push(Sample {
                t_before_ns: start_ns,
                t_after_ns,
                rail: rail as u16,
                bus_mv: r.bus_mv,
                current_ua: r.current_ua,
                power_uw: r.power_uw,
            });
        }
        Ok(PollResult {
            fresh: true,
            start_ns,
            gate_ns,
        })
    }

    fn health_check(&mut self) -> Result<(), SensorError> {
        let t = monotonic_ns();
        self.drv.check_brown_out().map_err(self.err_since(t))
    }

    fn sim_counters(&self) -> Option<Arc<SimCounters>> {
        self.sim.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::NoAcknowledgeSource;

    #[test]
    fn classification() {
        assert_eq!(
            classify_i2c(I2cErrorKind::NoAcknowledge(NoAcknowledgeSource::Address), 0),
            ErrorKind::Nack
        );
        assert_eq!(classify_i2c(I2cErrorKind::Bus, 0), ErrorKind::Bus);
        assert_eq!(
            classify_i2c(I2cErrorKind::Other, 30_000_000),
            ErrorKind::Timeout
        );
        assert_eq!(classify_i2c(I2cErrorKind::Other, 100), ErrorKind::Other);
    }
}
