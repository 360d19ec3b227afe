//! Checking a mode against the board, applying it, waiting until it has taken
//! effect, and putting the previous mode back.
//!
//! Order (and why): the previous state is read first ([`previous`]) so the caller
//! can journal it before anything changes. [`apply`] sets nvpmodel first — a
//! Jetson mode change resets the CPU clocks to that mode's — then per policy the
//! governor, `scaling_min_freq` (only when the new maximum is below it, so the
//! pair stays ordered) and `scaling_max_freq`. [`restore`] goes back in the
//! opposite sense: nvpmodel to the old mode, then each policy's governor, maximum
//! and minimum to the saved values.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::read::policies;
use super::{
    cpufreq_dir, nvpmodel, read_trim, read_u64, NvpmodelSetter, PowerModeError, PowerModeSpec,
};

/// How far `scaling_cur_freq` may sit above the new maximum and still count as
/// applied: `intel_pstate` reports an APERF/MPERF average that can overshoot a little.
pub const CUR_FREQ_SLACK: f64 = 0.02;

/// What one policy gets once a mode is resolved against the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTarget {
    /// N of `policyN`.
    pub policy: u32,
    /// New `scaling_governor`.
    pub governor: Option<String>,
    /// New `scaling_max_freq`, kHz.
    pub max_khz: Option<u64>,
}

/// A mode resolved against the board: what will be written where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The mode's name.
    pub mode: String,
    /// Per policy.
    pub policies: Vec<PolicyTarget>,
    /// nvpmodel id.
    pub nvpmodel: Option<u32>,
}

/// The state a mode replaced, journaled before it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previous {
    /// The mode that was applied over it (for the log).
    pub mode: String,
    /// Each touched policy's settings before.
    pub policies: Vec<PolicyState>,
    /// The nvpmodel id before, when the mode sets one.
    pub nvpmodel: Option<u32>,
}

/// One policy's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    /// N of `policyN`.
    pub policy: u32,
    /// `scaling_governor`.
    pub governor: Option<String>,
    /// `scaling_min_freq`, kHz.
    pub min_khz: Option<u64>,
    /// `scaling_max_freq`, kHz.
    pub max_khz: Option<u64>,
}

fn policy_dir(root: &Path, n: u32) -> PathBuf {
    cpufreq_dir(root).join(format!("policy{n}"))
}

/// Opens `path` for writing without writing (sysfs ignores the open; a fake file is
/// not truncated): the check a mode needs before the job is accepted.
fn writable(path: &Path) -> Result<(), String> {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("'{}' does not exist", path.display()))
        }
        Err(e) => Err(format!(
            "'{}' is not writable: {e} (install the edgewatt-cpufreq tmpfiles rule; docs/service.md)",
            path.display()
        )),
    }
}

