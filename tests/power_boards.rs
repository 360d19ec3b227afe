//! Power on boards as they come, against fake sysfs trees and a fake firmware tool:
//! hwmon as found on real Jetsons (AGX Orin's two chips with NC channels, Orin
//! NX/Nano, repeated labels, an unreadable channel), RAPL energy counters (exact
//! per-interval energy, wraparound, no double counting) and the Raspberry Pi 5 PMIC
//! through `vcgencmd` (its real rate, gaps on errors). Each kind also runs a traced
//! job whose energy summary must be valid.

use std::fs;
use std::path::Path;
use std::time::Duration;

use edgewatt::clock::{monotonic_ns, ClockAnchor};
use edgewatt::infer::events::FinishReason;
use edgewatt::power::hwmon::{discover, HwmonSensor};
use edgewatt::power::rapl::RaplSensor;
use edgewatt::power::{start_sampler, SamplerHandle, SamplerOptions, Sensor, SensorSpec};
use edgewatt::trace::energy::{integrate, rail_points};
use edgewatt::trace::{
    capture, summarize, EnergyOptions, EnergySummary, JobCapture, Marker, MarkerKind,
};
use tokio_util::sync::CancellationToken;

const MS: u64 = 1_000_000;

fn put(root: &Path, rel: &str, value: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, format!("{value}\n")).expect("write");
}

/// A mainline ina3221 hwmon device as JetPack 5/6 lays it out: the I2C device
/// `sys/bus/i2c/devices/<bus-addr>` with `hwmon/hwmonN`, and `sys/class/hwmon/hwmonN`
/// pointing at it. `channels`: (label, mV, mA), or `None` for an NC channel whose
/// `in*_input` cannot be read (as on real boards).
fn ina3221(root: &Path, hwmon: &str, bus_addr: &str, channels: [(&str, Option<(u32, u32)>); 3]) {
    let dev = format!("sys/bus/i2c/devices/{bus_addr}");
    let d = format!("{dev}/hwmon/{hwmon}");
    put(root, &format!("{dev}/name"), "ina3221");
    put(root, &format!("{d}/name"), "ina3221");
    put(root, &format!("{d}/update_interval"), "10");
    for (i, (label, v)) in channels.iter().enumerate() {
        let n = i + 1;
        put(root, &format!("{d}/in{n}_label"), label);
        put(root, &format!("{d}/in{n}_enable"), "1");
        match v {
            Some((mv, ma)) => {
                put(root, &format!("{d}/in{n}_input"), &mv.to_string());
                put(root, &format!("{d}/curr{n}_input"), &ma.to_string());
            }
            None => {
                // Reading fails (EISDIR here; EIO/ENODEV on a board).
                fs::create_dir_all(root.join(format!("{d}/in{n}_input"))).expect("mkdir");
                fs::create_dir_all(root.join(format!("{d}/curr{n}_input"))).expect("mkdir");
            }
        }
        put(root, &format!("{d}/curr{n}_max"), "32760");
        put(root, &format!("{d}/curr{n}_crit"), "32760");
        put(root, &format!("{d}/in{}_input", n + 3), "12");
    }
    put(root, &format!("{d}/in7_label"), "sum of shunt voltages");
    put(root, &format!("{d}/in7_input"), "36");
    put(root, &format!("{d}/curr4_input"), "1000");
    fs::create_dir_all(root.join("sys/class/hwmon")).expect("mkdir");
    std::os::unix::fs::symlink(root.join(&d), root.join(format!("sys/class/hwmon/{hwmon}")))
        .expect("symlink");
    std::os::unix::fs::symlink(root.join(&dev), root.join(format!("{d}/device"))).expect("symlink");
}

/// Jetson AGX Orin, JetPack 6: the module's rails on 1-0040 (VIN_SYS_5V0 is the
/// module input, the total), VDDQ_VDD2_1V8AO beside two NC channels on 1-0041.
fn agx_orin(root: &Path) {
    put(root, "sys/class/hwmon/hwmon0/name", "tegra_thermal");
    ina3221(
        root,
        "hwmon1",
        "1-0040",
        [
            ("VDD_GPU_SOC", Some((5008, 1520))),
            ("VDD_CPU_CV", Some((5008, 480))),
            ("VIN_SYS_5V0", Some((5016, 1088))),
        ],
    );
    ina3221(
        root,
        "hwmon2",
        "1-0041",
        [
            ("NC", None),
            ("VDDQ_VDD2_1V8AO", Some((4992, 184))),
            ("NC", None),
        ],
    );
}

