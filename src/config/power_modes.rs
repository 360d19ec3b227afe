//! `[power_modes.NAME]` checks (issue 13): names, and that each mode sets something
//! sensible. Whether the board can apply a mode is checked per job, against its
//! sysfs (`powermode::check`): a config may serve boards with different CPUs.

use std::collections::BTreeMap;

use super::{ConfigError, Origin};
use crate::powermode::{CpufreqSetting, PowerModeSpec};

/// Highest `max_freq_khz` accepted (100 GHz: anything above is a unit mistake).
pub const MAX_FREQ_KHZ: u64 = 100_000_000;
/// Highest nvpmodel id accepted.
pub const MAX_NVPMODEL_ID: u32 = 255;

fn invalid(key: String, value: impl std::fmt::Display, allowed: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        origin: Origin::Unknown,
        allowed: allowed.into(),
    }
}

fn setting(key: &str, s: &CpufreqSetting) -> Result<(), ConfigError> {
    if let Some(g) = &s.governor {
        let ok = !g.is_empty()
            && g.len() <= 32
            && g.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(invalid(
                format!("{key}.governor"),
                g,
                "a cpufreq governor name (e.g. \"performance\", \"powersave\", \"schedutil\")",
            ));
        }
    }
    if let Some(f) = s.max_freq_khz {
        if f == 0 || f > MAX_FREQ_KHZ {
            return Err(invalid(
                format!("{key}.max_freq_khz"),
                f,
                "1..=100000000 kHz (e.g. 1500000 for 1.5 GHz)",
            ));
        }
    }
    Ok(())
}

/// Checks every `[power_modes.NAME]`.
pub(super) fn validate(modes: &BTreeMap<String, PowerModeSpec>) -> Result<(), ConfigError> {
    for (name, m) in modes {
        let key = format!("power_modes.{name}");
        if name.is_empty() || name.len() > 64 || !name.chars().all(super::validate::is_id_char) {
            return Err(invalid(
                key,
                name,
                "a mode name of 1 to 64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        setting(&key, &m.all_policies())?;
        for (n, s) in &m.policies {
            let pkey = format!("{key}.policies.{n}");
            if n.parse::<u32>().is_err() {
                return Err(invalid(pkey, n, "a cpufreq policy number (N of policyN)"));
            }
            if s.is_empty() {
                return Err(invalid(pkey, "{}", "governor and/or max_freq_khz"));
            }
            setting(&pkey, s)?;
        }
        if m.is_empty() {
            return Err(invalid(
                key,
                "{}",
                "a mode that sets at least one of governor, max_freq_khz, policies.N, nvpmodel",
            ));
        }
        if let Some(id) = m.nvpmodel {
            if id > MAX_NVPMODEL_ID {
                return Err(invalid(
                    format!("{key}.nvpmodel"),
                    id,
                    "an nvpmodel id 0..=255 (POWER_MODEL ID= in /etc/nvpmodel.conf)",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn err(toml_text: &str) -> String {
        let c: Config = toml::from_str(toml_text).unwrap();
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn valid_modes_pass_and_bad_ones_name_the_key() {
        let c: Config = toml::from_str(
            "[power_modes.eco]\ngovernor = \"powersave\"\nmax_freq_khz = 1500000\n\
             [power_modes.eco.policies.4]\nmax_freq_khz = 1200000\n[power_modes.maxn]\nnvpmodel = 0\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.power_modes.len(), 2);

        let e = err("[power_modes.eco]\n");
        assert!(
            e.contains("power_modes.eco") && e.contains("at least one"),
            "{e}"
        );
        let e = err("[power_modes.eco]\nmax_freq_khz = 0\n");
        assert!(
            e.contains("power_modes.eco.max_freq_khz") && e.contains("'0'"),
            "{e}"
        );
        let e = err("[power_modes.eco]\ngovernor = \"power save\"\n");
        assert!(e.contains("power_modes.eco.governor"), "{e}");
        let e = err("[power_modes.eco.policies.big]\nmax_freq_khz = 1000\n");
        assert!(
            e.contains("power_modes.eco.policies.big") && e.contains("policy number"),
            "{e}"
        );
        let e = err("[power_modes.eco.policies.4]\n");
        assert!(e.contains("power_modes.eco.policies.4"), "{e}");
        let e = err("[power_modes.\"a b\"]\nnvpmodel = 1\n");
        assert!(e.contains("'a b'"), "{e}");
        let e = err("[power_modes.j]\nnvpmodel = 999\n");
        assert!(
            e.contains("power_modes.j.nvpmodel") && e.contains("'999'"),
            "{e}"
        );
    }
}
