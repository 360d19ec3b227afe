//! Exact I2C traffic of the INA219 and INA3221 drivers (embedded-hal-mock), and the
//! datasheet arithmetic they rely on.

use edgewatt::power::ina219::{self, Ina219};
use edgewatt::power::ina3221::{self, Ina3221};
use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction as T};

const A: u8 = 0x40;

fn ina219_on(mock: &[T]) -> Ina219<I2cMock> {
    // 0.1 Ω, 2 A max → Current_LSB 61.036 µA, Cal 6710 (0x1A36).
    Ina219::new(
        I2cMock::new(mock),
        A,
        100_000,
        2_000_000,
        ina219::Config::default(),
    )
    .expect("valid settings")
}

#[test]
fn ina219_init_writes_config_then_calibration_and_verifies() {
    let expect = [
        T::write(A, vec![0x00, 0x39, 0x9F]),
        T::write(A, vec![0x05, 0x1A, 0x36]),
        T::write_read(A, vec![0x00], vec![0x39, 0x9F]),
    ];
    let mut drv = ina219_on(&expect);
    drv.init().expect("init");
    assert_eq!(drv.calibration_value(), 0x1A36);
    drv.destroy().done();
}

#[test]
fn ina219_init_refuses_a_config_that_does_not_stick() {
    let expect = [
        T::write(A, vec![0x00, 0x39, 0x9F]),
        T::write(A, vec![0x05, 0x1A, 0x36]),
        T::write_read(A, vec![0x00], vec![0xFF, 0xFF]),
    ];
    let mut drv = ina219_on(&expect);
    let e = drv.init().unwrap_err();
    assert!(
        matches!(
            e,
            ina219::Error::ConfigMismatch {
                wrote: 0x399F,
                read: 0xFFFF
            }
        ),
        "{e:?}"
    );
    drv.destroy().done();
}

#[test]
fn ina219_read_is_gated_on_cnvr() {
    // 5.000 V bus = 1250 × 4 mV → (1250 << 3) = 0x2710; CNVR set → 0x2712.
    // Shunt 0x0FA0 = 4000 × 10 µV = 40 mV → 400 mA through 0.1 Ω.
    let expect = [
        T::write_read(A, vec![0x02], vec![0x27, 0x10]), // no CNVR: nothing else read
        T::write_read(A, vec![0x02], vec![0x27, 0x12]),
        T::write_read(A, vec![0x01], vec![0x0F, 0xA0]),
        T::write_read(A, vec![0x03], vec![0x00, 0x64]), // power, clears CNVR
    ];
    let mut drv = ina219_on(&expect);
    assert_eq!(drv.read_if_ready().expect("read"), None);
    let r = drv.read_if_ready().expect("read").expect("fresh");
    assert_eq!(r.bus_mv, 5000);
    assert_eq!(r.shunt_uv, 40_000);
    assert_eq!(r.current_ua, 400_000);
    assert_eq!(r.power_uw, 2_000_000);
    assert!(!r.overflow);
    drv.destroy().done();
}

#[test]
fn ina219_negative_shunt_reads_negative_current() {
    // 0xFC18 = −1000 × 10 µV = −10 mV → −100 mA, not 42949 A.
    let expect = [
        T::write_read(A, vec![0x02], vec![0x27, 0x12]),
        T::write_read(A, vec![0x01], vec![0xFC, 0x18]),
        T::write_read(A, vec![0x03], vec![0x00, 0x00]),
    ];
    let mut drv = ina219_on(&expect);
    let r = drv.read_if_ready().expect("read").expect("fresh");
    assert_eq!(r.current_ua, -100_000);
    assert_eq!(r.power_uw, -500_000);
    drv.destroy().done();
}

#[test]
fn ina219_ovf_flag_and_clipped_shunt_are_reported() {
    // PGA ÷1 (±40 mV): a shunt at +40 mV (0x0FA0) is at the clip; OVF bit set.
    let cfg = ina219::Config {
        pga: ina219::Pga::Div1,
        ..Default::default()
    };
    let expect = [
        T::write_read(A, vec![0x02], vec![0x27, 0x13]),
        T::write_read(A, vec![0x01], vec![0x0F, 0xA0]),
        T::write_read(A, vec![0x03], vec![0xFF, 0xFF]),
    ];
    let mut drv = Ina219::new(I2cMock::new(&expect), A, 100_000, 400_000, cfg).expect("valid");
    let r = drv.read_if_ready().expect("read").expect("fresh");
    assert!(r.overflow);
    assert_eq!(r.shunt_uv, 40_000);
    drv.destroy().done();
}

#[test]
fn ina219_brown_out_is_detected_from_registers() {
    let expect = [
        T::write_read(A, vec![0x00], vec![0x39, 0x9F]),
        T::write_read(A, vec![0x05], vec![0x00, 0x00]),
    ];
    let mut drv = ina219_on(&expect);
    let e = drv.check_brown_out().unwrap_err();
    assert!(
        matches!(e, ina219::Error::BrownOut { calibration: 0, .. }),
        "{e:?}"
    );
    drv.destroy().done();
}

