//! Load sources for simulated channels: what current flows at a given instant.

use std::path::Path;

use crate::clock::monotonic_ns;
use crate::power::spec::LoadSpec;

/// A load source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The trace file could not be read.
    #[error("cannot read load trace '{path}': {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A line of the trace file is not `t_s,current_a[,bus_v]`.
    #[error("load trace '{path}' line {line}: '{text}': expected t_s,current_a[,bus_v] with t_s increasing")]
    Parse {
        /// File.
        path: String,
        /// 1-based line.
        line: usize,
        /// The line.
        text: String,
    },
    /// The trace file has fewer than two points.
    #[error("load trace '{path}' has {points} points: expected at least 2")]
    TooShort {
        /// File.
        path: String,
        /// Points found.
        points: usize,
    },
}

/// One point of a recorded trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TracePoint {
    /// Time from the start of the trace, s.
    pub t_s: f64,
    /// Current, A.
    pub current_a: f64,
    /// Bus voltage, V, if the file has it.
    pub bus_v: Option<f64>,
}

/// Parses a trace CSV: `t_s,current_a[,bus_v]` per line; blank lines, `#` comments and
/// one non-numeric header line are skipped. Times must increase.
pub fn parse_trace(path: &str, text: &str) -> Result<Vec<TracePoint>, LoadError> {
    let mut points: Vec<TracePoint> = Vec::new();
    let mut header_seen = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let nums: Result<Vec<f64>, _> = fields.iter().map(|f| f.parse::<f64>()).collect();
        let bad = || LoadError::Parse {
            path: path.to_string(),
            line: i + 1,
            text: line.to_string(),
        };
        let nums = match nums {
            Ok(n) => n,
            // A header line (first content line only).
            Err(_) if points.is_empty() && !header_seen => {
                header_seen = true;
                continue;
            }
            Err(_) => return Err(bad()),
        };
        if !(2..=3).contains(&nums.len()) || nums.iter().any(|x| !x.is_finite()) {
            return Err(bad());
        }
        if points.last().is_some_and(|p| p.t_s >= nums[0]) {
            return Err(bad());
        }
        points.push(TracePoint {
            t_s: nums[0],
            current_a: nums[1],
            bus_v: nums.get(2).copied(),
        });
    }
    if points.len() < 2 {
        return Err(LoadError::TooShort {
            path: path.to_string(),
            points: points.len(),
        });
    }
    Ok(points)
}

/// Linear interpolation in a trace, looping over its length.
pub fn trace_at(points: &[TracePoint], t_s: f64) -> (f64, Option<f64>) {
    let (first, last) = (points[0].t_s, points[points.len() - 1].t_s);
    let span = last - first;
    let t = first + (t_s.max(0.0) % span);
    let i = points
        .partition_point(|p| p.t_s <= t)
        .clamp(1, points.len() - 1);
    let (a, b) = (points[i - 1], points[i]);
    let f = ((t - a.t_s) / (b.t_s - a.t_s)).clamp(0.0, 1.0);
    let current = a.current_a + f * (b.current_a - a.current_a);
    let bus = match (a.bus_v, b.bus_v) {
        (Some(x), Some(y)) => Some(x + f * (y - x)),
        _ => None,
    };
    (current, bus)
}

/// CPU utilisation (0–1) between two `/proc/stat` `cpu` lines: busy share of the
/// jiffies that passed (idle and iowait count as idle).
pub fn cpu_utilisation(prev: (u64, u64), now: (u64, u64)) -> f64 {
    let total = now.0.saturating_sub(prev.0);
    let idle = now.1.saturating_sub(prev.1);
    if total == 0 {
        return 0.0;
    }
    (1.0 - idle as f64 / total as f64).clamp(0.0, 1.0)
}

/// The aggregate `cpu ` line of `/proc/stat` → (total jiffies, idle + iowait).
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total, idle))
}

/// Host CPU utilisation, re-read from /proc/stat at most every 50 ms.
#[derive(Debug)]
pub struct CpuMeter {
    last_read_ns: u64,
    last: Option<(u64, u64)>,
    utilisation: f64,
}

impl CpuMeter {
    const REFRESH_NS: u64 = 50_000_000;

    fn new() -> Self {
        CpuMeter {
            last_read_ns: 0,
            last: None,
            utilisation: 0.0,
        }
    }

    /// Utilisation now (0–1).
    pub fn utilisation(&mut self) -> f64 {
        let now = monotonic_ns();
        if self.last.is_none() || now.saturating_sub(self.last_read_ns) >= Self::REFRESH_NS {
            if let Some(cur) = std::fs::read_to_string("/proc/stat")
                .ok()
                .as_deref()
                .and_then(parse_proc_stat)
            {
                if let Some(prev) = self.last {
                    self.utilisation = cpu_utilisation(prev, cur);
                }
                self.last = Some(cur);
            }
            self.last_read_ns = now;
        }
        self.utilisation
    }
}

