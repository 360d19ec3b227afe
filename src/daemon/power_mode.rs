//! Power modes in the daemon (issue 13): a job's `power_mode` is checked at intake,
//! applied before the job (the previous mode journaled first), read back, and
//! restored after it; every result records the mode it ran under. A daemon that
//! died with a mode applied has it restored by its next start ([`PowerModes::recover`]).
//!
//! Every call here touches sysfs or waits on the nvpmodel request file, so the async wrappers run
//! them on the blocking pool.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{Ctx, Settings};
use crate::jobs::protocol::{ErrorBody, Job};
use crate::power::pi5pmic::gencmd::{Gencmd, Mailbox, VcgencmdProcess, Vcio};
use crate::powermode::{
    apply, journal, plan, previous, read, restore, wait_applied, NvpmodelSetter, PowerModeError,
    PowerModeRecord, PowerModeSpec, Previous, RequestFile, RestoreJournal,
};

/// The daemon's power-mode state, shared by intake and runner.
pub struct PowerModes {
    /// Root of the sysfs / nvpmodel paths (`/`).
    root: PathBuf,
    /// `[power_modes.NAME]`.
    modes: BTreeMap<String, PowerModeSpec>,
    /// The mode to restore after a crash.
    journal: RestoreJournal,
    /// Sets Jetson nvpmodel modes (the request file the root unit answers).
    nvpmodel: Box<dyn NvpmodelSetter>,
    /// The Pi's firmware mailbox, for `arm_freq`; `None` elsewhere.
    gencmd: Mutex<Option<Box<dyn Gencmd>>>,
    /// How long a mode may take to read back.
    timeout: Duration,
}

/// A job's mode while it runs: the record so far and what to restore.
pub struct Active {
    record: PowerModeRecord,
    prev: Option<Previous>,
}

fn body(code: &str, message: String) -> ErrorBody {
    ErrorBody {
        code: code.into(),
        message,
    }
}

fn from_error(e: PowerModeError) -> ErrorBody {
    body(e.code(), e.to_string())
}