/// Jetson Orin NX / Nano, JetPack 6: VDD_IN (module input, total), VDD_CPU_GPU_CV, VDD_SOC.
fn orin_nx(root: &Path, hwmon: &str, bus_addr: &str) {
    ina3221(
        root,
        hwmon,
        bus_addr,
        [
            ("VDD_IN", Some((5072, 1234))),
            ("VDD_CPU_GPU_CV", Some((5064, 456))),
            ("VDD_SOC", Some((5064, 789))),
        ],
    );
}

fn names(s: &dyn Sensor) -> Vec<(String, bool)> {
    s.rails().into_iter().map(|r| (r.name, r.total)).collect()
}

#[test]
fn agx_orin_two_chips_nc_and_sum_channel_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    agx_orin(dir.path());
    let devs = discover(dir.path(), None, &[]).expect("found");
    assert_eq!(devs.len(), 2, "both ina3221 chips");
    assert_eq!(devs[0].bus_address.as_deref(), Some("1-0040"));
    assert_eq!(devs[1].bus_address.as_deref(), Some("1-0041"));
    let mut s = HwmonSensor::open(dir.path(), None, &[], None, None).expect("open");
    assert_eq!(
        names(&s),
        [
            ("VDD_GPU_SOC".to_string(), false),
            ("VDD_CPU_CV".into(), false),
            ("VIN_SYS_5V0".into(), true),
            ("VDDQ_VDD2_1V8AO".into(), false),
        ]
    );
    s.init().expect("init: the NC channels are not read");
    let mut out = vec![];
    assert!(s.poll(&mut out).expect("poll").fresh);
    assert_eq!(out.len(), 4);
    assert_eq!(out[2].power_uw, 5016 * 1_088_000 / 1000);
    assert_eq!(out[3].current_ua, 184_000);
}

#[test]
fn orin_nx_rails_and_repeated_labels_qualified_by_bus_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    orin_nx(dir.path(), "hwmon1", "1-0040");
    let s = HwmonSensor::open(dir.path(), None, &[], None, None).expect("open");
    assert_eq!(
        names(&s),
        [
            ("VDD_IN".to_string(), true),
            ("VDD_CPU_GPU_CV".into(), false),
            ("VDD_SOC".into(), false),
        ]
    );
    // A second chip with the same labels (a carrier board's own monitor).
    orin_nx(dir.path(), "hwmon3", "7-0041");
    let s = HwmonSensor::open(dir.path(), None, &[], None, None).expect("open");
    let n: Vec<String> = s.rails().into_iter().map(|r| r.name).collect();
    assert_eq!(
        n,
        [
            "VDD_IN@1-0040",
            "VDD_CPU_GPU_CV@1-0040",
            "VDD_SOC@1-0040",
            "VDD_IN@7-0041",
            "VDD_CPU_GPU_CV@7-0041",
            "VDD_SOC@7-0041"
        ]
    );
    let mut unique = n.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), n.len());
}

#[test]
fn unreadable_channel_dropped_at_probe_never_errors_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A labelled channel whose input fails to read (not NC: a driver that errors).
    ina3221(
        dir.path(),
        "hwmon1",
        "1-0040",
        [
            ("VDD_IN", Some((5072, 1234))),
            ("VDD_BROKEN", None),
            ("VDD_SOC", Some((5064, 789))),
        ],
    );
    let spec: SensorSpec = toml::from_str(&format!(
        "kind = \"hwmon\"\nsysfs_root = \"{}\"\nrate_hz = 200.0\n",
        dir.path().display()
    ))
    .expect("spec");
    let h =
        start_sampler(&[spec], SamplerOptions::default(), CancellationToken::new()).expect("start");
    let rails: Vec<String> = h.rails().into_iter().map(|r| r.name).collect();
    assert_eq!(rails, ["VDD_IN", "VDD_SOC"]);
    std::thread::sleep(Duration::from_millis(150));
    put(
        dir.path(),
        "sys/bus/i2c/devices/1-0040/hwmon/hwmon1/curr1_input",
        "2000",
    );
    std::thread::sleep(Duration::from_millis(100));
    h.shutdown();
    let stats = h.stats();
    assert!(
        stats.errors_by_kind.is_empty(),
        "{:?}",
        stats.errors_by_kind
    );
    assert_eq!(stats.gaps, 0);
    assert!(
        stats.rails.iter().all(|r| r.samples >= 2),
        "{:?}",
        stats.rails
    );
}