/// Resolves `spec` against the board under `root` and checks every file and value:
/// an `Err` is [`PowerModeError::Unavailable`] naming what is missing.
pub fn plan(name: &str, spec: &PowerModeSpec, root: &Path) -> Result<Plan, PowerModeError> {
    let bad = |reason: String| PowerModeError::Unavailable {
        mode: name.to_string(),
        reason,
    };
    let mut targets = Vec::new();
    if spec.sets_cpufreq() {
        let present = policies(root);
        if present.is_empty() {
            return Err(bad(format!(
                "no cpufreq policies under '{}'",
                cpufreq_dir(root).display()
            )));
        }
        for key in spec.policies.keys() {
            let n: u32 = key
                .parse()
                .map_err(|_| bad(format!("policy '{key}' is not a policy number")))?;
            if !present.contains(&n) {
                return Err(bad(format!(
                    "policy{n} not found under '{}' (present: {present:?})",
                    cpufreq_dir(root).display()
                )));
            }
        }
        for n in present {
            let s = spec.for_policy(n);
            if s.is_empty() {
                continue;
            }
            let dir = policy_dir(root, n);
            if let Some(g) = &s.governor {
                writable(&dir.join("scaling_governor")).map_err(bad)?;
                let path = dir.join("scaling_available_governors");
                let offered = read_trim(&path)
                    .ok_or_else(|| bad(format!("cannot read '{}'", path.display())))?;
                if !offered.split_whitespace().any(|o| o == g) {
                    return Err(bad(format!(
                        "policy{n} does not offer governor '{g}' (offered: {offered})"
                    )));
                }
            }
            if let Some(khz) = s.max_freq_khz {
                writable(&dir.join("scaling_max_freq")).map_err(bad)?;
                let lo = read_u64(&dir.join("cpuinfo_min_freq"));
                let hi = read_u64(&dir.join("cpuinfo_max_freq"));
                let (Some(lo), Some(hi)) = (lo, hi) else {
                    return Err(bad(format!(
                        "cannot read policy{n}'s cpuinfo_min_freq / cpuinfo_max_freq under '{}'",
                        dir.display()
                    )));
                };
                if !(lo..=hi).contains(&khz) {
                    return Err(bad(format!(
                        "max_freq_khz '{khz}' is outside policy{n}'s range {lo}..={hi} kHz"
                    )));
                }
                if read_u64(&dir.join("scaling_min_freq")).is_some_and(|min| min > khz) {
                    writable(&dir.join("scaling_min_freq")).map_err(bad)?;
                }
            }
            targets.push(PolicyTarget {
                policy: n,
                governor: s.governor.clone(),
                max_khz: s.max_freq_khz,
            });
        }
    }
    if let Some(id) = spec.nvpmodel {
        let conf = nvpmodel::conf_path(root);
        let offered = nvpmodel::offered(root).ok_or_else(|| {
            bad(format!(
                "no nvpmodel here ('{}' is missing): nvpmodel modes are for Jetson boards",
                conf.display()
            ))
        })?;
        if !offered.contains(&id) {
            return Err(bad(format!(
                "nvpmodel id '{id}' is not in '{}' (offered: {offered:?})",
                conf.display()
            )));
        }
    }
    Ok(Plan {
        mode: name.to_string(),
        policies: targets,
        nvpmodel: spec.nvpmodel,
    })
}

/// [`plan`] without keeping the plan: whether the board can apply `spec`.
pub fn check(name: &str, spec: &PowerModeSpec, root: &Path) -> Result<(), PowerModeError> {
    plan(name, spec, root).map(|_| ())
}

/// The state `plan` will replace (journal it before [`apply`]).
pub fn previous(plan: &Plan, root: &Path) -> Previous {
    Previous {
        mode: plan.mode.clone(),
        policies: plan
            .policies
            .iter()
            .map(|t| {
                let dir = policy_dir(root, t.policy);
                PolicyState {
                    policy: t.policy,
                    governor: read_trim(&dir.join("scaling_governor")),
                    min_khz: read_u64(&dir.join("scaling_min_freq")),
                    max_khz: read_u64(&dir.join("scaling_max_freq")),
                }
            })
            .collect(),
        nvpmodel: plan
            .nvpmodel
            .and_then(|_| nvpmodel::current(root).map(|(id, _)| id)),
    }
}

fn write(mode: &str, path: PathBuf, value: String) -> Result<(), PowerModeError> {
    std::fs::write(&path, format!("{value}\n")).map_err(|source| PowerModeError::Write {
        mode: mode.to_string(),
        path,
        value,
        source,
    })
}

fn set_nvpmodel(
    mode: &str,
    id: u32,
    root: &Path,
    setter: &dyn NvpmodelSetter,
) -> Result<(), PowerModeError> {
    if nvpmodel::current(root).map(|(i, _)| i) == Some(id) {
        return Ok(());
    }
    setter.set(id).map_err(|message| PowerModeError::Nvpmodel {
        mode: mode.to_string(),
        id,
        message,
    })
}

