//! CPU temperature, frequency and throttle co-recording, ~10 Hz, on the trace's
//! clock. Sources are discovered once under a sysfs root (a parameter, so tests
//! use a fake tree); a source that does not exist is absent (`None`), never 0.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::monotonic_ns;

/// Raspberry Pi `get_throttled` bits that mean "happening now" (firmware docs,
/// "vcgencmd get_throttled"); bits 16–19 are the sticky "has occurred" copies.
struct Throttle;
impl Throttle {
    const UNDER_VOLTAGE: u32 = 0b0001;
    const FREQ_CAPPED: u32 = 0b0010;
    const THROTTLED: u32 = 0b0100;
    const SOFT_TEMP_LIMIT: u32 = 0b1000;
}

/// Errors of the thermal recorder.
#[derive(Debug, thiserror::Error)]
pub enum ThermalError {
    #[error("cannot start thermal recorder thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Where and how often to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThermalConfig {
    /// The sysfs root (`/sys`); tests point it at a fake tree.
    pub sysfs_root: PathBuf,
    /// Time between readings. Default 100 ms (~10 Hz).
    pub period: Duration,
    /// `vcgencmd` to run for the Pi's throttle flags; `None` when absent. Default:
    /// the first `vcgencmd` found on PATH.
    pub vcgencmd: Option<PathBuf>,
    /// Read the throttle flags every N readings (running a process is costly).
    /// Default 5 (2 Hz at the default period).
    pub throttle_every: u32,
    /// Readings kept in memory (a ring). Default 18 000 (30 min at 10 Hz).
    pub capacity: usize,
}

impl Default for ThermalConfig {
    fn default() -> Self {
        ThermalConfig {
            sysfs_root: PathBuf::from("/sys"),
            period: Duration::from_millis(100),
            vcgencmd: find_on_path("vcgencmd"),
            throttle_every: 5,
            capacity: 18_000,
        }
    }
}

/// The first executable file called `name` on `$PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The sources found under the sysfs root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThermalSources {
    /// Thermal zone names (`type`, or `thermal_zoneN` without one), in zone order.
    pub zones: Vec<String>,
    /// CPU numbers that have `cpufreq/scaling_cur_freq`.
    pub cpus: Vec<u32>,
    /// True when throttle flags are read (vcgencmd present).
    pub throttle: bool,
}

/// The sources found and the files to read for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// The description stored with readings.
    pub sources: ThermalSources,
    /// `temp` files, parallel to `sources.zones`.
    zone_paths: Vec<PathBuf>,
    /// `scaling_cur_freq` files, parallel to `sources.cpus`.
    cpu_paths: Vec<PathBuf>,
}

/// One reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThermalReading {
    /// CLOCK_MONOTONIC ns.
    pub t_ns: u64,
    /// Per zone (parallel to `ThermalSources::zones`), m°C; `None` when unreadable.
    pub temp_mc: Vec<Option<i64>>,
    /// Per CPU (parallel to `ThermalSources::cpus`), kHz; `None` when unreadable.
    pub freq_khz: Vec<Option<u64>>,
    /// `get_throttled` value, when read this time.
    pub throttled: Option<u32>,
}

/// A window of readings with the description of their sources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThermalSeries {
    /// What was read.
    pub sources: ThermalSources,
    /// The readings, oldest first.
    pub readings: Vec<ThermalReading>,
}

/// One zone over a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneSummary {
    /// Zone `type`.
    pub name: String,
    /// Highest reading, °C; `None` when no reading succeeded.
    pub max_c: Option<f64>,
    /// Mean of the readings, °C.
    pub mean_c: Option<f64>,
}

/// One CPU's frequency over a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FreqSummary {
    /// CPU number.
    pub cpu: u32,
    /// Lowest `scaling_cur_freq`, MHz.
    pub min_mhz: Option<f64>,
    /// Highest `scaling_cur_freq`, MHz.
    pub max_mhz: Option<f64>,
}