// ---------------------------------------------------------------- RAPL

/// A real max_energy_range_uj (2^32 energy units of 61 µJ).
const RAPL_RANGE_UJ: u64 = 262_143_328_850;

fn rapl_zone(root: &Path, zone: &str, name: &str, energy_uj: u64) {
    let d = format!("sys/class/powercap/{zone}");
    put(root, &format!("{d}/name"), name);
    put(root, &format!("{d}/energy_uj"), &energy_uj.to_string());
    put(
        root,
        &format!("{d}/max_energy_range_uj"),
        &RAPL_RANGE_UJ.to_string(),
    );
    put(root, &format!("{d}/enabled"), "1");
}

/// A mini PC: package-0 with core, uncore and dram sub-zones, and psys. The package
/// starts just below its range, so it wraps during the test.
fn rapl_tree(root: &Path) {
    put(root, "sys/class/powercap/intel-rapl/enabled", "1");
    rapl_zone(root, "intel-rapl:0", "package-0", RAPL_RANGE_UJ - 300_000);
    rapl_zone(root, "intel-rapl:0:0", "core", 1_000);
    rapl_zone(root, "intel-rapl:0:1", "uncore", 2_000);
    rapl_zone(root, "intel-rapl:0:2", "dram", 3_000);
    rapl_zone(root, "intel-rapl:1", "psys", 4_000);
}

/// Writes a counter atomically (sysfs never shows a half-written value; a plain
/// rewrite would, to a reader racing the writer).
fn set_energy(root: &Path, zone: &str, energy_uj: u64) {
    let dir = root.join(format!("sys/class/powercap/{zone}"));
    let tmp = dir.join(format!(".energy_uj.{:?}", std::thread::current().id()));
    fs::write(&tmp, format!("{energy_uj}\n")).expect("write");
    fs::rename(&tmp, dir.join("energy_uj")).expect("rename");
}

#[test]
fn rapl_window_integral_is_the_counter_difference_through_a_wrap() {
    let dir = tempfile::tempdir().expect("tempdir");
    rapl_tree(dir.path());
    let mut s = RaplSensor::open(dir.path(), &[], Some(100.0)).expect("open");
    assert_eq!(
        names(&s),
        [
            ("package-0".to_string(), false),
            ("core@package-0".into(), false),
            ("uncore@package-0".into(), false),
            ("dram@package-0".into(), false),
            ("psys".into(), false),
            ("RAPL_TOTAL".into(), true),
        ]
    );
    s.init().expect("baseline");
    let (mut pkg, mut core, mut dram) = (RAPL_RANGE_UJ - 300_000, 1_000u64, 3_000u64);
    let mut expected_total_uj = 0u64;
    let mut samples = vec![];
    for i in 0..12u64 {
        std::thread::sleep(Duration::from_millis(3 + i % 4));
        // Uneven energy per interval; the package wraps on the third step.
        let d_pkg = 97_000 + 13_003 * i;
        let d_dram = 5_000 + 7 * i;
        pkg = (pkg + d_pkg) % RAPL_RANGE_UJ;
        core += d_pkg / 2;
        dram += d_dram;
        expected_total_uj += d_pkg + d_dram;
        set_energy(dir.path(), "intel-rapl:0", pkg);
        set_energy(dir.path(), "intel-rapl:0:0", core);
        set_energy(dir.path(), "intel-rapl:0:2", dram);
        assert!(s.poll(&mut samples).expect("poll").fresh);
    }
    assert!(pkg < RAPL_RANGE_UJ / 2, "the package counter wrapped");
    // Trapezoids over the samples, as the energy summary integrates them.
    let total = rail_points(&samples, 5);
    let (from, to) = (total[0].0, total[total.len() - 1].0);
    let e = integrate(&total, from, to, u64::MAX);
    let got_uj = e.energy_uw_ns / 1e9;
    // Exact up to rounding the mean power to whole µW (≤ 0.5 µW × interval each, so
    // ≤ 0.5 µW × the whole window; the window grows when a loaded machine oversleeps).
    let rounding_uj = 0.5 * (to - from) as f64 / 1e9 + 1e-6;
    assert!(
        (got_uj - expected_total_uj as f64).abs() <= rounding_uj,
        "integral {got_uj} µJ, counters {expected_total_uj} µJ"
    );
    assert_eq!(e.uncovered_ns, 0);
    // The core sub-zone is its own rail and never in the total.
    let core_pts = rail_points(&samples, 1);
    let core_uj = integrate(&core_pts, from, to, u64::MAX).energy_uw_ns / 1e9;
    let d_core: u64 = (0..12u64).map(|i| (97_000 + 13_003 * i) / 2).sum();
    assert!(
        (core_uj - d_core as f64).abs() <= rounding_uj,
        "{core_uj} vs {d_core} (rounding bound {rounding_uj} µJ)"
    );
    // A window ending inside a step takes its share of that step.
    let mid = from + (to - from) / 2;
    let a = integrate(&total, from, mid, u64::MAX).energy_uw_ns;
    let b = integrate(&total, mid, to, u64::MAX).energy_uw_ns;
    assert!((a + b - e.energy_uw_ns).abs() < 1.0);
}

