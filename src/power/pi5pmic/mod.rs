//! The Raspberry Pi 5's PMIC rails as a sampler `Sensor` (`kind = "pi5-pmic"`).
//!
//! - [`parse`]  — the `pmic_read_adc` reply → per-rail V and I
//! - [`gencmd`] — sending the request: the `/dev/vcio` mailbox, or `vcgencmd`
//!
//! Each rail (a configurable subset of [`parse::PMIC_RAILS`]) is recorded with its
//! voltage, current and V × I; `EXT5V` carries the 5 V input's voltage (power not
//! measured, recorded as 0). `PMIC_TOTAL` = Σ V × I is the SoC and memory rails, *not*
//! the board's input (USB devices, HATs, NVMe and the fan draw from 5 V before the
//! PMIC): it is a rail of its own, marked the total, only when the operator says so
//! (`total = true` or `total_rail = "PMIC_TOTAL"`); otherwise it is not recorded
//! separately and the summary's sum of the PMIC rails is that same Σ V × I (never
//! both, so nothing is counted twice).
//!
//! One request takes ~23 ms (the firmware's ADC sweep), so the rate is at most
//! ~40 Hz (`rate_hz` ≤ 40, default 20). Every sample of a request is timestamped
//! around the whole request.

pub mod gencmd;
pub mod parse;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::sensor::{ErrorKind, PollResult, Sensor, SensorError, SensorInfo};
use super::{RailInfo, Sample};
use crate::clock::monotonic_ns;
use gencmd::{Gencmd, Mailbox, VcgencmdProcess, Vcio};
use parse::PMIC_RAILS;

/// The computed total's rail name.
pub const PMIC_TOTAL: &str = "PMIC_TOTAL";
/// The input-voltage rail's name.
pub const EXT5V: &str = "EXT5V";
/// The gencmd that reads the PMIC's ADC.
pub const COMMAND: &str = "pmic_read_adc";
/// Highest useful rate, Hz: one read takes ~23 ms.
pub const MAX_RATE_HZ: f64 = 40.0;
/// Default rate, Hz.
pub const DEFAULT_RATE_HZ: f64 = 20.0;
/// What the source covers, for `edgewatt sensors` and results.
pub const COVERS: &str = "SoC and memory rails behind the PMIC (PMIC_TOTAL = sum of V*I); NOT the board's 5 V input (USB, HATs, NVMe, fan); EXT5V is the input voltage";

/// How to reach the firmware.
#[derive(Debug, Clone, Default)]
pub struct PmicOptions {
    /// Mailbox device; default `/dev/vcio`.
    pub vcio: Option<PathBuf>,
    /// `vcgencmd` to run when the mailbox is not there; default: found on PATH.
    pub vcgencmd: Option<PathBuf>,
    /// Rails to record (PMIC names), empty = all twelve.
    pub rails: Vec<String>,
    /// Record `PMIC_TOTAL` as a rail, marked the total (the operator's say-so).
    pub total: bool,
    /// Read rate, Hz.
    pub rate_hz: Option<f64>,
}

/// The mailbox if it opens, otherwise `vcgencmd`.
pub fn transport(opts: &PmicOptions) -> Result<Box<dyn Gencmd>, gencmd::GencmdError> {
    let dev = opts
        .vcio
        .clone()
        .unwrap_or_else(|| PathBuf::from("/dev/vcio"));
    match Vcio::open(&dev) {
        Ok(v) => Ok(Box::new(Mailbox::new(v))),
        Err(e) => {
            tracing::info!(device = %dev.display(), error = %e, "pi5-pmic: mailbox not available; running vcgencmd per read");
            Ok(Box::new(VcgencmdProcess::new(opts.vcgencmd.as_deref())?))
        }
    }
}

