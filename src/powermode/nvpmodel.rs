//! The Jetson's nvpmodel, read from its files (no process, no root) and set through a
//! root oneshot unit.
//!
//! Reading follows what jtop and field scripts do: `/etc/nvpmodel.conf` lists the
//! modes as `< POWER_MODEL ID=0 NAME=MAXN >` lines (and `< PM_CONFIG DEFAULT=2 >`);
//! `/var/lib/nvpmodel/status` is what `nvpmodel` itself writes after a change,
//! `pmode:0002` (plus `fmode:…` on newer L4T). When the status file is absent the
//! board runs the configured default. `nvpmodel -q` prints the same facts
//! (`NV Power Mode: MAXN` then the id) but needs a process.
//!
//! Setting a mode needs root. The hardened unit has `NoNewPrivileges` and no root,
//! so the daemon asks systemd to start `edgewatt-power-mode@ID.service` (a packaged
//! root oneshot that runs `nvpmodel -m ID`); a packaged polkit rule lets user
//! `edgewatt` start only that unit. `systemctl start` talks D-Bus to systemd and
//! waits for the oneshot to finish; no setuid binary is involved, so it works under
//! `NoNewPrivileges`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::read_trim;

/// `etc/nvpmodel.conf` under `root`.
pub fn conf_path(root: &Path) -> PathBuf {
    root.join("etc/nvpmodel.conf")
}

/// `var/lib/nvpmodel/status` under `root`.
pub fn status_path(root: &Path) -> PathBuf {
    root.join("var/lib/nvpmodel/status")
}

/// The modes of an `nvpmodel.conf`: (id, name) in file order, and the default id.
pub fn parse_conf(text: &str) -> (Vec<(u32, String)>, Option<u32>) {
    let mut modes = Vec::new();
    let mut default = None;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('#') || !l.starts_with('<') {
            continue;
        }
        let inner = l.trim_start_matches('<').trim_end_matches('>').trim();
        let mut words = inner.split_whitespace();
        match words.next() {
            Some("POWER_MODEL") => {
                let (mut id, mut name) = (None, None);
                for w in words {
                    if let Some(v) = w.strip_prefix("ID=") {
                        id = v.parse().ok();
                    } else if let Some(v) = w.strip_prefix("NAME=") {
                        name = Some(v.to_string());
                    }
                }
                if let (Some(id), Some(name)) = (id, name) {
                    modes.push((id, name));
                }
            }
            Some("PM_CONFIG") => {
                for w in words {
                    if let Some(v) = w.strip_prefix("DEFAULT=") {
                        default = v.parse().ok();
                    }
                }
            }
            _ => {}
        }
    }
    (modes, default)
}

/// The id in a status file (`pmode:0002 fmode:quiet` → 2).
pub fn parse_status(text: &str) -> Option<u32> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("pmode:"))
        .and_then(|v| v.parse().ok())
}

/// The mode named by `nvpmodel -q` output (`NV Power Mode: MAXN` then `0`).
pub fn parse_query(text: &str) -> Option<(u32, String)> {
    let mut lines = text.lines().map(str::trim);
    while let Some(l) = lines.next() {
        if let Some(name) = l.strip_prefix("NV Power Mode:") {
            let id = lines.next()?.parse().ok()?;
            return Some((id, name.trim().to_string()));
        }
    }
    None
}

/// The current nvpmodel mode: (id, name when the conf names it). `None` when the
/// board has no `nvpmodel.conf` (not a Jetson, or nvpmodel not installed).
pub fn current(root: &Path) -> Option<(u32, Option<String>)> {
    let conf = read_trim(&conf_path(root))?;
    let (modes, default) = parse_conf(&conf);
    let id = read_trim(&status_path(root))
        .and_then(|s| parse_status(&s))
        .or(default)?;
    let name = modes.iter().find(|(i, _)| *i == id).map(|(_, n)| n.clone());
    Some((id, name))
}

/// The ids the board's conf offers; `None` without a conf.
pub fn offered(root: &Path) -> Option<Vec<u32>> {
    let conf = read_trim(&conf_path(root))?;
    Some(parse_conf(&conf).0.into_iter().map(|(i, _)| i).collect())
}

