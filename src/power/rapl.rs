//! Intel/AMD RAPL energy counters through the powercap sysfs interface
//! (`/sys/class/powercap/intel-rapl:N[:M]/{name, energy_uj, max_energy_range_uj}`),
//! `kind = "rapl"`.
//!
//! # An energy counter on a power stream
//! RAPL gives energy, not power. Each poll reads every zone's counter once; the
//! difference from the previous poll (wrapped through `max_energy_range_uj` when the
//! counter passed its range) over the time between the two reads is the interval's
//! mean power. Each interval is pushed as a *step*: two samples of that mean power,
//! one at the previous read's instant and one at this read's. The trapezoid rule of
//! `trace::energy` over a step is exactly the step's energy, and the zero-width
//! segment between two steps adds nothing, so a window integral over RAPL samples
//! *is* the counter difference (to rounding of µW; see the tests).
//!
//! # Never double-counting
//! Sub-zones (`intel-rapl:0:0` core, `:1` uncore) are inside their package's energy;
//! `psys` (the platform) contains the packages. A computed rail `RAPL_TOTAL` = Σ
//! `package-N` + Σ `dram` (DRAM energy is not part of the package's) is marked the
//! total, so summaries use it alone and never add the zones inside it; without a
//! package zone `psys` is the total. Other zones are recorded as component rails.
//!
//! # Permissions
//! `energy_uj` is root-only since Linux 5.10 (the fix for CVE-2020-8694, PLATYPUS).
//! A permission error names the file and the fix: the packaged tmpfiles.d rule
//! `edgewatt-rapl.conf` gives group `edgewatt` read access (docs/service.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::sensor::{ErrorKind, PollResult, Sensor, SensorError, SensorInfo};
use super::{RailInfo, Sample};
use crate::clock::monotonic_ns;

/// Name of the computed rail that is the total.
pub const RAPL_TOTAL: &str = "RAPL_TOTAL";

/// What the fix for an unreadable `energy_uj` is.
pub const PERMISSION_FIX: &str = "energy_uj is root-only since Linux 5.10 (CVE-2020-8694): install the packaged /usr/lib/tmpfiles.d/edgewatt-rapl.conf (group 'edgewatt' read access) and run 'systemd-tmpfiles --create edgewatt-rapl.conf', see docs/service.md";

/// A powercap problem.
#[derive(Debug, thiserror::Error)]
pub enum RaplError {
    /// A file could not be read (permission errors say how to fix them).
    #[error("cannot read '{path}': {message}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause, and for a permission error the fix.
        message: String,
        /// Permission denied.
        denied: bool,
    },
    /// A file did not hold an unsigned integer.
    #[error("'{path}' holds '{text}': expected an unsigned integer of µJ")]
    Parse {
        /// File.
        path: PathBuf,
        /// Content.
        text: String,
    },
    /// No zone.
    #[error("no RAPL zone found under '{root}': looked for sys/class/powercap/intel-rapl:N (is the intel_rapl_msr module loaded?)")]
    NotFound {
        /// The sysfs root.
        root: PathBuf,
    },
}

/// The error for a failed read of `path`: a permission error names the fix.
pub fn read_error(path: &Path, e: &std::io::Error) -> RaplError {
    let denied = e.kind() == std::io::ErrorKind::PermissionDenied;
    RaplError::Read {
        path: path.to_path_buf(),
        message: if denied {
            format!("{e}; {PERMISSION_FIX}")
        } else {
            e.to_string()
        },
        denied,
    }
}

fn read_u64(path: &Path) -> Result<u64, RaplError> {
    let text = std::fs::read_to_string(path).map_err(|e| read_error(path, &e))?;
    let text = text.trim();
    text.parse().map_err(|_| RaplError::Parse {
        path: path.to_path_buf(),
        text: text.to_string(),
    })
}

/// One powercap zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Its `name`: `package-0`, `core`, `uncore`, `dram`, `psys`.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// A sub-zone (`intel-rapl:N:M`) of package N.
    pub parent: Option<u32>,
    /// Counter range, µJ: the counter wraps to 0 after it.
    pub max_energy_range_uj: u64,
    /// Counted in [`RAPL_TOTAL`].
    pub in_total: bool,
}

impl Zone {
    /// The rail name: the zone's name, qualified by its package for sub-zones
    /// (`core@package-0`) so two packages' cores do not share a name.
    fn rail_name(&self, zones: &[Zone]) -> String {
        match self.parent {
            None => self.name.clone(),
            Some(p) => {
                let pkg = zones
                    .iter()
                    .find(|z| z.parent.is_none() && zone_index(&z.dir) == Some((p, None)))
                    .map(|z| z.name.clone())
                    .unwrap_or_else(|| format!("intel-rapl:{p}"));
                format!("{}@{pkg}", self.name)
            }
        }
    }
}