impl PowerModes {
    /// From the settings; the restore journal lives beside the job journal.
    pub fn new(settings: &Settings) -> PowerModes {
        let root = settings.power_mode_root.clone();
        let nvpmodel: Box<dyn NvpmodelSetter> = Box::new(RequestFile::under(&root));
        let vcio = root.join("dev/vcio");
        // The mailbox, else (on the real root only, not a test tree) `vcgencmd` when
        // it is on PATH: one process per job for `arm_freq`, as the PMIC sensor does.
        let gencmd: Option<Box<dyn Gencmd>> = match Vcio::open(&vcio) {
            Ok(v) => Some(Box::new(Mailbox::new(v))),
            Err(_) if root == std::path::Path::new("/") => VcgencmdProcess::new(None)
                .ok()
                .map(|p| Box::new(p) as Box<dyn Gencmd>),
            Err(_) => None,
        };
        let dir = settings
            .store_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from);
        PowerModes {
            root,
            modes: settings.power_modes.clone(),
            journal: RestoreJournal::in_dir(&dir),
            nvpmodel,
            gencmd: Mutex::new(gencmd),
            timeout: settings.power_mode_timeout,
        }
    }

    /// Restores a mode a previous daemon left applied (blocking; at start).
    pub fn recover(&self) {
        match journal::recover(&self.journal, &self.root, self.nvpmodel.as_ref()) {
            Ok(Some(prev)) => tracing::warn!(
                "restored the power mode from before '{}', left applied by a daemon that did not finish ({})",
                prev.mode,
                self.journal.path().display()
            ),
            Ok(None) => {}
            Err(e) => tracing::error!("cannot restore the journaled power mode: {e:#}"),
        }
    }

    fn spec(&self, name: &str) -> Result<&PowerModeSpec, ErrorBody> {
        self.modes.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.modes.keys().map(String::as_str).collect();
            body(
                "unknown_power_mode",
                format!(
                    "field 'power_mode': '{name}' is not a power mode of this board (known: {}; see [power_modes.NAME] in its configuration)",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            )
        })
    }

    /// Whether a job's mode exists and this board can apply it (blocking).
    pub fn check(&self, name: &str) -> Result<(), ErrorBody> {
        let spec = self.spec(name)?;
        crate::powermode::check(name, spec, &self.root).map_err(from_error)
    }

    fn record(&self) -> PowerModeRecord {
        let mut g = self.gencmd.lock().unwrap_or_else(|p| p.into_inner());
        read(
            &self.root,
            g.as_mut().map(|b| b.as_mut() as &mut dyn Gencmd),
        )
    }

    /// Applies `name` (journaled first, then read back) and records the mode
    /// (blocking). Without a name it only records.
    pub fn begin(&self, name: Option<&str>) -> Result<Active, ErrorBody> {
        let prev = match name {
            None => None,
            Some(name) => Some(self.apply(name)?),
        };
        let mut record = self.record();
        record.name = name.map(str::to_string);
        Ok(Active { record, prev })
    }

    fn apply(&self, name: &str) -> Result<Previous, ErrorBody> {
        let spec = self.spec(name)?;
        let p = plan(name, spec, &self.root).map_err(from_error)?;
        let prev = previous(&p, &self.root);
        self.journal.save_if_absent(&prev).map_err(|e| {
            body(
                "power_mode_failed",
                format!("power mode '{name}' not applied: {e}"),
            )
        })?;
        let applied = apply(&p, &self.root, self.nvpmodel.as_ref())
            .and_then(|()| wait_applied(&p, &self.root, self.timeout));
        match applied {
            Ok(waited) => {
                tracing::info!(
                    mode = name,
                    waited_ms = waited.as_millis() as u64,
                    "power mode applied"
                );
                Ok(prev)
            }
            Err(e) => {
                // Half-applied: put it back now rather than run the job.
                self.put_back(&prev);
                Err(from_error(e))
            }
        }
    }

    /// Restores `prev` and clears the journal; a failure keeps the journal so the
    /// next start tries again. Returns the error text.
    fn put_back(&self, prev: &Previous) -> Option<String> {
        match restore(prev, &self.root, self.nvpmodel.as_ref()) {
            Ok(()) => {
                if let Err(e) = self.journal.clear() {
                    tracing::error!("{e}");
                }
                None
            }
            Err(e) => {
                tracing::error!("cannot restore the power mode after '{}': {e}", prev.mode);
                Some(e.to_string())
            }
        }
    }

    /// Samples the frequencies once more, restores the previous mode, and returns
    /// the result's `power_mode` (`null` when the board exposes nothing).
    pub fn end(&self, active: Active) -> Value {
        let Active { mut record, prev } = active;
        record.observe(&self.root);
        let restore_error = prev.as_ref().and_then(|p| self.put_back(p));
        if record.is_empty() && record.name.is_none() {
            return Value::Null;
        }
        let mut v = serde_json::to_value(&record).unwrap_or(Value::Null);
        if let (Some(e), Some(obj)) = (restore_error, v.as_object_mut()) {
            obj.insert("restore_error".into(), json!(e));
        }
        v
    }
}

/// Widens each cpufreq policy's seen range (`seen_min_khz`/`seen_max_khz`, sampled
/// at the job's start and end) with the thermal recorder's per-CPU range over the
/// job (`thermal.cpus`, sampled every `power.thermal_interval_ms`), so the result
/// says what the CPUs really ran at, not only at the boundaries. A policy takes the
/// range of the CPUs in its `cpus`; `freq_samples` then counts the recorder's
/// readings too. Nothing changes without a thermal summary.
pub fn widen_with_thermal(power_mode: &mut Value, thermal: &Value) {
    let Some(cpus) = thermal.get("cpus").and_then(Value::as_array) else {
        return;
    };
    let readings = thermal.get("readings").and_then(Value::as_u64).unwrap_or(0);
    let Some(policies) = power_mode.get_mut("cpufreq").and_then(Value::as_array_mut) else {
        return;
    };
    let khz = |v: Option<&Value>| {
        v.and_then(Value::as_f64)
            .map(|mhz| (mhz * 1000.0).round() as u64)
    };
    let mut widened = false;
    for p in policies.iter_mut() {
        let members: Vec<u64> = p
            .get("cpus")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let ranges = cpus.iter().filter(|c| {
            c.get("cpu")
                .and_then(Value::as_u64)
                .is_some_and(|n| members.contains(&n))
        });
        let (mut lo, mut hi) = (None::<u64>, None::<u64>);
        for c in ranges {
            if let Some(v) = khz(c.get("min_mhz")) {
                lo = Some(lo.map_or(v, |l| l.min(v)));
            }
            if let Some(v) = khz(c.get("max_mhz")) {
                hi = Some(hi.map_or(v, |h| h.max(v)));
            }
        }
        let Some(obj) = p.as_object_mut() else {
            continue;
        };
        if let Some(lo) = lo {
            let now = obj.get("seen_min_khz").and_then(Value::as_u64);
            obj.insert("seen_min_khz".into(), json!(now.map_or(lo, |n| n.min(lo))));
            widened = true;
        }
        if let Some(hi) = hi {
            let now = obj.get("seen_max_khz").and_then(Value::as_u64);
            obj.insert("seen_max_khz".into(), json!(now.map_or(hi, |n| n.max(hi))));
            widened = true;
        }
    }
    if widened {
        let n = power_mode
            .get("freq_samples")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        power_mode["freq_samples"] = json!(n + readings);
    }
}