/// Writes the plan (see the module docs for the order).
pub fn apply(plan: &Plan, root: &Path, setter: &dyn NvpmodelSetter) -> Result<(), PowerModeError> {
    if let Some(id) = plan.nvpmodel {
        set_nvpmodel(&plan.mode, id, root, setter)?;
    }
    for t in &plan.policies {
        let dir = policy_dir(root, t.policy);
        if let Some(g) = &t.governor {
            write(&plan.mode, dir.join("scaling_governor"), g.clone())?;
        }
        if let Some(khz) = t.max_khz {
            if read_u64(&dir.join("scaling_min_freq")).is_some_and(|min| min > khz) {
                write(&plan.mode, dir.join("scaling_min_freq"), khz.to_string())?;
            }
            write(&plan.mode, dir.join("scaling_max_freq"), khz.to_string())?;
        }
    }
    Ok(())
}

/// What still reads back differently from the plan; `None` once all of it holds.
fn mismatch(plan: &Plan, root: &Path) -> Option<String> {
    if let Some(id) = plan.nvpmodel {
        let now = nvpmodel::current(root).map(|(i, _)| i);
        if now != Some(id) {
            return Some(format!("nvpmodel reads {now:?}, expected {id}"));
        }
    }
    for t in &plan.policies {
        let dir = policy_dir(root, t.policy);
        if let Some(g) = &t.governor {
            let now = read_trim(&dir.join("scaling_governor"));
            if now.as_deref() != Some(g.as_str()) {
                return Some(format!(
                    "policy{} scaling_governor reads {now:?}, expected '{g}'",
                    t.policy
                ));
            }
        }
        if let Some(khz) = t.max_khz {
            let max = read_u64(&dir.join("scaling_max_freq"));
            match max {
                Some(m) if m > 0 && m <= khz => {}
                other => {
                    return Some(format!(
                        "policy{} scaling_max_freq reads {other:?}, expected at most {khz}",
                        t.policy
                    ))
                }
            }
            let cur = read_u64(&dir.join("scaling_cur_freq"));
            let limit = khz as f64 * (1.0 + CUR_FREQ_SLACK);
            if let Some(c) = cur.filter(|c| *c as f64 > limit) {
                return Some(format!(
                    "policy{} scaling_cur_freq is still {c} kHz, above the new maximum {khz}",
                    t.policy
                ));
            }
        }
    }
    None
}

