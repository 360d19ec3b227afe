//! The packaged files that let the unprivileged, NoNewPrivileges daemon set power
//! modes (issue 13), checked by the real tools: the cpufreq tmpfiles rule applied by
//! `systemd-tmpfiles --root` to a fake tree, the nvpmodel oneshot template (an
//! instance of it) through `systemd-analyze verify`, the main unit still verifying
//! with its `ReadWritePaths=`, and the polkit rule's logic evaluated by a real
//! JavaScript engine (node) with polkit's `addRule` API. Where a tool is absent the
//! test says so and passes.
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
fn power_mode_oneshot_and_the_unit_pass_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let template =
        std::fs::read_to_string(repo().join("systemd/edgewatt-power-mode@.service")).unwrap();
    assert!(template.contains("ExecStart=/usr/sbin/nvpmodel -m %i"));
    assert!(template.contains("Type=oneshot"));
    // nvpmodel exists only on a Jetson: point ExecStart at a program that exists here
    // so verify checks everything else.
    let here = template.replace("ExecStart=/usr/sbin/nvpmodel ", "ExecStart=/bin/true ");
    std::fs::write(dir.path().join("edgewatt-power-mode@.service"), &here).unwrap();
    std::fs::write(dir.path().join("edgewatt-power-mode@2.service"), &here).unwrap();
    verify(&analyze, dir.path(), "edgewatt-power-mode@2.service");

    let exe = env!("CARGO_BIN_EXE_edgewatt");
    let unit = std::fs::read_to_string(repo().join("systemd/edgewatt.service")).unwrap();
    assert!(unit.contains("ReadWritePaths=-/sys/devices/system/cpu/cpufreq"));
    assert!(unit.contains("NoNewPrivileges=yes"));
    let unit = unit.replace("ExecStart=/usr/bin/edgewatt ", &format!("ExecStart={exe} "));
    std::fs::write(dir.path().join("edgewatt.service"), unit).unwrap();
    verify(&analyze, dir.path(), "edgewatt.service");
}

/// Runs the rule under node with polkit's API (`polkit.addRule`, `action.id`,
/// `action.lookup`, `subject.user`, `polkit.Result`) and returns what it answers
/// for each (user, verb, unit).
fn polkit_answers(node: &Path, cases: &[(&str, &str, &str)]) -> Vec<String> {
    let rule = std::fs::read_to_string(repo().join("polkit/50-edgewatt-power-mode.rules")).unwrap();
    let cases_js: Vec<String> = cases
        .iter()
        .map(|(u, v, n)| format!("[{u:?}, {v:?}, {n:?}]"))
        .collect();
    let script = format!(
        r#"
const rules = [];
const polkit = {{ addRule: (f) => rules.push(f), Result: {{ YES: "yes", NO: "no" }} }};
{rule}
for (const [user, verb, unit] of [{cases}]) {{
  const action = {{ id: "org.freedesktop.systemd1.manage-units",
                    lookup: (k) => ({{ verb: verb, unit: unit }})[k] }};
  const subject = {{ user: user }};
  let answer = "none";
  for (const r of rules) {{ const a = r(action, subject); if (a !== undefined) {{ answer = a; break; }} }}
  console.log(answer);
}}
"#,
        cases = cases_js.join(", ")
    );
    let out = Command::new(node)
        .arg("-e")
        .arg(script)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn polkit_rule_lets_edgewatt_start_only_the_power_mode_units() {
    let Some(node) = tool("node") else {
        return;
    };
    let answers = polkit_answers(
        &node,
        &[
            ("edgewatt", "start", "edgewatt-power-mode@0.service"),
            ("edgewatt", "start", "edgewatt-power-mode@15.service"),
            ("edgewatt", "stop", "edgewatt-power-mode@0.service"),
            ("edgewatt", "start", "edgewatt.service"),
            ("edgewatt", "start", "edgewatt-power-mode@x;rm.service"),
            ("edgewatt", "start", "ssh.service"),
            ("mallory", "start", "edgewatt-power-mode@0.service"),
        ],
    );
    assert_eq!(
        answers,
        vec!["yes", "yes", "none", "none", "none", "none", "none"]
    );
}