/// A load source, ready to evaluate.
#[derive(Debug)]
pub enum Load {
    /// Fixed current and voltage.
    Constant {
        /// A.
        current_a: f64,
        /// V.
        bus_v: f64,
    },
    /// Square wave from `origin_ns`.
    Square {
        /// A.
        low_a: f64,
        /// A.
        high_a: f64,
        /// ns.
        period_ns: u64,
        /// 0–1.
        duty: f64,
        /// V.
        bus_v: f64,
        /// Phase origin, monotonic ns.
        origin_ns: u64,
    },
    /// Recorded trace, looped from `origin_ns`.
    Trace {
        /// Points.
        points: Vec<TracePoint>,
        /// V when the trace has none.
        bus_v: f64,
        /// Start, monotonic ns.
        origin_ns: u64,
    },
    /// Host CPU utilisation mapped to power.
    Cpu {
        /// W at idle.
        idle_w: f64,
        /// W at 100 %.
        max_w: f64,
        /// V.
        bus_v: f64,
        /// /proc/stat reader.
        meter: CpuMeter,
    },
}

impl Load {
    /// Builds a load from its spec; trace files are read here, once.
    pub fn from_spec(spec: &LoadSpec, origin_ns: u64) -> Result<Load, LoadError> {
        Ok(match spec {
            LoadSpec::Constant { current_a, bus_v } => Load::Constant {
                current_a: *current_a,
                bus_v: *bus_v,
            },
            LoadSpec::Square {
                low_a,
                high_a,
                period_ms,
                duty,
                bus_v,
            } => Load::Square {
                low_a: *low_a,
                high_a: *high_a,
                period_ns: ((period_ms * 1e6) as u64).max(1),
                duty: duty.unwrap_or(0.5),
                bus_v: *bus_v,
                origin_ns,
            },
            LoadSpec::Trace { path, bus_v } => {
                let text =
                    std::fs::read_to_string(Path::new(path)).map_err(|source| LoadError::Read {
                        path: path.clone(),
                        source,
                    })?;
                Load::Trace {
                    points: parse_trace(path, &text)?,
                    bus_v: *bus_v,
                    origin_ns,
                }
            }
            LoadSpec::Cpu {
                idle_w,
                max_w,
                bus_v,
            } => Load::Cpu {
                idle_w: *idle_w,
                max_w: *max_w,
                bus_v: *bus_v,
                meter: CpuMeter::new(),
            },
        })
    }

    /// (current A, bus V) at monotonic `t_ns`.
    pub fn at(&mut self, t_ns: u64) -> (f64, f64) {
        match self {
            Load::Constant { current_a, bus_v } => (*current_a, *bus_v),
            Load::Square {
                low_a,
                high_a,
                period_ns,
                duty,
                bus_v,
                origin_ns,
            } => {
                let phase =
                    (t_ns.saturating_sub(*origin_ns) % *period_ns) as f64 / *period_ns as f64;
                (if phase < *duty { *high_a } else { *low_a }, *bus_v)
            }
            Load::Trace {
                points,
                bus_v,
                origin_ns,
            } => {
                let (i, v) = trace_at(points, t_ns.saturating_sub(*origin_ns) as f64 / 1e9);
                (i, v.unwrap_or(*bus_v))
            }
            Load::Cpu {
                idle_w,
                max_w,
                bus_v,
                meter,
            } => {
                let p = *idle_w + meter.utilisation() * (*max_w - *idle_w);
                (p / *bus_v, *bus_v)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_parses_with_header_and_interpolates() {
        let pts = parse_trace(
            "t.csv",
            "t_s,current_a\n# comment\n0,0.5\n1,1.5,5.0\n2,0.5\n",
        )
        .unwrap();
        assert_eq!(pts.len(), 3);
        assert_eq!(pts[1].bus_v, Some(5.0));
        let (i, _) = trace_at(&pts, 0.5);
        assert!((i - 1.0).abs() < 1e-9);
        // Loops: 2.5 s is 0.5 s into the next lap.
        let (i, _) = trace_at(&pts, 2.5);
        assert!((i - 1.0).abs() < 1e-9);
    }

    #[test]
    fn trace_rejects_bad_lines() {
        let e = parse_trace("t.csv", "0,1\n1,x\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = parse_trace("t.csv", "0,1\n0,2\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(matches!(
            parse_trace("t.csv", "0,1\n"),
            Err(LoadError::TooShort { points: 1, .. })
        ));
    }

    #[test]
    fn proc_stat_utilisation() {
        let a = parse_proc_stat("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = parse_proc_stat("cpu  250 0 100 850 0 0 0 0 0 0\n").unwrap();
        assert_eq!(a, (1000, 800));
        assert!((cpu_utilisation(a, b) - 0.75).abs() < 1e-9);
    }

    #[test]
    fn square_wave_switches() {
        let mut l = Load::Square {
            low_a: 0.1,
            high_a: 1.0,
            period_ns: 1_000,
            duty: 0.25,
            bus_v: 5.0,
            origin_ns: 0,
        };
        assert_eq!(l.at(100).0, 1.0);
        assert_eq!(l.at(300).0, 0.1);
        assert_eq!(l.at(1_100).0, 1.0);
    }
}