#[test]
fn rapl_rail_filter_and_missing_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    rapl_tree(dir.path());
    let s = RaplSensor::open(dir.path(), &["package-0".into()], None).expect("open");
    assert_eq!(
        names(&s),
        [
            ("package-0".to_string(), false),
            ("RAPL_TOTAL".into(), true)
        ]
    );
    assert_eq!(s.period_ns(), 100_000_000);
    assert!(s.info().settings["covers"].contains("not the board"));
    let empty = tempfile::tempdir().expect("tempdir");
    let e = RaplSensor::open(empty.path(), &[], None)
        .err()
        .expect("no zones");
    assert!(e.to_string().contains("no RAPL zone"), "{e}");
    // An unparsable counter names its file.
    put(
        dir.path(),
        "sys/class/powercap/intel-rapl:0/energy_uj",
        "n/a",
    );
    let e = RaplSensor::open(dir.path(), &[], None)
        .err()
        .expect("bad counter");
    assert!(e.to_string().contains("intel-rapl:0/energy_uj"), "{e}");
}

// ---------------------------------------------------------------- traced jobs

fn marker(t_ns: u64, kind: MarkerKind) -> Marker {
    Marker { t_ns, kind }
}

/// Runs a 0.6 s "job" (markers on the real clock) against a running sampler while
/// `during` changes the fake source, then captures and summarises it.
fn traced_job(h: &SamplerHandle, mut during: impl FnMut(u64)) -> EnergySummary {
    let opts = EnergyOptions {
        idle_window_ns: 300 * MS,
        max_gap_ns: 250 * MS,
    };
    let anchor = ClockAnchor::now();
    std::thread::sleep(Duration::from_millis(350));
    let s = monotonic_ns();
    let mut markers = vec![
        marker(s, MarkerKind::LoadStart),
        marker(s + 100 * MS, MarkerKind::LoadEnd { cached: false }),
        marker(s + 110 * MS, MarkerKind::PrefillStart { prompt_tokens: 16 }),
        marker(s + 250 * MS, MarkerKind::PrefillEnd),
    ];
    for i in 0..10u32 {
        markers.push(marker(
            s + 250 * MS + u64::from(i + 1) * 30 * MS,
            MarkerKind::Token { index: i },
        ));
    }
    markers.push(marker(
        s + 600 * MS,
        MarkerKind::Done {
            finish_reason: FinishReason::Length,
        },
    ));
    while monotonic_ns() < s + 900 * MS {
        during(monotonic_ns() - s);
        std::thread::sleep(Duration::from_millis(5));
    }
    let trace = capture(
        &JobCapture {
            job_id: "j",
            model: None,
            markers: &markers,
            anchor,
        },
        h,
        None,
        None,
        &opts,
    );
    summarize(&trace, &opts)
}

fn assert_valid(sum: &EnergySummary) {
    assert!(!sum.incomplete.total, "{sum:?}");
    assert!(
        sum.energy_j.total > 0.0 && sum.energy_j.total.is_finite(),
        "{sum:?}"
    );
    assert!(sum.avg_w.is_some_and(|w| w > 0.0), "{sum:?}");
    assert!(sum.j_per_token.decode.is_some(), "{sum:?}");
}

#[test]
fn traced_job_on_hwmon_agx_orin_uses_the_module_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    agx_orin(dir.path());
    let spec: SensorSpec = toml::from_str(&format!(
        "kind = \"hwmon\"\nsysfs_root = \"{}\"\n",
        dir.path().display()
    ))
    .expect("spec");
    let h =
        start_sampler(&[spec], SamplerOptions::default(), CancellationToken::new()).expect("start");
    let sum = traced_job(&h, |_| {});
    h.shutdown();
    assert_valid(&sum);
    assert_eq!(sum.basis, "VIN_SYS_5V0");
    // 5.016 V × 1.088 A for 0.6 s.
    let want = 5.016 * 1.088 * 0.6;
    assert!(
        (sum.energy_j.total - want).abs() / want < 0.05,
        "{}",
        sum.energy_j.total
    );
}

