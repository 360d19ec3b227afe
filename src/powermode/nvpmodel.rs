//! The Jetson's nvpmodel, read from its files (no process, no root) and set through a
//! request file that a root unit answers.
//!
//! Reading follows what jtop and field scripts do: `/etc/nvpmodel.conf` lists the
//! modes as `< POWER_MODEL ID=0 NAME=MAXN >` lines (and `< PM_CONFIG DEFAULT=2 >`);
//! `/var/lib/nvpmodel/status` is what `nvpmodel` itself writes after a change,
//! `pmode:0002` (plus `fmode:…` on newer L4T). When the status file is absent the
//! board runs the configured default. `nvpmodel -q` prints the same facts
//! (`NV Power Mode: MAXN` then the id) but needs a process.
//!
//! Setting a mode needs root. The hardened unit has `NoNewPrivileges` and no root,
//! and JetPack 5/6 ship polkit 0.105, which ignores JavaScript rules, so the daemon
//! asks through a file instead of D-Bus: it replaces
//! `/var/lib/edgewatt/power-mode.request` with `ID NONCE`; the packaged
//! `edgewatt-power-mode.path` (root) sees the change and starts
//! `edgewatt-power-mode.service`, whose script validates the id against
//! `/etc/nvpmodel.conf`, runs `nvpmodel -m ID` and answers
//! `NONCE ID ok` or `NONCE ID failed MESSAGE` in
//! `/var/lib/edgewatt-power-mode/result` (root-owned). [`RequestFile`] waits for its
//! nonce there; the caller then reads the mode back from the status file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// The daemon's side of the request file (see the module docs).
#[derive(Debug, Clone)]
pub struct RequestFile {
    /// `var/lib/edgewatt/power-mode.request` under the root.
    pub request: PathBuf,
    /// `var/lib/edgewatt-power-mode/result` under the root.
    pub result: PathBuf,
    /// How long to wait for the answer (nvpmodel itself takes a second or two).
    pub timeout: Duration,
}

/// What [`RequestFile`] waits for by default.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The request file under `root` (the path `edgewatt-power-mode.path` watches).
pub fn request_path(root: &Path) -> PathBuf {
    root.join("var/lib/edgewatt/power-mode.request")
}

/// The answer file under `root` (written by `edgewatt-power-mode.service`).
pub fn result_path(root: &Path) -> PathBuf {
    root.join("var/lib/edgewatt-power-mode/result")
}

/// An answer in the result file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The request's nonce.
    pub nonce: u64,
    /// The mode it asked for.
    pub id: u32,
    /// `Ok` or the script's message.
    pub outcome: Result<(), String>,
}

/// Parses `NONCE ID ok` / `NONCE ID failed MESSAGE`; `None` for anything else.
pub fn parse_answer(text: &str) -> Option<Answer> {
    let line = text.lines().next()?;
    let mut parts = line.splitn(4, ' ');
    let nonce = parts.next()?.parse().ok()?;
    let id = parts.next()?.parse().ok()?;
    let outcome = match parts.next()? {
        "ok" => Ok(()),
        "failed" => Err(parts.next().unwrap_or("").trim().to_string()),
        _ => return None,
    };
    Some(Answer { nonce, id, outcome })
}

/// A nonce no earlier request of this or an earlier daemon used: wall-clock
/// nanoseconds, strictly increasing within the process.
fn next_nonce() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

impl RequestFile {
    /// The packaged paths under `root` (`/` on a board).
    pub fn under(root: &Path) -> RequestFile {
        RequestFile {
            request: request_path(root),
            result: result_path(root),
            timeout: ANSWER_TIMEOUT,
        }
    }

    /// Replaces the request in one rename, so the root unit never reads half a line.
    fn write(&self, id: u32, nonce: u64) -> Result<(), String> {
        let tmp = self.request.with_extension("request.tmp");
        std::fs::write(&tmp, format!("{id} {nonce}\n"))
            .and_then(|()| std::fs::rename(&tmp, &self.request))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                format!(
                    "cannot write the request '{}': {e} (the daemon's state directory must be writable)",
                    self.request.display()
                )
            })
    }
}

