//! Power monitors owned by a kernel driver, read through sysfs: hwmon
//! (`/sys/class/hwmon/hwmon*/`, the mainline `ina3221` and `ina2xx` drivers) and the
//! legacy Jetson IIO layout (`/sys/bus/i2c/drivers/ina3221x/*/iio:device*/`).
//!
//! The sysfs root is a parameter so tests read fake trees. There is no CNVR here:
//! a reading identical to the last one within the driver's update interval is the
//! same conversion and is dropped (counted as a duplicate avoided).
//!
//! # As found on real Jetsons
//! (the layouts jtop's `jtop/core/power.py` met, JetPack 5/6 mainline `ina3221`):
//! channels labelled `NC` (not connected; AGX Orin's second chip) are skipped, and
//! so is the INA3221's `sum of shunt voltages` channel (`in7`). An NC channel's
//! `in*_input` fails to read on real boards, so every channel is read once at probe
//! time and one that fails is dropped with a warning naming the file: it never puts
//! the other rails into errors or gaps. Every device of the driver is read (AGX Orin
//! carries two ina3221 chips), and when two rails carry the same label the names
//! are qualified with the chip's bus address (`VDD_IN@1-0040`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::sensor::{ErrorKind, PollResult, Sensor, SensorError, SensorInfo};
use super::{RailInfo, Sample};
use crate::clock::monotonic_ns;

/// Rail names that are the whole board's input on known boards.
pub const KNOWN_TOTALS: [&str; 3] = ["VDD_IN", "POM_5V_IN", "VIN_SYS_5V0"];
/// Labels of channels that are not rails: not connected, and the INA3221's sum
/// channel (`in7`, the sum of the shunt voltages).
pub const NOT_RAILS: [&str; 2] = ["NC", "sum of shunt voltages"];
/// hwmon `name`s of power monitors we know how to read.
pub const KNOWN_CHIPS: [&str; 9] = [
    "ina3221", "ina219", "ina220", "ina226", "ina230", "ina231", "ina209", "ina238", "ina260",
];

/// A sysfs problem.
#[derive(Debug, thiserror::Error)]
pub enum HwmonError {
    /// A file could not be read.
    #[error("cannot read '{path}': {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file did not hold an integer.
    #[error("'{path}' holds '{text}': expected an integer")]
    Parse {
        /// File.
        path: PathBuf,
        /// Content.
        text: String,
    },
    /// Nothing matched.
    #[error("no power monitor found under '{root}'{filter}: looked in sys/class/hwmon and sys/bus/i2c/drivers/ina3221x")]
    NotFound {
        /// The sysfs root.
        root: PathBuf,
        /// ` named 'x'` or empty.
        filter: String,
    },
}

/// Where a rail's power comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerFile {
    /// hwmon `power*_input`, µW.
    Microwatts(PathBuf),
    /// IIO `in_power*_input`, mW.
    Milliwatts(PathBuf),
    /// Not provided: bus × current.
    Computed,
}

/// One rail found in sysfs.
#[derive(Debug, Clone, PartialEq)]
pub struct HwmonRail {
    /// Label (or configured name).
    pub name: String,
    /// Board total.
    pub total: bool,
    /// Bus voltage file, mV.
    pub bus_mv: PathBuf,
    /// Current file, mA.
    pub current_ma: PathBuf,
    /// Power file.
    pub power: PowerFile,
}

/// One device found in sysfs.
#[derive(Debug, Clone, PartialEq)]
pub struct HwmonDevice {
    /// `hwmon:ina3221`, `iio:ina3221x`, …
    pub chip: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Rails, in channel order.
    pub rails: Vec<HwmonRail>,
    /// The driver's `update_interval`, ms, where it has one.
    pub update_interval_ms: Option<u64>,
    /// The chip's I2C bus address as the kernel names the device (`1-0040`), where
    /// sysfs shows it: qualifies rail names that repeat across chips.
    pub bus_address: Option<String>,
}

/// True for a channel label that is not a rail ([`NOT_RAILS`], any case).
pub fn is_not_a_rail(label: &str) -> bool {
    NOT_RAILS
        .iter()
        .any(|n| n.eq_ignore_ascii_case(label.trim()))
}