#[test]
fn ina219_settings_checked_before_the_bus() {
    // No transactions expected: the mock fails if any happen.
    let mut mock = I2cMock::new(&[]);
    let e = Ina219::new(mock.clone(), 0x50, 100_000, 2_000_000, Default::default()).unwrap_err();
    assert!(e.to_string().contains("'0x50'"), "{e}");
    let e = Ina219::new(mock.clone(), A, 100_000, 1, Default::default()).unwrap_err();
    assert!(e.to_string().contains("calibration"), "{e}");
    mock.done();
}

#[test]
fn ina219_nack_is_a_typed_error() {
    let expect = [T::write_read(A, vec![0x02], vec![0, 0])
        .with_error(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))];
    let mut drv = ina219_on(&expect);
    assert!(matches!(drv.read_if_ready(), Err(ina219::Error::I2c(_))));
    drv.destroy().done();
}

fn ina3221_cfg() -> ina3221::Config {
    ina3221::Config {
        bus_ct: ina3221::ConversionTime::Us140,
        shunt_ct: ina3221::ConversionTime::Us140,
        ..Default::default()
    }
}

#[test]
fn ina3221_init_checks_ids_then_writes_config() {
    let expect = [
        T::write_read(A, vec![0xFE], vec![0x54, 0x49]),
        T::write_read(A, vec![0xFF], vec![0x32, 0x20]),
        T::write(A, vec![0x00, 0x70, 0x07]),
    ];
    let mut drv =
        Ina3221::new(I2cMock::new(&expect), A, [100_000; 3], ina3221_cfg()).expect("valid");
    drv.init().expect("init");
    drv.destroy().done();
}

#[test]
fn ina3221_id_mismatch_is_refused_without_writing() {
    // An INA226 (die 0x2260) at the address: refused, config never written.
    let expect = [
        T::write_read(A, vec![0xFE], vec![0x54, 0x49]),
        T::write_read(A, vec![0xFF], vec![0x22, 0x60]),
    ];
    let mut drv =
        Ina3221::new(I2cMock::new(&expect), A, [100_000; 3], ina3221_cfg()).expect("valid");
    let e = drv.init().unwrap_err();
    assert_eq!(
        e.to_string(),
        "device at 0x40 is not an ina3221: manufacturer id '0x5449' (expected 0x5449), die id '0x2260' (expected 0x3220)"
    );
    drv.destroy().done();
}

#[test]
fn ina3221_reads_enabled_channels_after_cvrf() {
    // Channels 1 and 3 enabled. ch1: shunt 0x2710 → (0x2710 >> 3) = 1250 × 40 µV = 50 mV
    // → 500 mA; bus 0x2710 → 1250 × 8 mV = 10 V. ch3: shunt 0xFFF8 → −40 µV → −400 µA.
    let cfg = ina3221::Config {
        channels: [true, false, true],
        ..ina3221_cfg()
    };
    let expect = [
        T::write_read(A, vec![0x0F], vec![0x00, 0x02]), // CVRF clear
        T::write_read(A, vec![0x0F], vec![0x00, 0x03]), // CVRF set
        T::write_read(A, vec![0x01], vec![0x27, 0x10]),
        T::write_read(A, vec![0x02], vec![0x27, 0x10]),
        T::write_read(A, vec![0x05], vec![0xFF, 0xF8]),
        T::write_read(A, vec![0x06], vec![0x09, 0xC4]),
    ];
    let mut drv = Ina3221::new(I2cMock::new(&expect), A, [100_000; 3], cfg).expect("valid");
    assert_eq!(drv.read_if_ready().expect("read"), None);
    let r = drv.read_if_ready().expect("read").expect("fresh");
    let ch1 = r[0].expect("ch1");
    assert_eq!(
        (ch1.bus_mv, ch1.shunt_uv, ch1.current_ua, ch1.power_uw),
        (10_000, 50_000, 500_000, 5_000_000)
    );
    assert!(r[1].is_none());
    let ch3 = r[2].expect("ch3");
    assert_eq!((ch3.bus_mv, ch3.current_ua), (2_496, -400));
    drv.destroy().done();
}

#[test]
fn ina3221_brown_out_seen_as_por_config() {
    let expect = [T::write_read(A, vec![0x00], vec![0x71, 0x27])];
    let mut drv =
        Ina3221::new(I2cMock::new(&expect), A, [100_000; 3], ina3221_cfg()).expect("valid");
    assert!(matches!(
        drv.check_brown_out(),
        Err(ina3221::Error::BrownOut {
            wrote: 0x7007,
            read: 0x7127
        })
    ));
    drv.destroy().done();
}