#[test]
fn traced_job_on_rapl_matches_the_counters() {
    let dir = tempfile::tempdir().expect("tempdir");
    rapl_tree(dir.path());
    let spec: SensorSpec = toml::from_str(&format!(
        "kind = \"rapl\"\nsysfs_root = \"{}\"\nrate_hz = 50.0\n",
        dir.path().display()
    ))
    .expect("spec");
    let h =
        start_sampler(&[spec], SamplerOptions::default(), CancellationToken::new()).expect("start");
    // 8 W on the package (from t = 0 of the job's clock), 1 W on dram.
    let t0 = monotonic_ns();
    let base = RAPL_RANGE_UJ - 300_000;
    let feed = |_: u64| {
        let us = (monotonic_ns() - t0) / 1000;
        set_energy(dir.path(), "intel-rapl:0", (base + 8 * us) % RAPL_RANGE_UJ);
        set_energy(dir.path(), "intel-rapl:0:2", 3_000 + us);
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let feeder = std::thread::scope(|sc| {
        let f = sc.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                feed(0);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let sum = traced_job(&h, |_| {});
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        f.join().expect("feeder");
        sum
    });
    h.shutdown();
    assert!(h.stats().errors_by_kind.is_empty(), "{:?}", h.stats());
    assert_valid(&feeder);
    assert_eq!(feeder.basis, "RAPL_TOTAL");
    let want = 9.0 * 0.6;
    assert!(
        (feeder.energy_j.total - want).abs() / want < 0.1,
        "{} J, want {want}",
        feeder.energy_j.total
    );
}

// ---------------------------------------------------------------- Raspberry Pi 5

const PMIC_IDLE: &str = "     3V7_WL_SW_A current(0)=0.00390372A
       3V3_SYS_A current(1)=0.05562801A
       1V8_SYS_A current(2)=0.17272240A
      DDR_VDD2_A current(3)=0.02049453A
      DDR_VDDQ_A current(4)=0.00000000A
       1V1_SYS_A current(5)=0.18348880A
        0V8_SW_A current(6)=0.30156360A
      VDD_CORE_A current(7)=0.68300000A
       3V3_DAC_A current(17)=0.00048840A
       3V3_ADC_A current(18)=0.00030528A
       0V8_AON_A current(16)=0.00000000A
          HDMI_A current(22)=0.02115060A
     3V7_WL_SW_V volt(8)=3.71721600V
       3V3_SYS_V volt(9)=3.31047600V
       1V8_SYS_V volt(10)=1.79926400V
      DDR_VDD2_V volt(11)=1.11133200V
      DDR_VDDQ_V volt(12)=0.60668400V
       1V1_SYS_V volt(13)=1.10891200V
        0V8_SW_V volt(14)=0.80305200V
      VDD_CORE_V volt(15)=0.88000000V
       3V3_DAC_V volt(20)=3.30816000V
       3V3_ADC_V volt(21)=3.30036000V
       0V8_AON_V volt(19)=0.80183200V
          HDMI_V volt(23)=5.17296000V
         EXT5V_V volt(24)=5.15016000V
          BATT_V volt(25)=0.00000000V
";

/// A fake `vcgencmd` that takes as long as the real one (~23 ms) and prints a real
/// capture, or the firmware's error reply while `fail` exists.
fn fake_vcgencmd(dir: &Path) -> std::path::PathBuf {
    fs::write(dir.join("capture.txt"), PMIC_IDLE).expect("capture");
    let script = dir.join("vcgencmd");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = pmic_read_adc ] || {{ echo 'error=1 error_msg=\"Command not registered\"'; exit 0; }}\nsleep 0.023\nif [ -e '{d}/fail' ]; then echo 'error=2 error_msg=\"Invalid arguments\"'; else cat '{d}/capture.txt'; fi\n",
            d = dir.display()
        ),
    )
    .expect("script");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

fn pmic_spec(dir: &Path, extra: &str) -> SensorSpec {
    toml::from_str(&format!(
        "kind = \"pi5-pmic\"\nvcio = \"{d}/no-vcio\"\nvcgencmd = \"{d}/vcgencmd\"\n{extra}",
        d = dir.display()
    ))
    .expect("spec")
}