/// [`PowerModes::check`] on the blocking pool.
pub async fn check(ctx: &Arc<Ctx>, job: &Job) -> Result<(), ErrorBody> {
    let Some(name) = job.power_mode.clone() else {
        return Ok(());
    };
    let pm = ctx.power_modes.clone();
    tokio::task::spawn_blocking(move || pm.check(&name))
        .await
        .unwrap_or_else(|e| Err(body("power_mode_failed", e.to_string())))
}

/// [`PowerModes::begin`] on the blocking pool.
pub async fn begin(ctx: &Arc<Ctx>, job: &Job) -> Result<Active, ErrorBody> {
    let (pm, name) = (ctx.power_modes.clone(), job.power_mode.clone());
    tokio::task::spawn_blocking(move || pm.begin(name.as_deref()))
        .await
        .unwrap_or_else(|e| Err(body("power_mode_failed", e.to_string())))
}

/// [`PowerModes::end`] on the blocking pool.
pub async fn end(ctx: &Arc<Ctx>, active: Active) -> Value {
    let pm = ctx.power_modes.clone();
    tokio::task::spawn_blocking(move || pm.end(active))
        .await
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thermal_ranges_widen_the_policies_they_belong_to() {
        let mut pm = json!({"name": "eco", "freq_samples": 2, "cpufreq": [
            {"policy": 0, "cpus": [0, 1], "seen_min_khz": 1000000, "seen_max_khz": 1000000},
            {"policy": 4, "cpus": [4], "seen_min_khz": 1800000, "seen_max_khz": 1800000},
            {"policy": 6, "cpus": [6]}]});
        let thermal = json!({"readings": 40, "cpus": [
            {"cpu": 0, "min_mhz": 600.0, "max_mhz": 1000.0},
            {"cpu": 1, "min_mhz": 800.0, "max_mhz": 1200.0},
            {"cpu": 4, "min_mhz": 1800.0, "max_mhz": 1800.0},
            {"cpu": 6, "min_mhz": null, "max_mhz": null}]});
        widen_with_thermal(&mut pm, &thermal);
        assert_eq!(pm["cpufreq"][0]["seen_min_khz"], 600000);
        assert_eq!(pm["cpufreq"][0]["seen_max_khz"], 1200000);
        assert_eq!(pm["cpufreq"][1]["seen_min_khz"], 1800000);
        assert_eq!(pm["cpufreq"][1]["seen_max_khz"], 1800000);
        assert!(pm["cpufreq"][2].get("seen_min_khz").is_none(), "{pm}");
        assert_eq!(pm["freq_samples"], 42);
    }

    #[test]
    fn without_thermal_or_cpufreq_nothing_changes() {
        let pm0 =
            json!({"freq_samples": 2, "cpufreq": [{"policy": 0, "cpus": [0], "seen_min_khz": 5}]});
        let mut pm = pm0.clone();
        widen_with_thermal(&mut pm, &Value::Null);
        assert_eq!(pm, pm0);
        widen_with_thermal(
            &mut pm,
            &json!({"readings": 3, "cpus": [{"cpu": 9, "min_mhz": 1.0}]}),
        );
        assert_eq!(pm, pm0);
        let mut null = Value::Null;
        widen_with_thermal(
            &mut null,
            &json!({"readings": 3, "cpus": [{"cpu": 0, "min_mhz": 1.0}]}),
        );
        assert_eq!(null, Value::Null);
    }
}