/// Sets an nvpmodel mode. Behind a trait: tests use a fake that writes the status
/// file as nvpmodel would.
pub trait NvpmodelSetter: Send + Sync {
    /// Sets mode `id` and returns when the setter has finished.
    fn set(&self, id: u32) -> Result<(), String>;
}

/// `systemctl start edgewatt-power-mode@ID.service` (see the module docs).
#[derive(Debug, Clone)]
pub struct SystemdNvpmodel {
    /// `systemctl`; tests point it elsewhere.
    pub systemctl: PathBuf,
}

impl Default for SystemdNvpmodel {
    fn default() -> Self {
        SystemdNvpmodel {
            systemctl: PathBuf::from("systemctl"),
        }
    }
}

/// The unit that sets nvpmodel mode `id`.
pub fn unit_name(id: u32) -> String {
    format!("edgewatt-power-mode@{id}.service")
}

impl NvpmodelSetter for SystemdNvpmodel {
    fn set(&self, id: u32) -> Result<(), String> {
        let unit = unit_name(id);
        let out = Command::new(&self.systemctl)
            .args(["start", "--no-ask-password", &unit])
            .output()
            .map_err(|e| format!("cannot run '{}': {e}", self.systemctl.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "'systemctl start {unit}' failed ({}): {} (is the polkit rule installed? see docs/service.md)",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An AGX Orin conf, abridged (the ids are not in power order on Orin Nano
    /// Super: 15W=0, 25W=1, MAXN_SUPER=2, 7W=3).
    const CONF: &str = "\
# Configuration file for Jetson Orin Nano
< PARAM TYPE=FILE NAME=CPU_ONLINE >
CORE_0 /sys/devices/system/cpu/cpu0/online
< POWER_MODEL ID=0 NAME=15W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=25W >
< POWER_MODEL ID=2 NAME=MAXN_SUPER >
< POWER_MODEL ID=3 NAME=7W >
# mandatory section to configure the default mode
< PM_CONFIG DEFAULT=2 >
";

    #[test]
    fn conf_lists_modes_and_default() {
        let (modes, default) = parse_conf(CONF);
        assert_eq!(
            modes,
            vec![
                (0, "15W".to_string()),
                (1, "25W".into()),
                (2, "MAXN_SUPER".into()),
                (3, "7W".into())
            ]
        );
        assert_eq!(default, Some(2));
    }

    #[test]
    fn status_and_query_outputs() {
        assert_eq!(parse_status("pmode:0002 fmode:quiet\n"), Some(2));
        assert_eq!(parse_status("pmode:0000"), Some(0));
        assert_eq!(parse_status("garbage"), None);
        assert_eq!(
            parse_query("NV Power Mode: MAXN\n0\n"),
            Some((0, "MAXN".into()))
        );
        assert_eq!(parse_query("NVPM ERROR: failed"), None);
    }

    #[test]
    fn current_reads_status_else_default_and_absent_without_conf() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(current(d.path()), None);
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(conf_path(d.path()), CONF).unwrap();
        assert_eq!(current(d.path()), Some((2, Some("MAXN_SUPER".into()))));
        std::fs::create_dir_all(d.path().join("var/lib/nvpmodel")).unwrap();
        std::fs::write(status_path(d.path()), "pmode:0003 fmode:quiet").unwrap();
        assert_eq!(current(d.path()), Some((3, Some("7W".into()))));
        assert_eq!(offered(d.path()), Some(vec![0, 1, 2, 3]));
    }

    #[test]
    fn systemd_setter_reports_a_failing_systemctl() {
        let s = SystemdNvpmodel {
            systemctl: PathBuf::from("/bin/false"),
        };
        let e = s.set(1).unwrap_err();
        assert!(e.contains("edgewatt-power-mode@1.service"), "{e}");
        let s = SystemdNvpmodel {
            systemctl: PathBuf::from("/nonexistent/systemctl"),
        };
        assert!(s.set(1).unwrap_err().contains("cannot run"));
    }
}