/// The PMIC as a sensor.
pub struct Pi5PmicSensor {
    gencmd: Box<dyn Gencmd>,
    /// The PMIC rails recorded, in order (then EXT5V, then PMIC_TOTAL if wanted).
    names: Vec<String>,
    rails: Vec<RailInfo>,
    total: bool,
    period_ns: u64,
}

impl Pi5PmicSensor {
    /// A sensor over `gencmd` (tests pass a fake device or script).
    pub fn new(gencmd: Box<dyn Gencmd>, opts: &PmicOptions) -> Self {
        let names: Vec<String> = if opts.rails.is_empty() {
            PMIC_RAILS.iter().map(|s| s.to_string()).collect()
        } else {
            opts.rails
                .iter()
                .filter(|r| *r != PMIC_TOTAL && *r != EXT5V)
                .cloned()
                .collect()
        };
        let source = format!("pi5-pmic@{}", gencmd.describe());
        let mut rails: Vec<RailInfo> = names
            .iter()
            .chain(std::iter::once(&EXT5V.to_string()))
            .map(|n| RailInfo {
                name: n.clone(),
                total: false,
                source: source.clone(),
                simulated: false,
            })
            .collect();
        if opts.total {
            rails.push(RailInfo {
                name: PMIC_TOTAL.into(),
                total: true,
                source,
                simulated: false,
            });
        }
        let rate = opts.rate_hz.unwrap_or(DEFAULT_RATE_HZ).min(MAX_RATE_HZ);
        Pi5PmicSensor {
            gencmd,
            names,
            rails,
            total: opts.total,
            period_ns: (1e9 / rate) as u64,
        }
    }

    fn err(&self, kind: ErrorKind, message: String) -> SensorError {
        SensorError {
            kind,
            sensor: format!("pi5-pmic@{}", self.gencmd.describe()),
            message,
        }
    }

    fn read(&mut self) -> Result<parse::PmicReading, SensorError> {
        let text = self
            .gencmd
            .request(COMMAND)
            .map_err(|e| self.err(ErrorKind::Io, e.to_string()))?;
        let r = parse::parse(&text).map_err(|e| self.err(ErrorKind::Parse, e.to_string()))?;
        if let Some(missing) = self.names.iter().find(|n| !r.rails.contains_key(*n)) {
            return Err(self.err(
                ErrorKind::Parse,
                format!(
                    "rail '{missing}' is not in the pmic_read_adc reply (rails there: {:?})",
                    r.rails.keys().collect::<Vec<_>>()
                ),
            ));
        }
        Ok(r)
    }
}

impl Sensor for Pi5PmicSensor {
    fn rails(&self) -> Vec<RailInfo> {
        self.rails.clone()
    }

    fn info(&self) -> SensorInfo {
        let mut settings = BTreeMap::new();
        settings.insert("covers".into(), COVERS.into());
        settings.insert("transport".into(), self.gencmd.describe());
        settings.insert("pmic_total_is_board_total".into(), self.total.to_string());
        SensorInfo {
            chip: "pi5-pmic".into(),
            location: self.gencmd.describe(),
            settings,
            simulated: false,
            conversion_period_us: self.period_ns as f64 / 1000.0,
            gated: false,
            rails: self.rails.iter().map(|r| r.name.clone()).collect(),
        }
    }

    fn period_ns(&self) -> u64 {
        self.period_ns
    }

    fn gated(&self) -> bool {
        false
    }

    fn init(&mut self) -> Result<(), SensorError> {
        self.read().map(|_| ())
    }