/// `(N, M)` of an `intel-rapl:N[:M]` directory.
fn zone_index(dir: &Path) -> Option<(u32, Option<u32>)> {
    let f = dir.file_name()?.to_string_lossy().into_owned();
    let rest = f.strip_prefix("intel-rapl:")?;
    let mut it = rest.split(':');
    let n = it.next()?.parse().ok()?;
    let m = match it.next() {
        Some(m) => Some(m.parse().ok()?),
        None => None,
    };
    it.next().is_none().then_some((n, m))
}

/// Finds the zones under `root` (`/` on a board); `rails` keeps only those names
/// (zone names or qualified sub-zone names), empty = all.
pub fn discover(root: &Path, rails: &[String]) -> Result<Vec<Zone>, RaplError> {
    let base = root.join("sys/class/powercap");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| zone_index(p).is_some())
        .collect();
    dirs.sort_by_key(|d| zone_index(d));
    let mut zones = Vec::new();
    for dir in dirs {
        let Some((n, m)) = zone_index(&dir) else {
            continue;
        };
        let name = match std::fs::read_to_string(dir.join("name")) {
            Ok(s) => s.trim().to_string(),
            Err(_) => continue,
        };
        let max_energy_range_uj = read_u64(&dir.join("max_energy_range_uj"))?;
        zones.push(Zone {
            in_total: name.starts_with("package-") || name == "dram",
            name,
            dir,
            parent: m.map(|_| n),
            max_energy_range_uj,
        });
    }
    if !zones.iter().any(|z| z.in_total) {
        for z in zones.iter_mut().filter(|z| z.name == "psys") {
            z.in_total = true;
        }
    }
    if zones.is_empty() {
        return Err(RaplError::NotFound {
            root: root.to_path_buf(),
        });
    }
    if !rails.is_empty() {
        let names: Vec<String> = zones.iter().map(|z| z.rail_name(&zones)).collect();
        let keep: Vec<bool> = names.iter().map(|n| rails.contains(n)).collect();
        let mut i = 0;
        zones.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        if zones.is_empty() {
            return Err(RaplError::NotFound {
                root: root.to_path_buf(),
            });
        }
    }
    Ok(zones)
}

/// Energy between two readings of a counter with range `max_uj`: a reading below
/// the previous one means the counter wrapped once (RAPL counters wrap in minutes
/// at most under full load, far longer than a poll interval).
pub fn counter_delta_uj(prev_uj: u64, now_uj: u64, max_uj: u64) -> u64 {
    if now_uj >= prev_uj {
        now_uj - prev_uj
    } else {
        max_uj.saturating_sub(prev_uj) + now_uj
    }
}

/// Mean power over an interval, µW, from its energy and length: rounded so that
/// `power_uw × dt_ns` is as close to `energy_uj × 10⁹` as integers allow.
pub fn mean_power_uw(energy_uj: u64, dt_ns: u64) -> i64 {
    if dt_ns == 0 {
        return 0;
    }
    let num = u128::from(energy_uj) * 1_000_000_000;
    let d = u128::from(dt_ns);
    ((num + d / 2) / d).min(i64::MAX as u128) as i64
}

/// RAPL zones as a sampler `Sensor` (ungated, fixed rate).
pub struct RaplSensor {
    zones: Vec<Zone>,
    rails: Vec<RailInfo>,
    period_ns: u64,
    /// The previous read: its instant (midpoint, ns) and each zone's counter.
    last: Option<(u64, Vec<u64>)>,
    root: PathBuf,
    /// Index of the computed total rail, when there is one.
    total_index: Option<usize>,
}

impl RaplSensor {
    /// Discovers under `root`; `rate_hz` default 10 (the counter updates about
    /// every ms, so any rate up to ~1 kHz reads fresh energy).
    pub fn open(root: &Path, rails: &[String], rate_hz: Option<f64>) -> Result<Self, RaplError> {
        let zones = discover(root, rails)?;
        // A zone that is there but cannot be read (permissions) fails here, not
        // later as gaps.
        for z in &zones {
            read_u64(&z.dir.join("energy_uj"))?;
        }
        let mut infos: Vec<RailInfo> = zones
            .iter()
            .map(|z| RailInfo {
                name: z.rail_name(&zones),
                total: false,
                source: format!("rapl:{}", z.dir.display()),
                simulated: false,
            })
            .collect();
        let total_index = zones.iter().any(|z| z.in_total).then(|| {
            infos.push(RailInfo {
                name: RAPL_TOTAL.into(),
                total: true,
                source: format!("rapl:{}", root.join("sys/class/powercap").display()),
                simulated: false,
            });
            infos.len() - 1
        });
        Ok(RaplSensor {
            zones,
            rails: infos,
            period_ns: (1e9 / rate_hz.unwrap_or(10.0)) as u64,
            last: None,
            root: root.to_path_buf(),
            total_index,
        })
    }

