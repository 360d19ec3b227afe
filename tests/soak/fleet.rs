//! The soak's boards: real `edgewatt daemon` processes, each with a simulated INA219
//! whose fault plan fires during jobs, one of them with its store on a small tmpfs
//! that the harness fills up and frees again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::daemon_support::daemon_config;

/// The daemon binary: `EDGEWATT_BIN` when set (a copy taken right after the build,
/// where several worktrees share one target directory), else the one cargo built.
fn bin() -> String {
    std::env::var("EDGEWATT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_edgewatt").to_string())
}

/// Size of the disk board's store filesystem.
pub const TMPFS_BYTES: u64 = 24 * 1024 * 1024;

/// Each board's simulated I2C faults, repeating so they land inside jobs: a NACK
/// storm, a stuck bus (clock held low), a brown-out (registers back to POR) plus
/// single bus errors.
fn faults(board: usize) -> &'static str {
    match board % 3 {
        0 => r#"[{ kind = "nack", at_ms = 1500, every_ms = 2500, count = 40 }]"#,
        1 => r#"[{ kind = "stuck", at_ms = 1200, every_ms = 3000, duration_ms = 250 }]"#,
        _ => {
            r#"[{ kind = "brown_out", at_ms = 1000, every_ms = 4000 },
                { kind = "bus_error", at_ms = 700, every_ms = 1700, count = 3 }]"#
        }
    }
}

/// How the disk board's store runs out of space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskMode {
    /// A tmpfs of [`TMPFS_BYTES`] mounted for the run (needs root / CAP_SYS_ADMIN).
    Tmpfs,
    /// `mount` not permitted: no disk-full episodes.
    Unavailable,
}

/// One board.
pub struct Board {
    pub device: String,
    /// Its state directory (the store lives here).
    pub dir: PathBuf,
    cfg_path: PathBuf,
    /// All its stderr, across restarts.
    pub log: PathBuf,
    child: Option<Child>,
    /// `kill -9`ed and to be started again at this instant.
    pub restart_at: Option<Instant>,
    pub starts: u32,
}

impl Board {
    pub fn new(root: &Path, broker_url: &str, board: usize) -> Board {
        let device = format!("soak{board}");
        let dir = root.join(&device);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = daemon_config(broker_url, &device, &dir);
        cfg.jobs.drain_timeout_s = 3;
        cfg.power.thermal_interval_ms = 0;
        cfg.store.max_bytes = 8 * 1024 * 1024;
        cfg.power.sensors = vec![toml::from_str(&format!(
            r#"
            kind = "sim"
            chip = "ina219"
            shunt_ohms = 0.1
            max_current_a = 3.2
            rate_hz = 200.0
            rails = ["5V_IN"]
            total = true
            load = [{{ source = "cpu", idle_w = 2.5, max_w = 6.0, bus_v = 5.0 }}]
            faults = {}
            "#,
            faults(board)
        ))
        .expect("sim sensor spec")];
        let cfg_path = dir.join("edgewatt.toml");
        std::fs::write(&cfg_path, toml::to_string(&cfg).unwrap()).unwrap();
        Board {
            log: root.join(format!("{device}.log")),
            device,
            dir,
            cfg_path,
            child: None,
            restart_at: None,
            starts: 0,
        }
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin())
            .arg("--config")
            .arg(&self.cfg_path)
            .arg("daemon")
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("EDGEWATT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start edgewatt daemon");
        self.child = Some(child);
        self.restart_at = None;
        self.starts += 1;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`, reaped; started again `down` later by [`Board::due`].
    pub fn kill9(&mut self, down: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.restart_at = Some(Instant::now() + down);
    }

    /// Restarts the board if its downtime is over.
    pub fn due(&mut self) {
        if self.restart_at.is_some_and(|t| Instant::now() >= t) {
            self.start();
        }
    }

    /// Whether the process is still alive (a daemon that died on its own is a defect).
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => self.restart_at.is_some(),
        }
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// SIGTERM and wait (up to 40 s); the exit status.
    pub fn sigterm(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(40) {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// Bytes of the store file with its WAL.
    pub fn store_bytes(&self) -> u64 {
        ["edgewatt.db", "edgewatt.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Row counts: (journal, unsent outbox, stored jobs, traces).
    pub fn rows(&self) -> (i64, i64, i64, i64) {
        let c = rusqlite::Connection::open(self.dir.join("edgewatt.db")).unwrap();
        let n = |q: &str| c.query_row(q, [], |r| r.get::<_, i64>(0)).unwrap_or(-1);
        (
            n("SELECT count(*) FROM journal"),
            n("SELECT count(*) FROM outbox WHERE sent_unix_ns IS NULL"),
            n("SELECT count(*) FROM jobs"),
            n("SELECT count(*) FROM traces"),
        )
    }

    /// The journal's state of job `id`.
    pub fn journal_state(&self, id: &str) -> Option<String> {
        let c = rusqlite::Connection::open(self.dir.join("edgewatt.db")).ok()?;
        c.query_row("SELECT state FROM journal WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .ok()
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The disk board's state directory on a small tmpfs, and the filler that fills it.
pub struct Disk {
    pub mode: DiskMode,
    mount: PathBuf,
    filler: PathBuf,
    pub full: bool,
}

impl Disk {
    /// Mounts a tmpfs at `dir` (created); falls back to [`DiskMode::Unavailable`].
    pub fn mount(dir: &Path) -> Disk {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={TMPFS_BYTES}"))
            .arg("tmpfs")
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Disk {
            mode: if ok {
                DiskMode::Tmpfs
            } else {
                DiskMode::Unavailable
            },
            mount: dir.to_path_buf(),
            filler: dir.join("filler"),
            full: false,
        }
    }

    /// Writes the filler until the filesystem says ENOSPC.
    pub fn fill(&mut self) {
        if self.mode != DiskMode::Tmpfs {
            return;
        }
        let mut f = std::fs::File::create(&self.filler).unwrap();
        let chunk = vec![0xA5u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        // The last partial chunk: byte by byte is too slow, 4 KiB pages are enough.
        while f.write_all(&chunk[..4096]).is_ok() {}
        let _ = f.sync_all();
        self.full = true;
    }

    /// Removes the filler.
    pub fn free(&mut self) {
        let _ = std::fs::remove_file(&self.filler);
        self.full = false;
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if self.mode == DiskMode::Tmpfs {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}