impl NvpmodelSetter for RequestFile {
    fn set(&self, id: u32) -> Result<(), String> {
        let nonce = next_nonce();
        self.write(id, nonce)?;
        let t0 = Instant::now();
        loop {
            let answer = std::fs::read_to_string(&self.result)
                .ok()
                .and_then(|t| parse_answer(&t));
            if let Some(a) = answer.filter(|a| a.nonce == nonce) {
                return match a.outcome {
                    Ok(()) if a.id == id => Ok(()),
                    Ok(()) => Err(format!("the answer names mode {}, not {id}", a.id)),
                    Err(m) => Err(m),
                };
            }
            if t0.elapsed() >= self.timeout {
                return Err(format!(
                    "no answer in '{}' within {} s to the request in '{}': is edgewatt-power-mode.path active? (systemctl status edgewatt-power-mode.path; journalctl -u edgewatt-power-mode; docs/service.md)",
                    self.result.display(),
                    self.timeout.as_secs_f64(),
                    self.request.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
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
    fn answers_parse_and_garbage_does_not() {
        assert_eq!(
            parse_answer("17 2 ok \n"),
            Some(Answer {
                nonce: 17,
                id: 2,
                outcome: Ok(())
            })
        );
        assert_eq!(
            parse_answer("18 3 failed mode 3 is not a POWER_MODEL ID in /etc/nvpmodel.conf\n"),
            Some(Answer {
                nonce: 18,
                id: 3,
                outcome: Err("mode 3 is not a POWER_MODEL ID in /etc/nvpmodel.conf".into())
            })
        );
        for bad in ["", "17", "17 2", "17 2 maybe", "x 2 ok", "17 y ok"] {
            assert_eq!(parse_answer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn nonces_increase() {
        let a = next_nonce();
        let b = next_nonce();
        assert!(b > a);
    }

    /// A stand-in for the root unit: waits for a request and answers it with
    /// `reply(id, nonce)`, after writing a stale answer first.
    fn answer_once(
        rf: &RequestFile,
        reply: impl Fn(u32, u64) -> String + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let (req, res) = (rf.request.clone(), rf.result.clone());
        let before = std::fs::read_to_string(&req).ok();
        std::thread::spawn(move || {
            std::fs::write(&res, "1 0 ok\n").unwrap();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Some(t) = std::fs::read_to_string(&req)
                    .ok()
                    .filter(|t| Some(t) != before.as_ref())
                {
                    let mut w = t.split_whitespace();
                    let id: u32 = w.next().unwrap().parse().unwrap();
                    let nonce: u64 = w.next().unwrap().parse().unwrap();
                    std::thread::sleep(Duration::from_millis(60));
                    std::fs::write(&res, reply(id, nonce)).unwrap();
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    }

    fn request_file(d: &Path) -> RequestFile {
        let rf = RequestFile::under(d);
        std::fs::create_dir_all(rf.request.parent().unwrap()).unwrap();
        std::fs::create_dir_all(rf.result.parent().unwrap()).unwrap();
        rf
    }

    #[test]
    fn request_file_waits_for_its_own_answer() {
        let d = tempfile::tempdir().unwrap();
        let rf = request_file(d.path());
        let unit = answer_once(&rf, |id, nonce| format!("{nonce} {id} ok\n"));
        rf.set(2).unwrap();
        unit.join().unwrap();
        let req = std::fs::read_to_string(&rf.request).unwrap();
        assert!(req.starts_with("2 "), "{req}");
        assert!(!rf.request.with_extension("request.tmp").exists());

        let unit = answer_once(&rf, |id, nonce| {
            format!("{nonce} {id} failed nvpmodel -m {id} exited 1: NVPM ERROR\n")
        });
        let e = rf.set(3).unwrap_err();
        unit.join().unwrap();
        assert_eq!(e, "nvpmodel -m 3 exited 1: NVPM ERROR");
    }

    #[test]
    fn request_file_without_the_unit_times_out_saying_what_to_check() {
        let d = tempfile::tempdir().unwrap();
        let mut rf = request_file(d.path());
        rf.timeout = Duration::from_millis(150);
        let e = rf.set(1).unwrap_err();
        assert!(e.contains("edgewatt-power-mode.path"), "{e}");
        assert!(e.contains("power-mode.request"), "{e}");
        let mut rf = RequestFile::under(&d.path().join("nowhere"));
        rf.timeout = Duration::from_millis(50);
        let e = rf.set(1).unwrap_err();
        assert!(e.contains("cannot write the request"), "{e}");
    }
}
