//! The board's power mode as it is: per cpufreq policy the governor, limits and the
//! frequency seen; nvpmodel (Jetson); devfreq (Jetson GPU/EMC); the Pi firmware's
//! `arm_freq`. Absent is absent: a part the board does not have is left out of the
//! record (`null`/omitted), never reported as 0.
//!
//! The "frequency seen" is `scaling_cur_freq` sampled at the job's boundaries: once
//! when the record is taken (after the mode is applied, before the job runs) and
//! once per [`PowerModeRecord::observe`] (the daemon calls it when the job ends).
//! The daemon then widens each policy's range with the thermal recorder's per-CPU
//! range over the job (`thermal.cpus`, 10 Hz by default;
//! `daemon::power_mode::widen_with_thermal`), so with the recorder on it is the
//! range the CPUs ran at during the job.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{cpufreq_dir, nvpmodel, read_trim, read_u64};
use crate::power::pi5pmic::gencmd::Gencmd;

/// What a result's `power_mode` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PowerModeRecord {
    /// The `[power_modes.NAME]` the job asked for; absent when it named none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One entry per cpufreq policy; absent without cpufreq.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpufreq: Vec<PolicyRecord>,
    /// Jetson nvpmodel mode; absent without `/etc/nvpmodel.conf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvpmodel: Option<NvpmodelRecord>,
    /// devfreq devices (Jetson GPU, EMC where exposed); absent without any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devfreq: Vec<DevfreqRecord>,
    /// Raspberry Pi firmware `arm_freq` (the configured cap), MHz; absent where
    /// the firmware cannot be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm_freq_mhz: Option<u32>,
    /// How many times `scaling_cur_freq` / devfreq `cur_freq` were sampled for the
    /// seen ranges (the job's start and end: 2, plus the thermal recorder's readings
    /// when they widened the cpufreq ranges); absent when there is nothing to sample.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub freq_samples: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One cpufreq policy (`policyN`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// N of `policyN`.
    pub policy: u32,
    /// `related_cpus`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u32>,
    /// `scaling_governor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governor: Option<String>,
    /// `scaling_min_freq`, kHz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_khz: Option<u64>,
    /// `scaling_max_freq`, kHz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_khz: Option<u64>,
    /// Lowest `scaling_cur_freq` sampled, kHz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_min_khz: Option<u64>,
    /// Highest `scaling_cur_freq` sampled, kHz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_max_khz: Option<u64>,
}

/// The Jetson's nvpmodel mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvpmodelRecord {
    /// `POWER_MODEL ID`.
    pub id: u32,
    /// `POWER_MODEL NAME`, when the conf names the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One devfreq device (`/sys/class/devfreq/NAME`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DevfreqRecord {
    /// The device directory's name (`17000000.ga10b`, `17000000.gpu`).
    pub device: String,
    /// `gpu`, `emc` or `dla` when the name says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `governor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governor: Option<String>,
    /// `cur_freq` when the record was taken, Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cur_hz: Option<u64>,
    /// `max_freq`, Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hz: Option<u64>,
    /// Lowest / highest `cur_freq` sampled, Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_min_hz: Option<u64>,
    /// Highest `cur_freq` sampled, Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_max_hz: Option<u64>,
}