/// The I2C device name (`1-0040`) behind a hwmon or IIO directory: the `device`
/// link of a hwmon directory, or the first `N-00AA` component of its real path.
fn bus_address(dir: &Path) -> Option<String> {
    let is_addr = |s: &str| {
        s.split_once('-').is_some_and(|(bus, addr)| {
            !bus.is_empty()
                && bus.bytes().all(|b| b.is_ascii_digit())
                && addr.len() == 4
                && addr.bytes().all(|b| b.is_ascii_hexdigit())
        })
    };
    let real = std::fs::canonicalize(dir.join("device"))
        .or_else(|_| std::fs::canonicalize(dir))
        .ok()?;
    real.ancestors()
        .filter_map(|a| a.file_name().map(|f| f.to_string_lossy().into_owned()))
        .find(|f| is_addr(f))
}

/// Keeps a rail only if it reads now: a channel that fails at probe time (an NC
/// channel on a real Jetson fails its `in*_input`) is dropped with a warning naming
/// the file, so it can never put the other rails into errors or gaps.
fn readable(rail: HwmonRail) -> Option<HwmonRail> {
    match read_rail(&rail) {
        Ok(_) => Some(rail),
        Err(e) => {
            tracing::warn!(rail = %rail.name, error = %e, "hwmon: dropping a channel that cannot be read");
            None
        }
    }
}

