//! The packaged files that let the unprivileged, NoNewPrivileges daemon set power
//! modes (issue 13), checked by the real tools: the cpufreq tmpfiles rule applied by
//! `systemd-tmpfiles --root` to a fake tree; the nvpmodel watcher
//! (`edgewatt-power-mode.path`) and its root oneshot through `systemd-analyze
//! verify`, the main unit still verifying with its `ReadWritePaths=` and `Wants=`;
//! and the oneshot's script run by `sh` against a fake `nvpmodel`. Where a tool is
//! absent the test says so and passes.
//!
//! `cargo test --release --test service_power_mode`

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("skipped: {name} not found");
    }
    found
}

fn verify(analyze: &Path, dir: &Path, unit: &str) {
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(dir.join(unit))
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify {unit}: {}\n{text}",
        out.status
    );
}

#[test]
fn cpufreq_tmpfiles_rule_gives_group_edgewatt_the_mode_files() {
    let Some(tmpfiles) = tool("systemd-tmpfiles") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\nedgewatt:x:996:\n").unwrap();
    let writable = ["scaling_governor", "scaling_max_freq", "scaling_min_freq"];
    let untouched = ["scaling_cur_freq", "cpuinfo_max_freq", "scaling_setspeed"];
    for p in ["policy0", "policy4"] {
        let d = r.join("sys/devices/system/cpu/cpufreq").join(p);
        std::fs::create_dir_all(&d).unwrap();
        for f in writable.iter().chain(&untouched) {
            std::fs::write(d.join(f), "0\n").unwrap();
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let out = Command::new(tmpfiles)
        .arg(format!("--root={}", r.display()))
        .arg("--create")
        .arg(repo().join("systemd/edgewatt-cpufreq.tmpfiles"))
        .output()
        .expect("run systemd-tmpfiles");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-tmpfiles: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in ["policy0", "policy4"] {
        let d = r.join("sys/devices/system/cpu/cpufreq").join(p);
        for f in writable {
            let m = std::fs::metadata(d.join(f)).unwrap();
            assert_eq!((m.mode() & 0o777, m.gid()), (0o664, 996), "{p}/{f}");
        }
        for f in untouched {
            let m = std::fs::metadata(d.join(f)).unwrap();
            assert_eq!(
                (m.mode() & 0o777, m.gid()),
                (0o644, 0),
                "{p}/{f} must not change"
            );
        }
    }
}

#[test]
fn power_mode_watcher_oneshot_and_the_unit_pass_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = std::fs::read_to_string(repo().join("systemd/edgewatt-power-mode.path")).unwrap();
    assert!(path.contains("PathChanged=/var/lib/edgewatt/power-mode.request"));
    let service =
        std::fs::read_to_string(repo().join("systemd/edgewatt-power-mode.service")).unwrap();
    assert!(service.contains("Type=oneshot"));
    assert!(service.contains("ExecStart=/usr/libexec/edgewatt/power-mode\n"));
    assert!(service.contains("StateDirectory=edgewatt-power-mode"));
    assert!(service.contains("StartLimitIntervalSec=0"));
    // As installed, but ExecStart is the script in this checkout (verify checks it exists).
    let script = repo().join("systemd/edgewatt-power-mode");
    let service = service.replace(
        "ExecStart=/usr/libexec/edgewatt/power-mode",
        &format!("ExecStart={}", script.display()),
    );
    std::fs::write(dir.path().join("edgewatt-power-mode.path"), &path).unwrap();
    std::fs::write(dir.path().join("edgewatt-power-mode.service"), &service).unwrap();
    verify(&analyze, dir.path(), "edgewatt-power-mode.path");
    verify(&analyze, dir.path(), "edgewatt-power-mode.service");

    let exe = env!("CARGO_BIN_EXE_edgewatt");
    let unit = std::fs::read_to_string(repo().join("systemd/edgewatt.service")).unwrap();
    assert!(unit.contains("ReadWritePaths=-/sys/devices/system/cpu/cpufreq"));
    assert!(unit.contains("NoNewPrivileges=yes"));
    assert!(unit.contains("Wants=edgewatt-power-mode.path"));
    let unit = unit.replace("ExecStart=/usr/bin/edgewatt ", &format!("ExecStart={exe} "));
    std::fs::write(dir.path().join("edgewatt.service"), unit).unwrap();
    verify(&analyze, dir.path(), "edgewatt.service");
}

/// A board for the script: an nvpmodel.conf, the shared fake `nvpmodel`
/// (tests/fixtures/fake-nvpmodel: logs its arguments, writes the status file as the
/// real one does, `-m 2` fails with NVPM ERROR, `-m 3` asks for a reboot), and the
/// request/answer paths.
struct Board {
    dir: tempfile::TempDir,
}

impl Board {
    fn new() -> Board {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("nvpmodel.conf"),
            "< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=1 NAME=15W >\n\
             < POWER_MODEL ID=2 NAME=30W >\n< POWER_MODEL ID=3 NAME=7W >\n< PM_CONFIG DEFAULT=0 >\n",
        )
        .unwrap();
        let fake = std::fs::read_to_string(repo().join("tests/fixtures/fake-nvpmodel"))
            .unwrap()
            .replace("@DIR@", &d.display().to_string());
        std::fs::write(d.join("nvpmodel"), fake).unwrap();
        std::fs::set_permissions(d.join("nvpmodel"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        Board { dir }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs the script as the unit would (with the test paths) on `request`
    /// (`None`: no request file); returns (exit code, result file, stderr).
    fn run(&self, request: Option<&str>) -> (i32, String, String) {
        if let Some(r) = request {
            let _ = std::fs::remove_file(self.p("request"));
            std::fs::write(self.p("request"), r).unwrap();
        }
        let out = Command::new("sh")
            .arg(repo().join("systemd/edgewatt-power-mode"))
            .args([
                self.p("request"),
                self.p("out"),
                self.p("nvpmodel"),
                self.p("nvpmodel.conf"),
            ])
            .output()
            .expect("run sh");
        (
            out.status.code().unwrap_or(-1),
            std::fs::read_to_string(self.p("out/result")).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.p("calls")).unwrap_or_default()
    }
}

#[test]
fn power_mode_script_runs_nvpmodel_only_for_a_valid_request() {
    let b = Board::new();
    // No request (the event of a removal): nothing.
    assert_eq!(b.run(None).0, 0);
    assert!(!b.p("out/result").exists());

    let (rc, result, _) = b.run(Some("1 1001\n"));
    assert_eq!((rc, result.as_str()), (0, "1001 1 ok \n"));
    assert_eq!(
        std::fs::read_to_string(b.p("status")).unwrap(),
        "pmode:0001 fmode:quiet\n"
    );
    let meta = std::fs::metadata(b.p("out/result")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    assert_eq!(meta.uid(), std::fs::metadata(b.dir.path()).unwrap().uid());
    // The same request again (a unit restart): answered already, nvpmodel not rerun.
    assert_eq!(b.run(Some("1 1001\n")).0, 0);
    assert_eq!(b.calls(), "-m 1\n");

    // Refusals are answers: exit 0 (the daemon reports them; the unit is not failed).
    let (rc, result, _) = b.run(Some("2 1002\n"));
    assert_eq!(rc, 0);
    assert!(
        result.starts_with("1002 2 failed nvpmodel -m 2 exited 1: NVPM ERROR: failed to write"),
        "{result}"
    );
    let (rc, result, _) = b.run(Some("3 1003\n"));
    assert_eq!(rc, 0);
    assert!(
        result.starts_with("1003 3 failed mode 3 takes effect only after a reboot"),
        "{result}"
    );
    // Not in the conf: answered, nvpmodel never sees it.
    let (rc, result, _) = b.run(Some("7 1004\n"));
    assert_eq!(rc, 0);
    assert!(
        result.starts_with("1004 7 failed mode 7 is not a POWER_MODEL ID in"),
        "{result}"
    );
    assert_eq!(b.calls(), "-m 1\n-m 2\n-m 3\n");

    // Malformed requests: refused without an answer (the daemon never writes these)
    // and without running anything.
    for bad in [
        "01 1005\n",
        "1\n",
        "1 x\n",
        "-m 1\n",
        "1;reboot 1006\n",
        "1 1007 extra\n",
        "",
        "1000 1008\n",
    ] {
        let (rc, result, err) = b.run(Some(bad));
        assert_eq!(rc, 1, "{bad:?}");
        assert!(result.starts_with("1004 "), "{bad:?}: {result}");
        assert!(err.contains("not 'ID NONCE'"), "{bad:?}: {err}");
    }
    // A link planted where the request goes is never followed.
    std::fs::remove_file(b.p("request")).unwrap();
    std::os::unix::fs::symlink(b.p("nvpmodel.conf"), b.p("request")).unwrap();
    let (rc, _, err) = b.run(None);
    assert_eq!(rc, 1);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(b.calls(), "-m 1\n-m 2\n-m 3\n");

    // A board without nvpmodel.conf: answered with why.
    std::fs::remove_file(b.p("nvpmodel.conf")).unwrap();
    std::fs::remove_file(b.p("request")).unwrap();
    let (rc, result, _) = b.run(Some("0 1009\n"));
    assert_eq!(rc, 0);
    assert!(
        result.contains("nvpmodel modes are for Jetson boards"),
        "{result}"
    );
}