#[test]
fn pi5_pmic_through_vcgencmd_at_its_real_rate_with_gaps_on_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    fake_vcgencmd(dir.path());
    let h = start_sampler(
        &[pmic_spec(dir.path(), "rate_hz = 40.0\n")],
        SamplerOptions::default(),
        CancellationToken::new(),
    )
    .expect("start");
    assert_eq!(h.rails().len(), 13, "12 PMIC rails + EXT5V");
    assert!(
        h.rails().iter().all(|r| !r.total),
        "not the board total unless said"
    );
    let info = &h.describe()[0];
    assert_eq!(info.chip, "pi5-pmic");
    assert!(
        info.settings["transport"].starts_with("process "),
        "{info:?}"
    );
    let t0 = monotonic_ns();
    std::thread::sleep(Duration::from_millis(700));
    fs::write(dir.path().join("fail"), "").expect("fail");
    std::thread::sleep(Duration::from_millis(300));
    fs::remove_file(dir.path().join("fail")).expect("unfail");
    std::thread::sleep(Duration::from_millis(400));
    h.shutdown();
    let t1 = monotonic_ns();
    let stats = h.stats();
    let core = stats
        .rails
        .iter()
        .find(|r| r.name == "VDD_CORE")
        .expect("rail");
    // ≤ 40 Hz by the ~23 ms read; at least ~15 Hz over the 1.1 s that read fine.
    let rate = core.samples as f64 / ((t1 - t0) as f64 / 1e9);
    assert!((10.0..=41.0).contains(&rate), "{rate} Hz, {core:?}");
    assert!(
        stats.errors_by_kind.get("parse").is_some_and(|&n| n >= 1),
        "{stats:?}"
    );
    let gaps = h.gaps(t0, t1);
    assert!(
        gaps.iter()
            .any(|g| g.rail == 7 && g.reason.contains("refused")),
        "{gaps:?}"
    );
    // Each sample is timestamped around the whole request (~23 ms).
    let w = h.window(t0, t1);
    assert!(
        w.iter().all(|s| s.t_after_ns - s.t_before_ns >= 20 * MS),
        "{:?}",
        &w[..2]
    );
    let ext = w.iter().find(|s| s.rail == 12).expect("EXT5V");
    assert_eq!((ext.bus_mv, ext.power_uw), (5150, 0));
}

#[test]
fn traced_job_on_pi5_pmic_total_when_the_operator_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    fake_vcgencmd(dir.path());
    let h = start_sampler(
        &[pmic_spec(
            dir.path(),
            "total = true\nrails = [\"VDD_CORE\", \"DDR_VDD2\"]\n",
        )],
        SamplerOptions::default(),
        CancellationToken::new(),
    )
    .expect("start");
    let names: Vec<(String, bool)> = h.rails().into_iter().map(|r| (r.name, r.total)).collect();
    assert_eq!(
        names,
        [
            ("VDD_CORE".to_string(), false),
            ("DDR_VDD2".into(), false),
            ("EXT5V".into(), false),
            ("PMIC_TOTAL".into(), true)
        ]
    );
    let sum = traced_job(&h, |_| {});
    h.shutdown();
    assert_valid(&sum);
    assert_eq!(sum.basis, "PMIC_TOTAL");
    // VDD_CORE 0.60104 W + DDR_VDD2 0.02278 W for 0.6 s.
    let want = (0.601_040 + 0.022_776) * 0.6;
    assert!(
        (sum.energy_j.total - want).abs() / want < 0.05,
        "{}",
        sum.energy_j.total
    );
}

#[test]
fn pi5_pmic_config_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = pmic_spec(dir.path(), "rate_hz = 100.0\n");
    let e = start_sampler(&[spec], SamplerOptions::default(), CancellationToken::new())
        .err()
        .expect("too fast");
    assert!(e.to_string().contains("at most 40 Hz"), "{e}");
    let spec = pmic_spec(dir.path(), "rails = [\"VDD_GPU\"]\n");
    let e = start_sampler(&[spec], SamplerOptions::default(), CancellationToken::new())
        .err()
        .expect("unknown rail");
    assert!(e.to_string().contains("'VDD_GPU'"), "{e}");
    let spec: SensorSpec = toml::from_str("kind = \"rapl\"\naddress = 64\n").expect("spec");
    assert!(spec
        .validate("power.sensors[0]")
        .unwrap_err()
        .to_string()
        .contains("absent for kind 'rapl'"));
}