    fn poll(&mut self, out: &mut Vec<Sample>) -> Result<PollResult, SensorError> {
        // Timestamped around the whole request: the firmware sweeps its ADC channels
        // somewhere inside it.
        let start_ns = monotonic_ns();
        let r = self.read()?;
        let t_after_ns = monotonic_ns();
        let mut push = |rail: usize, bus_uv: i64, current_ua: i64, power_uw: i64| {
            out.push(Sample {
                t_before_ns: start_ns,
                t_after_ns,
                rail: rail as u16,
                bus_mv: (bus_uv.max(0) / 1000) as u32,
                current_ua,
                power_uw,
            });
        };
        let mut total_uw = 0;
        for (i, n) in self.names.iter().enumerate() {
            let rr = r.rails[n];
            total_uw += rr.power_uw();
            push(i, rr.voltage_uv, rr.current_ua, rr.power_uw());
        }
        push(self.names.len(), r.ext5v_uv.unwrap_or(0), 0, 0);
        if self.total {
            let current_ua = match r.ext5v_uv {
                // The current the rails would draw at the input voltage (no losses).
                Some(v) if v > 0 => (i128::from(total_uw) * 1_000_000 / i128::from(v)) as i64,
                _ => 0,
            };
            push(
                self.names.len() + 1,
                r.ext5v_uv.unwrap_or(0),
                current_ua,
                total_uw,
            );
        }
        Ok(PollResult {
            fresh: true,
            start_ns,
            gate_ns: t_after_ns,
        })
    }

    fn health_check(&mut self) -> Result<(), SensorError> {
        Ok(())
    }
}

/// True when `path` is a mailbox device that opens (for `transport` decisions in
/// tests and `edgewatt sensors`).
pub fn mailbox_available(path: &Path) -> bool {
    Vcio::open(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::gencmd::fake::FakeFirmware;
    use super::*;

    fn sensor(opts: &PmicOptions, reply: &str) -> Pi5PmicSensor {
        Pi5PmicSensor::new(
            Box::new(Mailbox::new(FakeFirmware {
                reply: reply.into(),
                error: 0,
                path: "/dev/vcio".into(),
                seen: vec![],
            })),
            opts,
        )
    }

    #[test]
    fn rails_subset_total_and_input_voltage() {
        let opts = PmicOptions {
            rails: vec!["VDD_CORE".into(), "DDR_VDD2".into()],
            total: true,
            ..Default::default()
        };
        let mut s = sensor(&opts, parse::captures::BUSY);
        let names: Vec<String> = s.rails().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["VDD_CORE", "DDR_VDD2", "EXT5V", "PMIC_TOTAL"]);
        assert_eq!(
            s.rails().iter().map(|r| r.total).collect::<Vec<_>>(),
            [false, false, false, true]
        );
        s.init().expect("init");
        let mut out = vec![];
        assert!(s.poll(&mut out).expect("poll").fresh);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].power_uw, 9_343_657);
        assert_eq!(out[2].bus_mv, 5097);
        assert_eq!(out[3].power_uw, out[0].power_uw + out[1].power_uw);
        assert!(out.iter().all(|x| x.t_before_ns == out[0].t_before_ns));
    }

    #[test]
    fn not_the_board_total_unless_said() {
        let mut s = sensor(&PmicOptions::default(), parse::captures::IDLE);
        assert_eq!(s.rails().len(), 13);
        assert!(s.rails().iter().all(|r| !r.total));
        assert!(s.info().settings["covers"].contains("NOT the board's 5 V input"));
        assert_eq!(s.period_ns(), 50_000_000);
        let mut out = vec![];
        s.poll(&mut out).expect("poll");
        let sum: i64 = out.iter().map(|x| x.power_uw).sum();
        let r = parse::parse(parse::captures::IDLE).expect("parse");
        assert_eq!(sum, r.total_uw());
    }

    #[test]
    fn unknown_rail_and_error_reply_are_errors() {
        let opts = PmicOptions {
            rails: vec!["VDD_NOPE".into()],
            ..Default::default()
        };
        let e = sensor(&opts, parse::captures::IDLE).init().unwrap_err();
        assert!(e.message.contains("'VDD_NOPE'"), "{e}");
        let e = sensor(
            &PmicOptions::default(),
            "error=2 error_msg=\"Invalid arguments\"",
        )
        .init()
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Parse);
        assert!(e.message.contains("refused"), "{e}");
    }
}
