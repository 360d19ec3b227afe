//! The hwmon backend against fake sysfs trees: Jetson Orin Nano (JetPack 6,
//! mainline ina3221 hwmon), Jetson Nano (JetPack 4, legacy ina3221x IIO) and an
//! ina219 on the ina2xx hwmon driver.

use std::fs;
use std::path::Path;

use edgewatt::clock::monotonic_ns;
use edgewatt::power::hwmon::{discover, HwmonSensor};
use edgewatt::power::{start_sampler, SamplerOptions, Sensor, SensorSpec};
use tokio_util::sync::CancellationToken;

fn put(root: &Path, rel: &str, value: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, format!("{value}\n")).expect("write");
}

/// Orin Nano, JetPack 6: /sys/class/hwmon/hwmon1 is the ina3221 (labels from the
/// device tree); hwmon0 is something else and must be ignored.
fn orin_nano_jp6(root: &Path) {
    put(root, "sys/class/hwmon/hwmon0/name", "soc_thermal");
    put(root, "sys/class/hwmon/hwmon0/temp1_input", "45000");
    let d = "sys/class/hwmon/hwmon1";
    put(root, &format!("{d}/name"), "ina3221");
    put(root, &format!("{d}/update_interval"), "20");
    for (n, label, mv, ma) in [
        (1, "VDD_IN", 5072, 1234),
        (2, "VDD_CPU_GPU_CV", 5064, 456),
        (3, "VDD_SOC", 5064, 789),
    ] {
        put(root, &format!("{d}/in{n}_label"), label);
        put(root, &format!("{d}/in{n}_input"), &mv.to_string());
        put(root, &format!("{d}/curr{n}_input"), &ma.to_string());
        put(root, &format!("{d}/in{n}_enable"), "1");
        // Shunt voltages (in4..in6) and the sum (in7) are not rails.
        put(root, &format!("{d}/in{}_input", n + 3), "12");
    }
    put(root, &format!("{d}/in7_input"), "36");
}

/// Jetson Nano, JetPack 4: legacy IIO device under the ina3221x driver, power in mW.
fn nano_jp4(root: &Path) {
    let d = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0";
    for (ch, name, mv, ma, mw) in [
        (0, "POM_5V_IN", 5000, 1200, 6000),
        (1, "POM_5V_GPU", 5000, 80, 400),
        (2, "POM_5V_CPU", 5000, 300, 1500),
    ] {
        put(root, &format!("{d}/rail_name_{ch}"), name);
        put(root, &format!("{d}/in_voltage{ch}_input"), &mv.to_string());
        put(root, &format!("{d}/in_current{ch}_input"), &ma.to_string());
        put(root, &format!("{d}/in_power{ch}_input"), &mw.to_string());
    }
}

/// ina219 on the ina2xx hwmon driver: no labels; power1_input in µW.
fn ina219_hwmon(root: &Path) {
    let d = "sys/class/hwmon/hwmon2";
    put(root, &format!("{d}/name"), "ina219");
    put(root, &format!("{d}/in0_input"), "15");
    put(root, &format!("{d}/in1_input"), "12000");
    put(root, &format!("{d}/curr1_input"), "-1500");
    put(root, &format!("{d}/power1_input"), "18000000");
    put(root, &format!("{d}/update_interval"), "1");
}

fn read_once(s: &mut HwmonSensor) -> Vec<edgewatt::power::Sample> {
    s.init().expect("init");
    let mut out = Vec::new();
    let r = s.poll(&mut out).expect("poll");
    assert!(r.fresh);
    out
}

#[test]
fn orin_nano_jetpack6_rails_and_total() {
    let dir = tempfile::tempdir().expect("tempdir");
    orin_nano_jp6(dir.path());
    let devs = discover(dir.path(), None, &[]).expect("found");
    assert_eq!(devs.len(), 1);
    assert_eq!(devs[0].chip, "hwmon:ina3221");
    assert_eq!(devs[0].update_interval_ms, Some(20));
    let mut s = HwmonSensor::open(dir.path(), None, &[], None, None).expect("open");
    let rails = s.rails();
    let names: Vec<&str> = rails.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]);
    assert_eq!(
        rails.iter().map(|r| r.total).collect::<Vec<_>>(),
        [true, false, false]
    );
    assert!(rails.iter().all(|r| !r.simulated));
    // Rate honestly follows the driver's update interval: 20 ms → 50 Hz.
    assert_eq!(s.period_ns(), 20_000_000);
    assert!(!s.gated());
    let out = read_once(&mut s);
    assert_eq!(out.len(), 3);
    assert_eq!(
        (out[0].bus_mv, out[0].current_ua, out[0].power_uw),
        (5072, 1_234_000, 6_258_848)
    );
    assert_eq!((out[1].bus_mv, out[1].current_ua), (5064, 456_000));
    assert_eq!(out[2].power_uw, 5064 * 789_000 / 1000);
}