/// Qualifies every rail name that occurs more than once with its chip's bus address
/// (or directory name), so no two rails share a name.
fn qualify_repeated_names(devices: &mut [HwmonDevice]) {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for r in devices.iter().flat_map(|d| d.rails.iter()) {
        *count.entry(r.name.clone()).or_default() += 1;
    }
    for d in devices.iter_mut() {
        let qual = d.bus_address.clone().unwrap_or_else(|| {
            d.dir
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        for r in d.rails.iter_mut() {
            if count.get(&r.name).copied().unwrap_or(0) > 1 {
                r.name = format!("{}@{qual}", r.name);
            }
        }
    }
}

fn read_trimmed(path: &Path) -> Result<String, HwmonError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| HwmonError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads an integer sysfs attribute.
pub fn read_int(path: &Path) -> Result<i64, HwmonError> {
    let text = read_trimmed(path)?;
    text.parse().map_err(|_| HwmonError::Parse {
        path: path.to_path_buf(),
        text,
    })
}

fn sorted_dirs(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Finds power monitors under `root` (`/` on a board). `name` keeps only hwmon
/// devices with that `name` (`ina3221x` selects the legacy IIO layout); `rails`
/// names unlabelled rails in order, or filters labelled ones.
pub fn discover(
    root: &Path,
    name: Option<&str>,
    rails: &[String],
) -> Result<Vec<HwmonDevice>, HwmonError> {
    let mut out = Vec::new();
    for dir in sorted_dirs(&root.join("sys/class/hwmon"), "hwmon") {
        // Old kernels keep the attributes in hwmonN/device/.
        let dir = if dir.join("name").exists() {
            dir
        } else {
            dir.join("device")
        };
        let Ok(chip) = read_trimmed(&dir.join("name")) else {
            continue;
        };
        let wanted = match name {
            Some(n) => n == chip,
            None => KNOWN_CHIPS.contains(&chip.as_str()),
        };
        if !wanted {
            continue;
        }
        let channels: Vec<(u32, u32, Option<u32>)> = if chip == "ina3221" {
            // in1..3 bus voltage, curr1..3 current; no power attribute.
            (1..=3).map(|n| (n, n, None)).collect()
        } else {
            // ina2xx: in0 shunt, in1 bus, curr1, power1 (µW).
            vec![(1, 1, Some(1))]
        };
        let mut found = Vec::new();
        for (i, (vin, curr, pwr)) in channels.into_iter().enumerate() {
            let bus = dir.join(format!("in{vin}_input"));
            let cur = dir.join(format!("curr{curr}_input"));
            if !bus.exists() || !cur.exists() {
                continue;
            }
            if read_trimmed(&dir.join(format!("in{vin}_enable"))).is_ok_and(|v| v == "0") {
                continue;
            }
            let power = match pwr.map(|p| dir.join(format!("power{p}_input"))) {
                Some(p) if p.exists() => PowerFile::Microwatts(p),
                _ => PowerFile::Computed,
            };
            let label = read_trimmed(&dir.join(format!("in{vin}_label"))).ok();
            if let Some(l) = label.as_deref().filter(|l| is_not_a_rail(l)) {
                tracing::debug!(channel = vin, label = l, dir = %dir.display(), "hwmon: skipping a channel that is not a rail");
                continue;
            }
            let name = match label {
                Some(l) => {
                    if !rails.is_empty() && !rails.contains(&l) {
                        continue;
                    }
                    l
                }
                None => rails.get(i).cloned().unwrap_or_else(|| {
                    let n = dir
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    format!("{chip}:{n}:ch{}", i + 1)
                }),
            };
            found.extend(readable(HwmonRail {
                total: KNOWN_TOTALS.contains(&name.as_str()),
                name,
                bus_mv: bus,
                current_ma: cur,
                power,
            }));
        }
        if !found.is_empty() {
            out.push(HwmonDevice {
                chip: format!("hwmon:{chip}"),
                update_interval_ms: read_int(&dir.join("update_interval"))
                    .ok()
                    .map(|v| v.max(0) as u64),
                bus_address: bus_address(&dir),
                dir,
                rails: found,
            });
        }
    }
    if name.is_none() || name == Some("ina3221x") {
        for dev in sorted_dirs(&root.join("sys/bus/i2c/drivers/ina3221x"), "") {
            for iio in sorted_dirs(&dev, "iio:device") {
                let mut found = Vec::new();
                for ch in 0..3 {
                    let Ok(label) = read_trimmed(&iio.join(format!("rail_name_{ch}"))) else {
                        continue;
                    };
                    if is_not_a_rail(&label) || (!rails.is_empty() && !rails.contains(&label)) {
                        continue;
                    }
                    let p = iio.join(format!("in_power{ch}_input"));
                    found.extend(readable(HwmonRail {
                        total: KNOWN_TOTALS.contains(&label.as_str()),
                        name: label,
                        bus_mv: iio.join(format!("in_voltage{ch}_input")),
                        current_ma: iio.join(format!("in_current{ch}_input")),
                        power: if p.exists() {
                            PowerFile::Milliwatts(p)
                        } else {
                            PowerFile::Computed
                        },
                    }));
                }
                if !found.is_empty() {
                    out.push(HwmonDevice {
                        chip: "iio:ina3221x".into(),
                        bus_address: bus_address(&iio),
                        dir: iio,
                        rails: found,
                        update_interval_ms: None,
                    });
                }
            }
        }
    }
    qualify_repeated_names(&mut out);
    if out.is_empty() {
        return Err(HwmonError::NotFound {
            root: root.to_path_buf(),
            filter: name.map(|n| format!(" named '{n}'")).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// One rail's values: (bus mV, current µA, power µW).
pub fn read_rail(rail: &HwmonRail) -> Result<(u32, i64, i64), HwmonError> {
    let bus_mv = read_int(&rail.bus_mv)?.max(0) as u32;
    let current_ua = read_int(&rail.current_ma)? * 1000;
    let power_uw = match &rail.power {
        PowerFile::Microwatts(p) => read_int(p)?,
        PowerFile::Milliwatts(p) => read_int(p)? * 1000,
        PowerFile::Computed => i64::from(bus_mv) * current_ua / 1000,
    };
    Ok((bus_mv, current_ua, power_uw))
}

/// Rails from kernel-owned monitors as a sampler `Sensor`.
pub struct HwmonSensor {
    devices: Vec<HwmonDevice>,
    rails: Vec<RailInfo>,
    period_ns: u64,
    /// A reading equal to the last one within this long is the same conversion.
    stale_ns: u64,
    last: Vec<(u32, i64, i64)>,
    last_change_ns: u64,
    root: PathBuf,
}

impl HwmonSensor {
    /// Discovers under `root`. `total_rail` overrides the known-total list; rate
    /// defaults to the driver's update interval (or 10 Hz where it has none).
    pub fn open(
        root: &Path,
        name: Option<&str>,
        rails: &[String],
        total_rail: Option<&str>,
        rate_hz: Option<f64>,
    ) -> Result<Self, HwmonError> {
        let devices = discover(root, name, rails)?;
        let interval_ms = devices.iter().filter_map(|d| d.update_interval_ms).max();
        let rate = rate_hz.unwrap_or_else(|| match interval_ms {
            Some(ms) if ms > 0 => 1000.0 / ms as f64,
            _ => 10.0,
        });
        let period_ns = (1e9 / rate) as u64;
        let rails = devices
            .iter()
            .flat_map(|d| {
                d.rails.iter().map(move |r| RailInfo {
                    name: r.name.clone(),
                    total: match total_rail {
                        Some(t) => r.name == t,
                        None => r.total,
                    },
                    source: format!("{}:{}", d.chip, d.dir.display()),
                    simulated: false,
                })
            })
            .collect();
        Ok(HwmonSensor {
            stale_ns: interval_ms
                .map(|ms| ms * 1_000_000)
                .unwrap_or(2 * period_ns),
            devices,
            rails,
            period_ns,
            last: Vec::new(),
            last_change_ns: 0,
            root: root.to_path_buf(),
        })
    }

    fn sensor_name(&self) -> String {
        format!("hwmon@{}", self.root.display())
    }

    fn read_all(&self) -> Result<Vec<(u32, i64, i64)>, SensorError> {
        self.devices
            .iter()
            .flat_map(|d| d.rails.iter())
            .map(|r| {
                read_rail(r).map_err(|e| SensorError {
                    kind: match e {
                        HwmonError::Parse { .. } => ErrorKind::Parse,
                        _ => ErrorKind::Io,
                    },
                    sensor: self.sensor_name(),
                    message: e.to_string(),
                })
            })
            .collect()
    }
}

impl Sensor for HwmonSensor {
    fn rails(&self) -> Vec<RailInfo> {
        self.rails.clone()
    }

    fn info(&self) -> SensorInfo {
        let mut settings = BTreeMap::new();
        let total = self.rails.iter().find(|r| r.total).map(|r| r.name.as_str());
        settings.insert(
            "covers".into(),
            match total {
                Some(t) => format!(
                    "'{t}' is the total (on a Jetson: the module's input, not the carrier board's); the other rails are inside it"
                ),
                None => "the monitored rails only; no rail is the board total (summaries add them)".into(),
            },
        );
        for d in &self.devices {
            if let Some(ms) = d.update_interval_ms {
                settings.insert(
                    format!("{}:update_interval_ms", d.dir.display()),
                    ms.to_string(),
                );
            }
        }
        SensorInfo {
            chip: self
                .devices
                .iter()
                .map(|d| d.chip.as_str())
                .collect::<Vec<_>>()
                .join(","),
            location: self
                .devices
                .iter()
                .map(|d| d.dir.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
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
        self.read_all().map(|_| ())
    }

    fn poll(&mut self, out: &mut Vec<Sample>) -> Result<PollResult, SensorError> {
        let start_ns = monotonic_ns();
        let values = self.read_all()?;
        let t_after_ns = monotonic_ns();
        // Same values within the driver's update interval: the same conversion.
        if values == self.last && t_after_ns.saturating_sub(self.last_change_ns) < self.stale_ns {
            return Ok(PollResult {
                fresh: false,
                start_ns,
                gate_ns: t_after_ns,
            });
        }
        self.last_change_ns = t_after_ns;
        for (i, &(bus_mv, current_ua, power_uw)) in values.iter().enumerate() {
            out.push(Sample {
                t_before_ns: start_ns,
                t_after_ns,
                rail: i as u16,
                bus_mv,
                current_ua,
                power_uw,
            });
        }
        self.last = values;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_rails_by_label() {
        assert!(is_not_a_rail("NC"));
        assert!(is_not_a_rail(" nc "));
        assert!(is_not_a_rail("sum of shunt voltages"));
        assert!(!is_not_a_rail("VDD_CPU_CV"));
        assert!(!is_not_a_rail("SYNC_5V"));
    }
}