/// The policy numbers under `root` (sorted).
pub fn policies(root: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(cpufreq_dir(root))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("policy")?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

/// What a devfreq device is, from its name: Jetson GPUs are `*.gpu` or named for the
/// GPU (`ga10b` Orin, `gv11b` Xavier, `gp10b` TX2, `gm20b` Nano).
pub fn devfreq_kind(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    if ["gpu", "ga10b", "gv11b", "gp10b", "gm20b", "gb10b"]
        .iter()
        .any(|g| n.ends_with(&format!(".{g}")) || n == *g)
    {
        Some("gpu")
    } else if n.contains("emc") {
        Some("emc")
    } else if n.contains("dla") {
        Some("dla")
    } else {
        None
    }
}

/// `arm_freq=2400` → 2400.
pub fn parse_arm_freq(reply: &str) -> Option<u32> {
    reply
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .strip_prefix("arm_freq=")?
        .trim()
        .parse()
        .ok()
}

fn cpus_list(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

fn widen(lo: &mut Option<u64>, hi: &mut Option<u64>, v: Option<u64>) {
    if let Some(v) = v {
        *lo = Some(lo.map_or(v, |l| l.min(v)));
        *hi = Some(hi.map_or(v, |h| h.max(v)));
    }
}

/// Reads the board's mode under `root`; `gencmd` (the Pi's firmware, when there)
/// answers `get_config arm_freq`.
pub fn read(root: &Path, gencmd: Option<&mut dyn Gencmd>) -> PowerModeRecord {
    let dir = cpufreq_dir(root);
    let cpufreq: Vec<PolicyRecord> = policies(root)
        .into_iter()
        .map(|n| {
            let p = dir.join(format!("policy{n}"));
            let cur = read_u64(&p.join("scaling_cur_freq"));
            PolicyRecord {
                policy: n,
                cpus: read_trim(&p.join("related_cpus"))
                    .or_else(|| read_trim(&p.join("affected_cpus")))
                    .map(|s| cpus_list(&s))
                    .unwrap_or_default(),
                governor: read_trim(&p.join("scaling_governor")),
                min_khz: read_u64(&p.join("scaling_min_freq")),
                max_khz: read_u64(&p.join("scaling_max_freq")),
                seen_min_khz: cur,
                seen_max_khz: cur,
            }
        })
        .collect();
    let mut devfreq: Vec<DevfreqRecord> = std::fs::read_dir(root.join("sys/class/devfreq"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let device = e.file_name().to_str()?.to_string();
            let p = e.path();
            let cur = read_u64(&p.join("cur_freq"));
            Some(DevfreqRecord {
                kind: devfreq_kind(&device).map(str::to_string),
                governor: read_trim(&p.join("governor")),
                cur_hz: cur,
                max_hz: read_u64(&p.join("max_freq")),
                seen_min_hz: cur,
                seen_max_hz: cur,
                device,
            })
        })
        .collect();
    devfreq.sort_by(|a, b| a.device.cmp(&b.device));
    let arm_freq_mhz = gencmd.and_then(|g| match g.request("get_config arm_freq") {
        Ok(reply) => parse_arm_freq(&reply),
        Err(e) => {
            tracing::debug!("power mode: cannot read arm_freq: {e}");
            None
        }
    });
    let freq_samples = u32::from(!cpufreq.is_empty() || !devfreq.is_empty());
    PowerModeRecord {
        name: None,
        cpufreq,
        nvpmodel: nvpmodel::current(root).map(|(id, name)| NvpmodelRecord { id, name }),
        devfreq,
        arm_freq_mhz,
        freq_samples,
    }
}

impl PowerModeRecord {
    /// Samples the current frequencies again and widens the seen ranges.
    pub fn observe(&mut self, root: &Path) {
        let dir = cpufreq_dir(root);
        for p in &mut self.cpufreq {
            let cur = read_u64(&dir.join(format!("policy{}/scaling_cur_freq", p.policy)));
            widen(&mut p.seen_min_khz, &mut p.seen_max_khz, cur);
        }
        for d in &mut self.devfreq {
            let cur = read_u64(
                &root
                    .join("sys/class/devfreq")
                    .join(&d.device)
                    .join("cur_freq"),
            );
            widen(&mut d.seen_min_hz, &mut d.seen_max_hz, cur);
        }
        if !self.cpufreq.is_empty() || !self.devfreq.is_empty() {
            self.freq_samples += 1;
        }
    }

    /// True when nothing at all could be read (no cpufreq, nvpmodel, devfreq, firmware).
    pub fn is_empty(&self) -> bool {
        self.cpufreq.is_empty()
            && self.nvpmodel.is_none()
            && self.devfreq.is_empty()
            && self.arm_freq_mhz.is_none()
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! Fake sysfs trees shaped like real boards.
    use std::path::Path;

    /// Writes `text` to `root/rel`, creating directories.
    pub fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// One cpufreq policy.
    pub fn policy(root: &Path, n: u32, cpus: &str, gov: &str, min: u64, max: u64, cur: u64) {
        let d = format!("sys/devices/system/cpu/cpufreq/policy{n}");
        put(root, &format!("{d}/related_cpus"), &format!("{cpus}\n"));
        put(root, &format!("{d}/affected_cpus"), &format!("{cpus}\n"));
        put(root, &format!("{d}/scaling_governor"), &format!("{gov}\n"));
        put(root, &format!("{d}/scaling_min_freq"), &format!("{min}\n"));
        put(root, &format!("{d}/scaling_max_freq"), &format!("{max}\n"));
        put(root, &format!("{d}/scaling_cur_freq"), &format!("{cur}\n"));
        put(root, &format!("{d}/cpuinfo_min_freq"), &format!("{min}\n"));
        put(root, &format!("{d}/cpuinfo_max_freq"), &format!("{max}\n"));
        put(
            root,
            &format!("{d}/scaling_available_governors"),
            "conservative ondemand userspace powersave performance schedutil\n",
        );
    }

    /// A Pi 5: one policy of four Cortex-A76 at 1.5–2.4 GHz.
    pub fn pi5(root: &Path) {
        policy(
            root, 0, "0 1 2 3", "ondemand", 1_500_000, 2_400_000, 2_400_000,
        );
    }

    /// A Jetson Orin Nano: two policies, nvpmodel conf + status, the GPU's devfreq.
    pub fn orin_nano(root: &Path) {
        policy(
            root,
            0,
            "0 1 2 3",
            "schedutil",
            115_200,
            1_728_000,
            1_510_400,
        );
        policy(root, 4, "4 5", "schedutil", 115_200, 1_728_000, 729_600);
        put(
            root,
            "etc/nvpmodel.conf",
            "< POWER_MODEL ID=0 NAME=15W >\n< POWER_MODEL ID=1 NAME=25W >\n\
             < POWER_MODEL ID=2 NAME=MAXN_SUPER >\n< POWER_MODEL ID=3 NAME=7W >\n< PM_CONFIG DEFAULT=2 >\n",
        );
        put(root, "var/lib/nvpmodel/status", "pmode:0000 fmode:quiet\n");
        let g = "sys/class/devfreq/17000000.gpu";
        put(root, &format!("{g}/cur_freq"), "306000000\n");
        put(root, &format!("{g}/max_freq"), "1020000000\n");
        put(root, &format!("{g}/min_freq"), "306000000\n");
        put(root, &format!("{g}/governor"), "nvhost_podgov\n");
    }

    /// An x86 mini PC with intel_pstate: per-CPU policies, two governors only.
    pub fn x86(root: &Path) {
        for n in 0..4 {
            policy(
                root,
                n,
                &n.to_string(),
                "powersave",
                400_000,
                4_200_000,
                1_100_000 + u64::from(n),
            );
            put(
                root,
                &format!("sys/devices/system/cpu/cpufreq/policy{n}/scaling_available_governors"),
                "performance powersave\n",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;
    use crate::power::pi5pmic::gencmd::GencmdError;

    struct Firmware(&'static str);
    impl Gencmd for Firmware {
        fn request(&mut self, cmd: &str) -> Result<String, GencmdError> {
            assert_eq!(cmd, "get_config arm_freq");
            Ok(self.0.to_string())
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    #[test]
    fn pi_like_tree_with_firmware() {
        let d = tempfile::tempdir().unwrap();
        pi5(d.path());
        let mut fw = Firmware("arm_freq=2400\0");
        let r = read(d.path(), Some(&mut fw));
        assert_eq!(r.cpufreq.len(), 1);
        let p = &r.cpufreq[0];
        assert_eq!((p.policy, p.cpus.clone()), (0, vec![0, 1, 2, 3]));
        assert_eq!(p.governor.as_deref(), Some("ondemand"));
        assert_eq!((p.min_khz, p.max_khz), (Some(1_500_000), Some(2_400_000)));
        assert_eq!(r.arm_freq_mhz, Some(2400));
        assert!(r.nvpmodel.is_none() && r.devfreq.is_empty());
        let j = serde_json::to_value(&r).unwrap();
        assert!(
            j.get("nvpmodel").is_none() && j.get("devfreq").is_none(),
            "{j}"
        );
    }

    #[test]
    fn jetson_like_tree_with_nvpmodel_and_devfreq() {
        let d = tempfile::tempdir().unwrap();
        orin_nano(d.path());
        let mut r = read(d.path(), None);
        assert_eq!(
            r.cpufreq.iter().map(|p| p.policy).collect::<Vec<_>>(),
            vec![0, 4]
        );
        assert_eq!(
            r.nvpmodel,
            Some(NvpmodelRecord {
                id: 0,
                name: Some("15W".into())
            })
        );
        let g = &r.devfreq[0];
        assert_eq!(
            (g.device.as_str(), g.kind.as_deref()),
            ("17000000.gpu", Some("gpu"))
        );
        assert_eq!(
            (g.cur_hz, g.max_hz),
            (Some(306_000_000), Some(1_020_000_000))
        );
        assert_eq!(r.arm_freq_mhz, None);
        // Frequencies move during the job; the record keeps the range.
        put(
            d.path(),
            "sys/devices/system/cpu/cpufreq/policy4/scaling_cur_freq",
            "1728000\n",
        );
        put(
            d.path(),
            "sys/class/devfreq/17000000.gpu/cur_freq",
            "1020000000\n",
        );
        r.observe(d.path());
        let p4 = &r.cpufreq[1];
        assert_eq!(
            (p4.seen_min_khz, p4.seen_max_khz),
            (Some(729_600), Some(1_728_000))
        );
        assert_eq!(r.devfreq[0].seen_max_hz, Some(1_020_000_000));
        assert_eq!(r.freq_samples, 2);
    }

    #[test]
    fn x86_like_tree() {
        let d = tempfile::tempdir().unwrap();
        x86(d.path());
        let r = read(d.path(), None);
        assert_eq!(r.cpufreq.len(), 4);
        assert!(r
            .cpufreq
            .iter()
            .all(|p| p.governor.as_deref() == Some("powersave")));
        assert_eq!(r.cpufreq[3].seen_max_khz, Some(1_100_003));
    }

    #[test]
    fn absent_everything_is_absent_not_zero() {
        let d = tempfile::tempdir().unwrap();
        let r = read(d.path(), None);
        assert!(r.is_empty());
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j, serde_json::json!({}));
        // A policy with unreadable files: the fields are omitted, not 0.
        put(
            d.path(),
            "sys/devices/system/cpu/cpufreq/policy0/scaling_governor",
            "performance\n",
        );
        let r = read(d.path(), None);
        let j = serde_json::to_value(&r.cpufreq[0]).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"policy": 0, "governor": "performance"})
        );
    }

    #[test]
    fn names_and_replies() {
        assert_eq!(devfreq_kind("17000000.ga10b"), Some("gpu"));
        assert_eq!(devfreq_kind("17000000.gpu"), Some("gpu"));
        assert_eq!(devfreq_kind("57000000.gpu"), Some("gpu"));
        assert_eq!(devfreq_kind("2c60000.external-memory-controller"), None);
        assert_eq!(devfreq_kind("emc"), Some("emc"));
        assert_eq!(devfreq_kind("15880000.nvdla0"), Some("dla"));
        assert_eq!(parse_arm_freq("arm_freq=2400"), Some(2400));
        assert_eq!(
            parse_arm_freq("error=2 error_msg=\"Invalid arguments\""),
            None
        );
    }
}