    fn read_counters(&self) -> Result<Vec<u64>, SensorError> {
        self.zones
            .iter()
            .map(|z| {
                read_u64(&z.dir.join("energy_uj")).map_err(|e| SensorError {
                    kind: match e {
                        RaplError::Parse { .. } => ErrorKind::Parse,
                        _ => ErrorKind::Io,
                    },
                    sensor: format!("rapl@{}", self.root.display()),
                    message: e.to_string(),
                })
            })
            .collect()
    }
}

impl Sensor for RaplSensor {
    fn rails(&self) -> Vec<RailInfo> {
        self.rails.clone()
    }

    fn info(&self) -> SensorInfo {
        let mut settings = BTreeMap::new();
        settings.insert(
            "covers".into(),
            "CPU package(s) and DRAM energy (RAPL_TOTAL = packages + dram); not the board or wall input".into(),
        );
        for (z, r) in self.zones.iter().zip(&self.rails) {
            settings.insert(
                format!("{}:max_energy_range_uj", r.name),
                z.max_energy_range_uj.to_string(),
            );
        }
        SensorInfo {
            chip: "rapl".into(),
            location: self.root.join("sys/class/powercap").display().to_string(),
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
        let t0 = monotonic_ns();
        let c = self.read_counters()?;
        let t1 = monotonic_ns();
        // The baseline: the first interval starts here. A re-initialisation after
        // a failed read keeps the last good reading instead, so the first step
        // after the outage carries the outage's energy exactly (the counter kept
        // counting; it wraps in tens of minutes at most, far longer than a retry).
        if self.last.is_none() {
            self.last = Some((t0 + (t1 - t0) / 2, c));
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Sample>) -> Result<PollResult, SensorError> {
        let start_ns = monotonic_ns();
        let counters = self.read_counters()?;
        let t_after_ns = monotonic_ns();
        let t_ns = start_ns + (t_after_ns - start_ns) / 2;
        let Some((prev_t, prev)) = self.last.replace((t_ns, counters.clone())) else {
            return Ok(PollResult {
                fresh: false,
                start_ns,
                gate_ns: t_after_ns,
            });
        };
        let dt = t_ns.saturating_sub(prev_t);
        let deltas: Vec<u64> = self
            .zones
            .iter()
            .zip(prev.iter().zip(&counters))
            .map(|(z, (&p, &c))| counter_delta_uj(p, c, z.max_energy_range_uj))
            .collect();
        let total_uj: u64 = self
            .zones
            .iter()
            .zip(&deltas)
            .filter(|(z, _)| z.in_total)
            .map(|(_, d)| d)
            .sum();
        let mut push_step = |rail: usize, energy_uj: u64| {
            let power_uw = mean_power_uw(energy_uj, dt);
            // The step: the interval's mean power at its start (zero-width
            // read) and at its end (this read).
            out.push(Sample {
                t_before_ns: prev_t,
                t_after_ns: prev_t,
                rail: rail as u16,
                bus_mv: 0,
                current_ua: 0,
                power_uw,
            });
            out.push(Sample {
                t_before_ns: start_ns,
                t_after_ns,
                rail: rail as u16,
                bus_mv: 0,
                current_ua: 0,
                power_uw,
            });
        };
        for (i, &d) in deltas.iter().enumerate() {
            push_step(i, d);
        }
        if let Some(i) = self.total_index {
            push_step(i, total_uj);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraparound_through_the_range() {
        assert_eq!(counter_delta_uj(100, 250, 1000), 150);
        // 262143328850 is a real max_energy_range_uj (2^32 × 61 µJ units).
        let max = 262_143_328_850;
        assert_eq!(counter_delta_uj(max - 50, 70, max), 120);
        assert_eq!(counter_delta_uj(5, 5, max), 0);
    }

    #[test]
    fn mean_power_rounds_to_the_energy() {
        // 1 J over 100 ms = 10 W.
        assert_eq!(mean_power_uw(1_000_000, 100_000_000), 10_000_000);
        assert_eq!(mean_power_uw(1, 3), 333_333_333);
        assert_eq!(mean_power_uw(5, 0), 0);
    }

    #[test]
    fn zone_indices() {
        assert_eq!(zone_index(Path::new("/s/intel-rapl:0")), Some((0, None)));
        assert_eq!(
            zone_index(Path::new("/s/intel-rapl:1:2")),
            Some((1, Some(2)))
        );
        assert_eq!(zone_index(Path::new("/s/intel-rapl")), None);
        assert_eq!(zone_index(Path::new("/s/intel-rapl:x")), None);
    }

    #[test]
    fn permission_error_names_file_and_fix() {
        let e = read_error(
            Path::new("/sys/class/powercap/intel-rapl:0/energy_uj"),
            &std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        let msg = e.to_string();
        assert!(
            msg.contains("'/sys/class/powercap/intel-rapl:0/energy_uj'"),
            "{msg}"
        );
        assert!(
            msg.contains("edgewatt-rapl.conf") && msg.contains("group 'edgewatt'"),
            "{msg}"
        );
    }
}