#[test]
fn jetson_nano_jetpack4_legacy_iio() {
    let dir = tempfile::tempdir().expect("tempdir");
    nano_jp4(dir.path());
    let mut s = HwmonSensor::open(dir.path(), None, &[], None, None).expect("open");
    let rails = s.rails();
    assert_eq!(
        rails
            .iter()
            .map(|r| (r.name.as_str(), r.total))
            .collect::<Vec<_>>(),
        [
            ("POM_5V_IN", true),
            ("POM_5V_GPU", false),
            ("POM_5V_CPU", false)
        ]
    );
    assert_eq!(s.info().chip, "iio:ina3221x");
    // No update interval: 10 Hz default.
    assert_eq!(s.period_ns(), 100_000_000);
    let out = read_once(&mut s);
    // Power from in_powerN_input, in mW.
    assert_eq!(
        (out[0].bus_mv, out[0].current_ua, out[0].power_uw),
        (5000, 1_200_000, 6_000_000)
    );
    assert_eq!(out[2].power_uw, 1_500_000);
}

#[test]
fn ina219_hwmon_named_by_config_and_negative_current() {
    let dir = tempfile::tempdir().expect("tempdir");
    ina219_hwmon(dir.path());
    let rails = ["12V_IN".to_string()];
    let mut s = HwmonSensor::open(
        dir.path(),
        Some("ina219"),
        &rails,
        Some("12V_IN"),
        Some(100.0),
    )
    .expect("open");
    assert_eq!(s.rails()[0].name, "12V_IN");
    assert!(s.rails()[0].total);
    assert_eq!(s.period_ns(), 10_000_000);
    let out = read_once(&mut s);
    assert_eq!(
        (out[0].bus_mv, out[0].current_ua, out[0].power_uw),
        (12_000, -1_500_000, 18_000_000)
    );
}

#[test]
fn name_filter_and_missing_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    orin_nano_jp6(dir.path());
    let e = discover(dir.path(), Some("ina226"), &[]).unwrap_err();
    assert!(e.to_string().contains("named 'ina226'"), "{e}");
    // A label filter keeps only the named rails.
    let devs = discover(dir.path(), None, &["VDD_SOC".into()]).expect("found");
    assert_eq!(devs[0].rails.len(), 1);
    assert_eq!(devs[0].rails[0].name, "VDD_SOC");
}

#[test]
fn sampler_dedupes_unchanged_hwmon_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    orin_nano_jp6(dir.path());
    let spec: SensorSpec = toml::from_str(&format!(
        "kind = \"hwmon\"\nsysfs_root = \"{}\"\nrate_hz = 500.0\n",
        dir.path().display()
    ))
    .expect("spec");
    let t0 = monotonic_ns();
    let h =
        start_sampler(&[spec], SamplerOptions::default(), CancellationToken::new()).expect("start");
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The kernel updates every 20 ms: at 500 Hz polling most reads repeat a value.
    put(dir.path(), "sys/class/hwmon/hwmon1/curr1_input", "2000");
    std::thread::sleep(std::time::Duration::from_millis(100));
    h.shutdown();
    let stats = h.stats();
    let vdd_in = &stats.rails[0];
    assert_eq!(vdd_in.name, "VDD_IN");
    assert!(vdd_in.duplicates_avoided > 50, "{vdd_in:?}");
    // Unique samples: at most one per update interval (400 ms / 20 ms) plus the change.
    assert!(vdd_in.samples <= 22 && vdd_in.samples >= 2, "{vdd_in:?}");
    let w = h.window(t0, monotonic_ns());
    assert!(w.iter().any(|s| s.rail == 0 && s.current_ua == 2_000_000));
    assert!(w.windows(2).all(|p| p[0].t_ns() <= p[1].t_ns()));
    assert!(!h.simulated());
    assert!(h.rails()[0].total);
}