/// Temperatures, frequencies and throttling over a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThermalSummary {
    /// One entry per zone found.
    pub zones: Vec<ZoneSummary>,
    /// One entry per CPU with cpufreq.
    pub cpus: Vec<FreqSummary>,
    /// Whether the firmware reported throttling during the job; `None` when no
    /// throttle source exists (not "false": we could not tell).
    pub throttled: Option<bool>,
    /// What throttled (`under-voltage, frequency capped, …`), when it did.
    pub throttle_reason: Option<String>,
    /// Readings in the window.
    pub readings: u64,
}

/// Finds the zones and CPUs under `root`.
pub fn discover(root: &Path, throttle: bool) -> Discovered {
    let mut zones: Vec<(u32, String, PathBuf)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("class/thermal")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(n) = name
                .strip_prefix("thermal_zone")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let dir = e.path();
            if !dir.join("temp").is_file() {
                continue;
            }
            let ty = std::fs::read_to_string(dir.join("type"))
                .map(|s| s.trim().to_string())
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or(name);
            zones.push((n, ty, dir.join("temp")));
        }
    }
    zones.sort_by_key(|z| z.0);
    let mut cpus: Vec<(u32, PathBuf)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("devices/system/cpu")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(n) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let p = e.path().join("cpufreq/scaling_cur_freq");
            if p.is_file() {
                cpus.push((n, p));
            }
        }
    }
    cpus.sort_by_key(|c| c.0);
    Discovered {
        sources: ThermalSources {
            zones: zones.iter().map(|z| z.1.clone()).collect(),
            cpus: cpus.iter().map(|c| c.0).collect(),
            throttle,
        },
        zone_paths: zones.into_iter().map(|z| z.2).collect(),
        cpu_paths: cpus.into_iter().map(|c| c.1).collect(),
    }
}

fn read_int(p: &Path) -> Option<i64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Parses `throttled=0x50005`.
pub fn parse_throttled(text: &str) -> Option<u32> {
    let v = text.trim().strip_prefix("throttled=")?;
    u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()
}

