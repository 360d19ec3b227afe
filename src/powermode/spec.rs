//! `[power_modes.NAME]`: what a power mode sets. The same type is announced in the
//! board status (`power_modes`), so a submitter sees what each name means.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One power mode. Every part is optional; a mode sets at least one.
///
/// ```toml
/// [power_modes.eco]
/// governor = "powersave"        # every cpufreq policy…
/// max_freq_khz = 1500000
/// [power_modes.eco.policies.4]  # …except policy4, which gets its own cap
/// max_freq_khz = 1200000        # (and the top-level governor)
/// [power_modes.maxn]
/// nvpmodel = 0                  # Jetson: nvpmodel -m 0 (through its oneshot unit)
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowerModeSpec {
    /// cpufreq governor for every policy not in `policies`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub governor: Option<String>,
    /// `scaling_max_freq` for every policy not in `policies`, kHz.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_freq_khz: Option<u64>,
    /// Per-policy settings, keyed by the policy number (`policyN`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, CpufreqSetting>,
    /// Jetson nvpmodel mode id (`/etc/nvpmodel.conf` `POWER_MODEL ID=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvpmodel: Option<u32>,
}

/// What one cpufreq policy gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpufreqSetting {
    /// `scaling_governor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub governor: Option<String>,
    /// `scaling_max_freq`, kHz.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_freq_khz: Option<u64>,
}

impl CpufreqSetting {
    /// True when it sets nothing.
    pub fn is_empty(&self) -> bool {
        self.governor.is_none() && self.max_freq_khz.is_none()
    }
}

impl PowerModeSpec {
    /// The setting for every policy not listed in `policies`.
    pub fn all_policies(&self) -> CpufreqSetting {
        CpufreqSetting {
            governor: self.governor.clone(),
            max_freq_khz: self.max_freq_khz,
        }
    }

    /// What policy `n` gets: its `policies.N` entry, each field it leaves out taken
    /// from the mode's top-level `governor` / `max_freq_khz`.
    pub fn for_policy(&self, n: u32) -> CpufreqSetting {
        let top = self.all_policies();
        match self.policies.get(&n.to_string()) {
            Some(p) => CpufreqSetting {
                governor: p.governor.clone().or(top.governor),
                max_freq_khz: p.max_freq_khz.or(top.max_freq_khz),
            },
            None => top,
        }
    }

    /// True when the mode touches cpufreq at all.
    pub fn sets_cpufreq(&self) -> bool {
        !self.all_policies().is_empty() || self.policies.values().any(|p| !p.is_empty())
    }

    /// True when it sets nothing (a configuration error).
    pub fn is_empty(&self) -> bool {
        !self.sets_cpufreq() && self.nvpmodel.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let modes: BTreeMap<String, PowerModeSpec> = toml::from_str(
            r#"
            [eco]
            governor = "powersave"
            max_freq_khz = 1500000
            [eco.policies.4]
            max_freq_khz = 1200000
            [maxn]
            nvpmodel = 0
            "#,
        )
        .unwrap();
        let eco = &modes["eco"];
        assert_eq!(eco.governor.as_deref(), Some("powersave"));
        assert_eq!(eco.policies["4"].max_freq_khz, Some(1_200_000));
        assert!(eco.sets_cpufreq() && eco.nvpmodel.is_none());
        let p4 = eco.for_policy(4);
        assert_eq!(
            (p4.governor.as_deref(), p4.max_freq_khz),
            (Some("powersave"), Some(1_200_000))
        );
        assert_eq!(eco.for_policy(0).max_freq_khz, Some(1_500_000));
        assert_eq!(modes["maxn"].nvpmodel, Some(0));
        assert!(!modes["maxn"].sets_cpufreq() && !modes["maxn"].is_empty());
        assert!(PowerModeSpec::default().is_empty());
        // What the status announces: only what the mode sets.
        let j = serde_json::to_value(&modes["maxn"]).unwrap();
        assert_eq!(j, serde_json::json!({"nvpmodel": 0}));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<PowerModeSpec>("max_freq = 1").unwrap_err();
        assert!(e.to_string().contains("max_freq"), "{e}");
    }
}
