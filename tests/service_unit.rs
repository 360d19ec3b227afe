//! The packaged systemd files, checked by systemd's own tools (issue 6):
//! `systemd-analyze verify` on the unit (with and without the Jetson drop-in) and
//! `systemd-sysusers --root` on the sysusers file. CI installs Debian's `systemd`;
//! where a tool is absent the test says so and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The tool's path, or None after printing why the test is skipped.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("skipped: {name} not found (apt-get install systemd)");
    }
    found
}

/// The unit with ExecStart pointing at the binary cargo just built, so `verify` also
/// checks that the command exists and is executable.
fn unit_for_verify() -> String {
    let exe = env!("CARGO_BIN_EXE_edgewatt");
    let unit = read("systemd/edgewatt.service");
    assert!(
        unit.contains("ExecStart=/usr/bin/edgewatt "),
        "ExecStart moved"
    );
    unit.replace("ExecStart=/usr/bin/edgewatt ", &format!("ExecStart={exe} "))
}

/// Runs `systemd-analyze verify` on `unit` with `unit_dir` as the unit path; any
/// output is a finding (verify warns about unknown keys but still exits 0).
fn verify(analyze: &Path, unit_dir: &Path) {
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(unit_dir.join("edgewatt.service"))
        // The trailing colon keeps the built-in search path after ours.
        .env("SYSTEMD_UNIT_PATH", format!("{}:", unit_dir.display()))
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stderr.trim().is_empty() && stdout.trim().is_empty(),
        "systemd-analyze verify: {}\n{stdout}{stderr}",
        out.status
    );
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("edgewatt.service"), unit_for_verify()).unwrap();
    verify(&analyze, dir.path());
}

#[test]
fn unit_with_jetson_drop_in_passes_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("edgewatt.service"), unit_for_verify()).unwrap();
    let drop_in = dir.path().join("edgewatt.service.d");
    std::fs::create_dir(&drop_in).unwrap();
    std::fs::write(
        drop_in.join("jetson.conf"),
        read("systemd/jetson-video.conf"),
    )
    .unwrap();
    verify(&analyze, dir.path());
}

#[test]
fn verify_catches_a_bad_key() {
    // Proves the two tests above would fail on a typo rather than pass silently.
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bad = unit_for_verify().replace("ProtectHome=yes", "ProtectHom=yes");
    std::fs::write(dir.path().join("edgewatt.service"), bad).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(dir.path().join("edgewatt.service"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("ProtectHom"));
}

/// `Key=value` lines of the unit, comments dropped.
fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn unit_has_the_required_settings() {
    let unit = read("systemd/edgewatt.service");
    let s = settings(&unit);
    let has = |k: &str, v: &str| s.iter().any(|(a, b)| a == k && b == v);
    let set = |k: &str| s.iter().any(|(a, b)| a == k && !b.is_empty());
    for (k, v) in [
        ("Type", "notify"),
        ("Restart", "on-failure"),
        ("User", "edgewatt"),
        ("StateDirectory", "edgewatt edgewatt/models"),
        ("ConfigurationDirectory", "edgewatt"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("DevicePolicy", "closed"),
        ("DeviceAllow", "char-i2c rw"),
        ("SupplementaryGroups", "i2c"),
        ("SystemCallFilter", "@system-service"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("WantedBy", "multi-user.target"),
    ] {
        assert!(has(k, v), "missing {k}={v}");
    }
    for k in ["WatchdogSec", "TimeoutStopSec", "RestrictAddressFamilies"] {
        assert!(set(k), "missing {k}=");
    }
    // PrivateDevices=yes would hide /dev/i2c-* (issue 6).
    assert!(!has("PrivateDevices", "yes"));
    let exec = s.iter().find(|(k, _)| k == "ExecStart").unwrap();
    assert_eq!(
        exec.1,
        "/usr/bin/edgewatt daemon --config /etc/edgewatt/edgewatt.toml"
    );
}

#[test]
fn jetson_drop_in_adds_video() {
    let s = settings(&read("systemd/jetson-video.conf"));
    assert!(s
        .iter()
        .any(|(k, v)| k == "SupplementaryGroups" && v == "video"));
}

#[test]
fn sysusers_creates_user_and_i2c_group() {
    let Some(sysusers) = tool("systemd-sysusers") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let out = Command::new(sysusers)
        .arg(format!("--root={}", root.path().display()))
        .arg(repo().join("systemd/edgewatt.sysusers"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("edgewatt:") && l.contains(":/var/lib/edgewatt:")),
        "{passwd}"
    );
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("i2c:") && l.ends_with("edgewatt")),
        "{group}"
    );
}

#[test]
fn udev_rule_gives_i2c_group_the_bus() {
    let rules = read("udev/99-edgewatt-i2c.rules");
    let active: Vec<&str> = rules
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(active.len(), 1, "{active:?}");
    let rule = active[0];
    for part in ["SUBSYSTEM==\"i2c-dev\"", "GROUP=\"i2c\"", "MODE=\"0660\""] {
        assert!(rule.contains(part), "{rule} lacks {part}");
    }
}

#[test]
fn unit_with_pi5_pmic_drop_in_passes_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("edgewatt.service"), unit_for_verify()).unwrap();
    let drop_in = dir.path().join("edgewatt.service.d");
    std::fs::create_dir(&drop_in).unwrap();
    std::fs::write(drop_in.join("pi5-pmic.conf"), read("systemd/pi5-pmic.conf")).unwrap();
    verify(&analyze, dir.path());
    let s = settings(&read("systemd/pi5-pmic.conf"));
    assert!(s
        .iter()
        .any(|(k, v)| k == "DeviceAllow" && v == "/dev/vcio rw"));
    assert!(s
        .iter()
        .any(|(k, v)| k == "SupplementaryGroups" && v == "video"));
}

/// The packaged tmpfiles.d rule, applied by systemd-tmpfiles itself to a fake root
/// holding RAPL zones as the kernel creates them (0400 root:root): afterwards group
/// `edgewatt` may read every zone's and sub-zone's energy_uj, and nothing else moved.
#[test]
fn rapl_tmpfiles_rule_gives_edgewatt_read_access() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(tmpfiles) = tool("systemd-tmpfiles") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\nedgewatt:x:996:\n").unwrap();
    let zones = [
        "intel-rapl:0",
        "intel-rapl:0:0",
        "intel-rapl:0:2",
        "intel-rapl:1",
    ];
    for z in zones {
        let d = r.join("sys/class/powercap").join(z);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["energy_uj", "max_energy_range_uj"] {
            std::fs::write(d.join(f), "0\n").unwrap();
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o400)).unwrap();
        }
    }
    let out = Command::new(tmpfiles)
        .arg(format!("--root={}", r.display()))
        .arg("--create")
        .arg(repo().join("systemd/edgewatt-rapl.tmpfiles"))
        .output()
        .expect("run systemd-tmpfiles");
    assert!(
        out.status.success(),
        "systemd-tmpfiles: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for z in zones {
        let m = std::fs::metadata(r.join("sys/class/powercap").join(z).join("energy_uj")).unwrap();
        assert_eq!((m.mode() & 0o777, m.gid()), (0o440, 996), "{z}");
        let other = std::fs::metadata(
            r.join("sys/class/powercap")
                .join(z)
                .join("max_energy_range_uj"),
        )
        .unwrap();
        assert_eq!(other.mode() & 0o777, 0o400, "{z}: only energy_uj changes");
    }
}