/// Names the "now" bits set in a `get_throttled` value; `None` when none is.
pub fn throttle_reason(bits: u32) -> Option<String> {
    let names = [
        (Throttle::UNDER_VOLTAGE, "under-voltage"),
        (Throttle::FREQ_CAPPED, "arm frequency capped"),
        (Throttle::THROTTLED, "throttled"),
        (Throttle::SOFT_TEMP_LIMIT, "soft temperature limit"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    (!set.is_empty()).then(|| set.join(", "))
}

fn read_throttled(vcgencmd: &Path) -> Option<u32> {
    let out = Command::new(vcgencmd).arg("get_throttled").output().ok()?;
    out.status.success().then_some(())?;
    parse_throttled(&String::from_utf8_lossy(&out.stdout))
}

/// Takes one reading of every source.
pub fn read_once(sources: &Discovered, vcgencmd: Option<&Path>) -> ThermalReading {
    ThermalReading {
        t_ns: monotonic_ns(),
        temp_mc: sources.zone_paths.iter().map(|p| read_int(p)).collect(),
        freq_khz: sources
            .cpu_paths
            .iter()
            .map(|p| read_int(p).and_then(|v| u64::try_from(v).ok()))
            .collect(),
        throttled: vcgencmd.and_then(read_throttled),
    }
}

/// Summarises the readings in `[from_ns, to_ns]`.
pub fn summarize_thermal(series: &ThermalSeries, from_ns: u64, to_ns: u64) -> ThermalSummary {
    let rs: Vec<&ThermalReading> = series
        .readings
        .iter()
        .filter(|r| from_ns <= r.t_ns && r.t_ns <= to_ns)
        .collect();
    let zones = series
        .sources
        .zones
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let v: Vec<f64> = rs
                .iter()
                .filter_map(|r| r.temp_mc.get(i).copied().flatten())
                .map(|mc| mc as f64 / 1000.0)
                .collect();
            ZoneSummary {
                name: name.clone(),
                max_c: v.iter().copied().reduce(f64::max),
                mean_c: (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
            }
        })
        .collect();
    let cpus = series
        .sources
        .cpus
        .iter()
        .enumerate()
        .map(|(i, cpu)| {
            let v: Vec<u64> = rs
                .iter()
                .filter_map(|r| r.freq_khz.get(i).copied().flatten())
                .collect();
            FreqSummary {
                cpu: *cpu,
                min_mhz: v.iter().min().map(|k| *k as f64 / 1000.0),
                max_mhz: v.iter().max().map(|k| *k as f64 / 1000.0),
            }
        })
        .collect();
    let bits = rs
        .iter()
        .filter_map(|r| r.throttled)
        .fold(None, |acc: Option<u32>, b| Some(acc.unwrap_or(0) | b));
    let now_bits = bits.map(|b| b & 0xF);
    ThermalSummary {
        zones,
        cpus,
        throttled: if series.sources.throttle {
            Some(now_bits.is_some_and(|b| b != 0))
        } else {
            None
        },
        throttle_reason: now_bits.and_then(throttle_reason),
        readings: rs.len() as u64,
    }
}

/// Shared between the recorder thread and its handle.
#[derive(Debug, Default)]
struct Ring {
    readings: VecDeque<ThermalReading>,
}

/// A running recorder: a dedicated thread reading every `period` into a ring,
/// stopped by its cancellation token (the daemon's, or its own).
#[derive(Debug)]
pub struct ThermalRecorder {
    /// What was found; readings are parallel to it.
    sources: ThermalSources,
    /// The readings so far (bounded).
    ring: Arc<Mutex<Ring>>,
    /// Cancels the thread.
    cancel: CancellationToken,
    /// Joined on stop.
    thread: Option<JoinHandle<()>>,
}

impl ThermalRecorder {
    /// Discovers the sources and starts the thread.
    pub fn start(config: ThermalConfig, cancel: CancellationToken) -> Result<Self, ThermalError> {
        let found = discover(&config.sysfs_root, config.vcgencmd.is_some());
        let sources = found.sources.clone();
        let ring = Arc::new(Mutex::new(Ring::default()));
        let thread = {
            let (ring, cancel) = (ring.clone(), cancel.clone());
            std::thread::Builder::new()
                .name("edgewatt-thermal".into())
                .spawn(move || record(config, found, ring, cancel))
                .map_err(ThermalError::Spawn)?
        };
        Ok(ThermalRecorder {
            sources,
            ring,
            cancel,
            thread: Some(thread),
        })
    }

    /// The sources found.
    pub fn sources(&self) -> &ThermalSources {
        &self.sources
    }

    /// The readings in `[from_ns, to_ns]`.
    pub fn window(&self, from_ns: u64, to_ns: u64) -> ThermalSeries {
        let readings = match self.ring.lock() {
            Ok(g) => g
                .readings
                .iter()
                .filter(|r| from_ns <= r.t_ns && r.t_ns <= to_ns)
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        };
        ThermalSeries {
            sources: self.sources.clone(),
            readings,
        }
    }

    /// Cancels the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for ThermalRecorder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn record(
    config: ThermalConfig,
    sources: Discovered,
    ring: Arc<Mutex<Ring>>,
    cancel: CancellationToken,
) {
    let every = config.throttle_every.max(1);
    let mut tick: u32 = 0;
    while !cancel.is_cancelled() {
        let vc = (tick % every == 0)
            .then_some(config.vcgencmd.as_deref())
            .flatten();
        let reading = read_once(&sources, vc);
        if let Ok(mut g) = ring.lock() {
            if g.readings.len() >= config.capacity.max(1) {
                g.readings.pop_front();
            }
            g.readings.push_back(reading);
        }
        tick = tick.wrapping_add(1);
        // Woken early by `stop` (unpark); a token cancelled elsewhere is seen
        // within one period.
        std::thread::park_timeout(config.period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let w = |rel: &str, text: &str| {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        w("class/thermal/thermal_zone0/temp", "45123\n");
        w("class/thermal/thermal_zone0/type", "cpu-thermal\n");
        w("class/thermal/thermal_zone1/temp", "38000\n");
        w("class/thermal/thermal_zone2/type", "no-temp\n");
        w(
            "devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
            "1500000\n",
        );
        w(
            "devices/system/cpu/cpu1/cpufreq/scaling_cur_freq",
            "600000\n",
        );
        std::fs::create_dir_all(d.path().join("devices/system/cpu/cpu2")).expect("mkdir");
        d
    }

    #[test]
    fn discovers_and_reads_fake_sysfs() {
        let d = fake_sysfs();
        let s = discover(d.path(), false);
        assert_eq!(s.sources.zones, vec!["cpu-thermal", "thermal_zone1"]);
        assert_eq!(s.sources.cpus, vec![0, 1]);
        let r = read_once(&s, None);
        assert_eq!(r.temp_mc, vec![Some(45123), Some(38000)]);
        assert_eq!(r.freq_khz, vec![Some(1_500_000), Some(600_000)]);
        assert_eq!(r.throttled, None);
    }

    #[test]
    fn absent_sources_are_absent() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = discover(d.path(), false);
        assert!(s.sources.zones.is_empty() && s.sources.cpus.is_empty());
        let series = ThermalSeries {
            sources: s.sources.clone(),
            readings: vec![read_once(&s, None)],
        };
        let sum = summarize_thermal(&series, 0, u64::MAX);
        assert_eq!(sum.throttled, None);
        assert!(sum.zones.is_empty());
    }

    #[test]
    fn unreadable_value_is_none_not_zero() {
        let d = fake_sysfs();
        let s = discover(d.path(), false);
        std::fs::write(d.path().join("class/thermal/thermal_zone1/temp"), "garbage")
            .expect("write");
        let r = read_once(&s, None);
        assert_eq!(r.temp_mc, vec![Some(45123), None]);
    }

    #[test]
    fn throttle_flags() {
        assert_eq!(parse_throttled("throttled=0x50005\n"), Some(0x50005));
        assert_eq!(parse_throttled("throttled=0x0"), Some(0));
        assert_eq!(parse_throttled("error"), None);
        assert_eq!(
            throttle_reason(0x50005).as_deref(),
            Some("under-voltage, throttled")
        );
        assert_eq!(throttle_reason(0x50000), None);
    }

    #[test]
    fn summary_over_window() {
        let sources = ThermalSources {
            zones: vec!["cpu".into()],
            cpus: vec![0],
            throttle: true,
        };
        let r = |t_ns, mc, khz, th| ThermalReading {
            t_ns,
            temp_mc: vec![mc],
            freq_khz: vec![khz],
            throttled: th,
        };
        let series = ThermalSeries {
            sources,
            readings: vec![
                r(0, Some(90_000), Some(100), Some(0x4)),
                r(10, Some(50_000), Some(1_500_000), Some(0)),
                r(20, Some(60_000), Some(1_000_000), None),
                r(30, None, None, Some(0x20000)),
            ],
        };
        let s = summarize_thermal(&series, 10, 30);
        assert_eq!(s.zones[0].max_c, Some(60.0));
        assert_eq!(s.zones[0].mean_c, Some(55.0));
        assert_eq!(s.cpus[0].min_mhz, Some(1000.0));
        assert_eq!(s.cpus[0].max_mhz, Some(1500.0));
        assert_eq!(s.throttled, Some(false));
        assert_eq!(s.readings, 3);
        let all = summarize_thermal(&series, 0, 30);
        assert_eq!(all.throttled, Some(true));
        assert_eq!(all.throttle_reason.as_deref(), Some("throttled"));
    }

    #[test]
    fn recorder_thread_records_and_stops() {
        let d = fake_sysfs();
        let cfg = ThermalConfig {
            sysfs_root: d.path().to_path_buf(),
            period: Duration::from_millis(5),
            vcgencmd: None,
            throttle_every: 1,
            capacity: 4,
        };
        let cancel = CancellationToken::new();
        let rec = ThermalRecorder::start(cfg, cancel.clone()).expect("start");
        std::thread::sleep(Duration::from_millis(80));
        let w = rec.window(0, u64::MAX);
        assert_eq!(w.readings.len(), 4, "ring is bounded");
        assert_eq!(w.readings[0].temp_mc, vec![Some(45123), Some(38000)]);
        rec.stop();
        assert!(cancel.is_cancelled());
    }
}