/// Polls the read-back every 10 ms until the plan holds, or `timeout` passes.
pub fn wait_applied(
    plan: &Plan,
    root: &Path,
    timeout: Duration,
) -> Result<Duration, PowerModeError> {
    let t0 = Instant::now();
    loop {
        let Some(what) = mismatch(plan, root) else {
            return Ok(t0.elapsed());
        };
        if t0.elapsed() >= timeout {
            return Err(PowerModeError::NotApplied {
                mode: plan.mode.clone(),
                waited_ms: t0.elapsed().as_millis() as u64,
                what,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Puts `prev` back. Tries every part and returns the first error.
pub fn restore(
    prev: &Previous,
    root: &Path,
    setter: &dyn NvpmodelSetter,
) -> Result<(), PowerModeError> {
    let mut first: Option<PowerModeError> = None;
    let mut keep = |r: Result<(), PowerModeError>| {
        if let Err(e) = r {
            tracing::error!("restoring the power mode: {e}");
            first.get_or_insert(e);
        }
    };
    if let Some(id) = prev.nvpmodel {
        keep(set_nvpmodel(&prev.mode, id, root, setter));
    }
    for p in &prev.policies {
        let dir = policy_dir(root, p.policy);
        if let Some(g) = &p.governor {
            keep(write(&prev.mode, dir.join("scaling_governor"), g.clone()));
        }
        if let Some(max) = p.max_khz {
            keep(write(
                &prev.mode,
                dir.join("scaling_max_freq"),
                max.to_string(),
            ));
        }
        if let Some(min) = p.min_khz {
            keep(write(
                &prev.mode,
                dir.join("scaling_min_freq"),
                min.to_string(),
            ));
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fake kernel and a fake nvpmodel for the tests.
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::{nvpmodel, NvpmodelSetter};
    use super::read_u64;

    /// Writes `pmode:000N` the way nvpmodel does, and counts the calls.
    #[derive(Default)]
    pub struct FakeNvpmodel {
        pub root: PathBuf,
        pub calls: std::sync::Mutex<Vec<u32>>,
    }

    impl NvpmodelSetter for FakeNvpmodel {
        fn set(&self, id: u32) -> Result<(), String> {
            self.calls.lock().unwrap().push(id);
            std::fs::write(
                nvpmodel::status_path(&self.root),
                format!("pmode:{id:04} fmode:quiet\n"),
            )
            .map_err(|e| e.to_string())
        }
    }

    /// A thread that lowers each policy's `scaling_cur_freq` to its
    /// `scaling_max_freq` 50 ms after a change, as a busy core would.
    pub struct FakeKernel {
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl FakeKernel {
        pub fn start(root: &Path) -> FakeKernel {
            let stop = Arc::new(AtomicBool::new(false));
            let (s, dir) = (stop.clone(), super::cpufreq_dir(root));
            let thread = std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                        let p = e.path();
                        let (Some(max), Some(cur)) = (
                            read_u64(&p.join("scaling_max_freq")),
                            read_u64(&p.join("scaling_cur_freq")),
                        ) else {
                            continue;
                        };
                        if cur > max {
                            std::thread::sleep(Duration::from_millis(50));
                            let _ = std::fs::write(p.join("scaling_cur_freq"), format!("{max}\n"));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            FakeKernel {
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for FakeKernel {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::read::fake::*;
    use super::super::CpufreqSetting;
    use super::testing::*;
    use super::*;

    fn spec(gov: Option<&str>, max: Option<u64>) -> PowerModeSpec {
        PowerModeSpec {
            governor: gov.map(str::to_string),
            max_freq_khz: max,
            ..PowerModeSpec::default()
        }
    }

    fn reason(e: PowerModeError) -> String {
        assert_eq!(e.code(), "power_mode_unavailable", "{e}");
        e.to_string()
    }

    #[test]
    fn what_the_board_cannot_apply_is_named() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        // No cpufreq at all.
        let e = reason(plan("eco", &spec(Some("powersave"), None), r).unwrap_err());
        assert!(e.contains("no cpufreq policies"), "{e}");
        x86(r);
        // intel_pstate offers two governors only.
        let e = reason(plan("eco", &spec(Some("schedutil"), None), r).unwrap_err());
        assert!(
            e.contains("does not offer governor 'schedutil'")
                && e.contains("performance powersave"),
            "{e}"
        );
        // Outside cpuinfo's range.
        let e = reason(plan("eco", &spec(None, Some(5_000_000)), r).unwrap_err());
        assert!(
            e.contains("'5000000' is outside policy0's range 400000..=4200000"),
            "{e}"
        );
        // A policy the board does not have.
        let mut s = spec(None, None);
        s.policies.insert(
            "7".into(),
            CpufreqSetting {
                governor: None,
                max_freq_khz: Some(1_000_000),
            },
        );
        let e = reason(plan("eco", &s, r).unwrap_err());
        assert!(e.contains("policy7 not found"), "{e}");
        // A file that cannot be opened for writing (tests run as root, so a
        // read-only mode bit would not stop them: a directory in its place does).
        let f = cpufreq_dir(r).join("policy2/scaling_max_freq");
        std::fs::remove_file(&f).unwrap();
        let e = reason(plan("eco", &spec(None, Some(2_000_000)), r).unwrap_err());
        assert!(e.contains("scaling_max_freq' does not exist"), "{e}");
        std::fs::create_dir(&f).unwrap();
        let e = reason(plan("eco", &spec(None, Some(2_000_000)), r).unwrap_err());
        assert!(
            e.contains("is not writable") && e.contains("tmpfiles"),
            "{e}"
        );
        // nvpmodel on a board without it.
        let n = PowerModeSpec {
            nvpmodel: Some(0),
            ..PowerModeSpec::default()
        };
        let e = reason(plan("maxn", &n, r).unwrap_err());
        assert!(e.contains("nvpmodel.conf' is missing"), "{e}");
    }

    #[test]
    fn apply_waits_for_the_readback_and_restore_puts_it_back() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        x86(r);
        let before =
            std::fs::read_to_string(cpufreq_dir(r).join("policy1/scaling_max_freq")).unwrap();
        let mut s = spec(Some("performance"), Some(1_000_000));
        // policy3 gets its own cap, below its scaling_min_freq after a bump.
        s.policies.insert(
            "3".into(),
            CpufreqSetting {
                governor: None,
                max_freq_khz: Some(800_000),
            },
        );
        put(
            r,
            "sys/devices/system/cpu/cpufreq/policy3/scaling_min_freq",
            "900000\n",
        );
        let p = plan("eco", &s, r).unwrap();
        assert_eq!(p.policies.len(), 4);
        let prev = previous(&p, r);
        assert_eq!(prev.policies[3].min_khz, Some(900_000));
        let nvp = FakeNvpmodel::default();
        apply(&p, r, &nvp).unwrap();
        // cur (1.1 GHz) is above the new 1 GHz cap until the fake kernel follows.
        let e = wait_applied(&p, r, Duration::from_millis(30)).unwrap_err();
        assert_eq!(e.code(), "power_mode_not_applied");
        assert!(e.to_string().contains("scaling_cur_freq is still"), "{e}");
        let _kernel = FakeKernel::start(r);
        let waited = wait_applied(&p, r, Duration::from_secs(5)).unwrap();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
        let rec = super::super::read(r, None);
        assert!(rec
            .cpufreq
            .iter()
            .all(|p| p.governor.as_deref() == Some("performance")));
        assert_eq!(rec.cpufreq[0].max_khz, Some(1_000_000));
        assert_eq!(
            (rec.cpufreq[3].min_khz, rec.cpufreq[3].max_khz),
            (Some(800_000), Some(800_000))
        );
        restore(&prev, r, &nvp).unwrap();
        let rec = super::super::read(r, None);
        assert!(rec
            .cpufreq
            .iter()
            .all(|p| p.governor.as_deref() == Some("powersave")));
        assert_eq!(rec.cpufreq[3].min_khz, Some(900_000));
        assert_eq!(rec.cpufreq[3].max_khz, Some(4_200_000));
        let after =
            std::fs::read_to_string(cpufreq_dir(r).join("policy1/scaling_max_freq")).unwrap();
        assert_eq!(before, after);
        assert!(nvp.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn jetson_mode_sets_nvpmodel_then_cpufreq_and_restores_both() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        orin_nano(r);
        let nvp = FakeNvpmodel {
            root: r.to_path_buf(),
            ..Default::default()
        };
        let s = PowerModeSpec {
            nvpmodel: Some(3),
            governor: Some("powersave".into()),
            ..PowerModeSpec::default()
        };
        // An id the conf does not offer.
        let bad = PowerModeSpec {
            nvpmodel: Some(9),
            ..PowerModeSpec::default()
        };
        let e = reason(plan("x", &bad, r).unwrap_err());
        assert!(
            e.contains("nvpmodel id '9'") && e.contains("[0, 1, 2, 3]"),
            "{e}"
        );
        let p = plan("7w", &s, r).unwrap();
        let prev = previous(&p, r);
        assert_eq!(prev.nvpmodel, Some(0));
        apply(&p, r, &nvp).unwrap();
        wait_applied(&p, r, Duration::from_secs(1)).unwrap();
        let rec = super::super::read(r, None);
        assert_eq!(
            rec.nvpmodel.as_ref().map(|n| (n.id, n.name.clone())),
            Some((3, Some("7W".into())))
        );
        restore(&prev, r, &nvp).unwrap();
        let rec = super::super::read(r, None);
        assert_eq!(rec.nvpmodel.map(|n| n.id), Some(0));
        assert!(rec
            .cpufreq
            .iter()
            .all(|p| p.governor.as_deref() == Some("schedutil")));
        assert_eq!(*nvp.calls.lock().unwrap(), vec![3, 0]);
    }
}
