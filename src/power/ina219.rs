//! TI INA219 driver (datasheet SBOS448), generic over `embedded_hal::i2c::I2c`.
//!
//! The primary current path is software: signed shunt voltage ÷ the configured shunt.
//! The chip's current/power registers (which depend on the calibration register) are
//! read as a cross-check and to clear CNVR (§8.6.3.2: CNVR clears on a power read).

use embedded_hal::i2c::I2c;

use super::register;

/// Register addresses (SBOS448 §8.6).
pub struct Register;
impl Register {
    /// Configuration, POR 0x399F.
    pub const CONFIG: u8 = 0x00;
    /// Shunt voltage, signed, LSB 10 µV.
    pub const SHUNT_VOLTAGE: u8 = 0x01;
    /// Bus voltage: bits 15–3 value (LSB 4 mV), bit 1 CNVR, bit 0 OVF.
    pub const BUS_VOLTAGE: u8 = 0x02;
    /// Power, LSB 20 × Current_LSB; reading it clears CNVR.
    pub const POWER: u8 = 0x03;
    /// Current, signed, LSB Current_LSB.
    pub const CURRENT: u8 = 0x04;
    /// Calibration, POR 0 (bit 0 always reads 0).
    pub const CALIBRATION: u8 = 0x05;
}

/// Bit flags (SBOS448 §8.6.2, §8.6.3.2).
pub struct BitFlags;
impl BitFlags {
    /// Config: reset all registers to POR.
    pub const RST: u16 = 0b1000_0000_0000_0000;
    /// Bus voltage register: conversion ready.
    pub const CNVR: u16 = 0b0000_0000_0000_0010;
    /// Bus voltage register: math overflow.
    pub const OVF: u16 = 0b0000_0000_0000_0001;
}

/// Configuration register at power-on (32 V, ±320 mV, 12-bit, continuous).
pub const CONFIG_POR: u16 = 0x399F;
/// Largest calibration value (bit 0 is void).
pub const CALIBRATION_MAX: u16 = 0xFFFE;

/// Bus voltage range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BusRange {
    /// 16 V full scale.
    V16,
    /// 32 V full scale (power-on default).
    #[default]
    V32,
}

impl BusRange {
    /// Full scale, mV.
    pub fn full_scale_mv(self) -> u32 {
        match self {
            BusRange::V16 => 16_000,
            BusRange::V32 => 32_000,
        }
    }
}

/// PGA gain / shunt full scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pga {
    /// ÷1, ±40 mV.
    Div1,
    /// ÷2, ±80 mV.
    Div2,
    /// ÷4, ±160 mV.
    Div4,
    /// ÷8, ±320 mV (power-on default).
    #[default]
    Div8,
}

impl Pga {
    /// Shunt full scale, µV.
    pub fn full_scale_uv(self) -> i32 {
        match self {
            Pga::Div1 => 40_000,
            Pga::Div2 => 80_000,
            Pga::Div4 => 160_000,
            Pga::Div8 => 320_000,
        }
    }
    /// From a full scale in mV (40/80/160/320).
    pub fn from_mv(mv: u16) -> Option<Pga> {
        match mv {
            40 => Some(Pga::Div1),
            80 => Some(Pga::Div2),
            160 => Some(Pga::Div4),
            320 => Some(Pga::Div8),
            _ => None,
        }
    }
    fn bits(self) -> u16 {
        self as u16
    }
}

/// ADC resolution / averaging for BADC and SADC (SBOS448 table 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Adc {
    /// 9 bit, 84 µs.
    Bits9,
    /// 10 bit, 148 µs.
    Bits10,
    /// 11 bit, 276 µs.
    Bits11,
    /// 12 bit, 532 µs (power-on default).
    #[default]
    Bits12,
    /// 12 bit × n samples averaged (n = 2 … 128, a power of two).
    Average(u8),
}

impl Adc {
    /// Conversion time, ns (SBOS448 table 5: 84 µs … 68.10 ms).
    pub fn conversion_ns(self) -> u64 {
        match self {
            Adc::Bits9 => 84_000,
            Adc::Bits10 => 148_000,
            Adc::Bits11 => 276_000,
            Adc::Bits12 => 532_000,
            Adc::Average(2) => 1_060_000,
            Adc::Average(4) => 2_130_000,
            Adc::Average(8) => 4_260_000,
            Adc::Average(16) => 8_510_000,
            Adc::Average(32) => 17_020_000,
            Adc::Average(64) => 34_050_000,
            Adc::Average(_) => 68_100_000,
        }
    }
    /// From resolution and averaging (as validated by the spec).
    pub fn from_settings(bits: u8, averaging: u16) -> Option<Adc> {
        match (bits, averaging) {
            (9, 1) => Some(Adc::Bits9),
            (10, 1) => Some(Adc::Bits10),
            (11, 1) => Some(Adc::Bits11),
            (12, 1) => Some(Adc::Bits12),
            (12, n) if n.is_power_of_two() && (2..=128).contains(&n) => Some(Adc::Average(n as u8)),
            _ => None,
        }
    }
    /// The 4-bit field value.
    pub fn bits(self) -> u16 {
        match self {
            Adc::Bits9 => 0b0000,
            Adc::Bits10 => 0b0001,
            Adc::Bits11 => 0b0010,
            Adc::Bits12 => 0b0011,
            Adc::Average(n) => 0b1000 | (u16::from(n.max(2)).trailing_zeros() as u16).min(7),
        }
    }
    /// Decodes the 4-bit field (0b1000 is 12 bit, 0b0Xnn ignores X).
    pub fn from_bits(b: u16) -> Adc {
        if b & 0b1000 == 0 {
            match b & 0b11 {
                0 => Adc::Bits9,
                1 => Adc::Bits10,
                2 => Adc::Bits11,
                _ => Adc::Bits12,
            }
        } else {
            match b & 0b111 {
                0 => Adc::Bits12,
                n => Adc::Average(1u8 << n),
            }
        }
    }
}

/// Operating mode (SBOS448 table 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Power-down.
    PowerDown = 0,
    /// Shunt, triggered.
    ShuntTriggered = 1,
    /// Bus, triggered.
    BusTriggered = 2,
    /// Shunt and bus, triggered.
    ShuntBusTriggered = 3,
    /// ADC off.
    AdcOff = 4,
    /// Shunt, continuous.
    ShuntContinuous = 5,
    /// Bus, continuous.
    BusContinuous = 6,
    /// Shunt and bus, continuous (power-on default).
    #[default]
    ShuntBusContinuous = 7,
}

impl Mode {
    fn from_bits(b: u16) -> Mode {
        match b & 0b111 {
            0 => Mode::PowerDown,
            1 => Mode::ShuntTriggered,
            2 => Mode::BusTriggered,
            3 => Mode::ShuntBusTriggered,
            4 => Mode::AdcOff,
            5 => Mode::ShuntContinuous,
            6 => Mode::BusContinuous,
            _ => Mode::ShuntBusContinuous,
        }
    }
    /// Whether the mode converts continuously.
    pub fn continuous(self) -> bool {
        matches!(
            self,
            Mode::ShuntContinuous | Mode::BusContinuous | Mode::ShuntBusContinuous
        )
    }
}

/// The configuration register, decoded. `Default` is the power-on value 0x399F.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// Bus voltage range (BRNG).
    pub bus_range: BusRange,
    /// Shunt PGA (PG).
    pub pga: Pga,
    /// Bus ADC (BADC).
    pub bus_adc: Adc,
    /// Shunt ADC (SADC).
    pub shunt_adc: Adc,
    /// Mode.
    pub mode: Mode,
}

impl Config {
    /// Register value.
    pub fn bits(&self) -> u16 {
        let brng = match self.bus_range {
            BusRange::V16 => 0,
            BusRange::V32 => 1,
        };
        (brng << 13)
            | (self.pga.bits() << 11)
            | (self.bus_adc.bits() << 7)
            | (self.shunt_adc.bits() << 3)
            | self.mode as u16
    }
    /// Decodes a register value.
    pub fn from_bits(v: u16) -> Config {
        Config {
            bus_range: if v & (1 << 13) != 0 {
                BusRange::V32
            } else {
                BusRange::V16
            },
            pga: match (v >> 11) & 0b11 {
                0 => Pga::Div1,
                1 => Pga::Div2,
                2 => Pga::Div4,
                _ => Pga::Div8,
            },
            bus_adc: Adc::from_bits((v >> 7) & 0xF),
            shunt_adc: Adc::from_bits((v >> 3) & 0xF),
            mode: Mode::from_bits(v),
        }
    }
    /// Time between fresh results in this mode, ns: shunt then bus conversion for
    /// shunt+bus modes (12-bit both: 2 × 532 µs = 1.064 ms).
    pub fn conversion_period_ns(&self) -> u64 {
        match self.mode {
            Mode::ShuntTriggered | Mode::ShuntContinuous => self.shunt_adc.conversion_ns(),
            Mode::BusTriggered | Mode::BusContinuous => self.bus_adc.conversion_ns(),
            Mode::ShuntBusTriggered | Mode::ShuntBusContinuous => {
                self.shunt_adc.conversion_ns() + self.bus_adc.conversion_ns()
            }
            Mode::PowerDown | Mode::AdcOff => 0,
        }
    }
}

/// Shunt register → µV (signed, LSB 10 µV; the register is sign-extended for every PGA).
pub fn shunt_uv(raw: u16) -> i32 {
    i32::from(raw as i16) * 10
}

/// Bus register → mV (bits 15–3, LSB 4 mV).
pub fn bus_mv(raw: u16) -> u32 {
    u32::from(raw >> 3) * 4
}

/// Current from shunt voltage and shunt resistance: I = V / R, in µA.
pub fn current_ua(shunt_uv: i32, shunt_uohm: u32) -> i64 {
    i64::from(shunt_uv) * 1_000_000 / i64::from(shunt_uohm.max(1))
}

/// P = V × I, in µW.
pub fn power_uw(bus_mv: u32, current_ua: i64) -> i64 {
    i64::from(bus_mv) * current_ua / 1000
}

/// Smallest Current_LSB for a maximum expected current: I_max / 2^15, rounded up to a
/// whole nA (SBOS448 §8.5.1 eq. 2).
pub fn min_current_lsb_na(max_current_ua: u64) -> u64 {
    (max_current_ua * 1000).div_ceil(32_768)
}

/// Calibration register: `trunc(0.04096 / (Current_LSB × R_shunt))` (SBOS448 eq. 1),
/// or `None` when it does not fit (max 0xFFFE) or is zero.
pub fn calibration(current_lsb_na: u64, shunt_uohm: u32) -> Option<u16> {
    // 0.04096 / (lsb_na·1e-9 × r_uohm·1e-6) = 4.096e13 / (lsb_na × r_uohm)
    let den = u128::from(current_lsb_na) * u128::from(shunt_uohm);
    if den == 0 {
        return None;
    }
    let cal = 40_960_000_000_000u128 / den;
    if cal == 0 || cal > u128::from(CALIBRATION_MAX) {
        None
    } else {
        Some((cal as u16) & !1)
    }
}

/// Current register → µA (signed).
pub fn current_register_ua(raw: u16, current_lsb_na: u64) -> i64 {
    i64::from(raw as i16) * current_lsb_na as i64 / 1000
}

/// Power register → µW (Power_LSB = 20 × Current_LSB).
pub fn power_register_uw(raw: u16, current_lsb_na: u64) -> i64 {
    i64::from(raw) * 20 * current_lsb_na as i64 / 1000
}

/// Driver errors, generic over the bus error.
#[derive(Debug, thiserror::Error)]
pub enum Error<E: core::fmt::Debug> {
    /// The bus transaction failed.
    #[error("i2c error: {0:?}")]
    I2c(E),
    /// A setting the chip cannot represent (checked before touching the bus).
    #[error("invalid ina219 setting {what}: '{value}', expected {expected}")]
    InvalidSetting {
        /// Which setting.
        what: &'static str,
        /// The value given.
        value: String,
        /// The allowed range.
        expected: &'static str,
    },
    /// The chip lost its configuration (supply dip): calibration reads 0 or the
    /// configuration is back at the power-on value.
    #[error("ina219 brown-out: registers at power-on values (config '{config:#06x}', calibration '{calibration:#06x}')")]
    BrownOut {
        /// Config read back.
        config: u16,
        /// Calibration read back.
        calibration: u16,
    },
    /// The configuration read back differs from what was written.
    #[error("ina219 did not keep its configuration: wrote '{wrote:#06x}', read '{read:#06x}'")]
    ConfigMismatch {
        /// Written.
        wrote: u16,
        /// Read back.
        read: u16,
    },
}

/// One fresh conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Bus voltage, mV.
    pub bus_mv: u32,
    /// Shunt voltage, µV (signed).
    pub shunt_uv: i32,
    /// Current from shunt ÷ R, µA (signed). The primary value.
    pub current_ua: i64,
    /// Bus × current, µW (signed).
    pub power_uw: i64,
    /// The chip's power register, µW (cross-check; unsigned on the chip).
    pub power_register_uw: i64,
    /// OVF: the chip's current/power math overflowed, or the shunt hit the PGA limit.
    pub overflow: bool,
}

/// An INA219 on an I2C bus.
#[derive(Debug)]
pub struct Ina219<I2C> {
    i2c: I2C,
    address: u8,
    /// Shadow of the last configuration written (never read-modify-write).
    config: Config,
    shunt_uohm: u32,
    current_lsb_na: u64,
    calibration: u16,
}

impl<I2C: I2c> Ina219<I2C> {
    /// Creates the driver; checks the settings without touching the bus.
    /// `max_current_ua` picks Current_LSB = I_max / 2^15 (SBOS448 §8.5.1).
    pub fn new(
        i2c: I2C,
        address: u8,
        shunt_uohm: u32,
        max_current_ua: u64,
        config: Config,
    ) -> Result<Self, Error<I2C::Error>> {
        if !(0x40..=0x4F).contains(&address) {
            return Err(Error::InvalidSetting {
                what: "address",
                value: format!("{address:#04x}"),
                expected: "0x40..=0x4f",
            });
        }
        let current_lsb_na = min_current_lsb_na(max_current_ua).max(1);
        let calibration = calibration(current_lsb_na, shunt_uohm).ok_or(Error::InvalidSetting {
            what: "calibration",
            value: format!("{max_current_ua} uA with {shunt_uohm} uohm"),
            expected: "a calibration value in 1..=0xfffe (raise max current or shunt)",
        })?;
        Ok(Ina219 {
            i2c,
            address,
            config,
            shunt_uohm,
            current_lsb_na,
            calibration,
        })
    }

    /// Writes configuration and calibration and checks the configuration reads back.
    pub fn init(&mut self) -> Result<(), Error<I2C::Error>> {
        let wrote = self.config.bits();
        self.write_register(Register::CONFIG, wrote)?;
        self.write_register(Register::CALIBRATION, self.calibration)?;
        let read = self.read_register(Register::CONFIG)?;
        if read != wrote {
            return Err(Error::ConfigMismatch { wrote, read });
        }
        Ok(())
    }

    /// Reads one conversion if CNVR says a fresh one is ready, else `None` (one
    /// register read). Fresh: bus (with CNVR), shunt, then power, which clears CNVR.
    pub fn read_if_ready(&mut self) -> Result<Option<Reading>, Error<I2C::Error>> {
        match self.poll_ready()? {
            None => Ok(None),
            Some(bus) => self.read_after_ready(bus).map(Some),
        }
    }

    /// The gating read: the bus register, returned only when CNVR is set.
    pub fn poll_ready(&mut self) -> Result<Option<u16>, Error<I2C::Error>> {
        let bus = self.read_register(Register::BUS_VOLTAGE)?;
        Ok((bus & BitFlags::CNVR != 0).then_some(bus))
    }

    /// After `poll_ready` saw CNVR: shunt, then power (which clears CNVR).
    pub fn read_after_ready(&mut self, bus: u16) -> Result<Reading, Error<I2C::Error>> {
        let shunt = self.read_register(Register::SHUNT_VOLTAGE)?;
        let power = self.read_register(Register::POWER)?;
        Ok(self.convert(bus, shunt, power))
    }

    /// Pure part of `read_if_ready`: registers → reading.
    pub fn convert(&self, bus: u16, shunt: u16, power: u16) -> Reading {
        let bus_mv = bus_mv(bus);
        let shunt_uv = shunt_uv(shunt);
        let current_ua = current_ua(shunt_uv, self.shunt_uohm);
        let clipped = shunt_uv.abs() >= self.config.pga.full_scale_uv();
        Reading {
            bus_mv,
            shunt_uv,
            current_ua,
            power_uw: power_uw(bus_mv, current_ua),
            power_register_uw: power_register_uw(power, self.current_lsb_na),
            overflow: bus & BitFlags::OVF != 0 || clipped,
        }
    }

    /// Brown-out check: calibration back at 0 or config back at POR when we wrote
    /// something else. Two register reads; the sampler runs it a few times a second.
    pub fn check_brown_out(&mut self) -> Result<(), Error<I2C::Error>> {
        let config = self.read_register(Register::CONFIG)?;
        let calibration = self.read_register(Register::CALIBRATION)?;
        let lost_config = config != self.config.bits();
        if calibration == 0 || lost_config {
            return Err(Error::BrownOut {
                config,
                calibration,
            });
        }
        Ok(())
    }

    /// The shadowed configuration.
    pub fn config(&self) -> Config {
        self.config
    }
    /// The calibration value written.
    pub fn calibration_value(&self) -> u16 {
        self.calibration
    }
    /// Current_LSB, nA.
    pub fn current_lsb_na(&self) -> u64 {
        self.current_lsb_na
    }
    /// The address.
    pub fn address(&self) -> u8 {
        self.address
    }
    /// Gives the bus back.
    pub fn destroy(self) -> I2C {
        self.i2c
    }

    fn write_register(&mut self, reg: u8, value: u16) -> Result<(), Error<I2C::Error>> {
        register::write(&mut self.i2c, self.address, reg, value).map_err(Error::I2c)
    }

    /// One combined `write_read` transaction (see [`register::read`] for why).
    fn read_register(&mut self, reg: u8) -> Result<u16, Error<I2C::Error>> {
        register::read(&mut self.i2c, self.address, reg).map_err(Error::I2c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasheet_calibration_example() {
        // SBOS448 §8.5.1: 32 V, 0.32 V shunt full scale, R = 0.1 Ω, max expected 2 A.
        // Minimum LSB = 2 / 32768 = 61.04 µA; the example picks 100 µA → Cal = 4096,
        // Power_LSB = 2 mW.
        assert_eq!(min_current_lsb_na(2_000_000), 61_036);
        assert_eq!(calibration(100_000, 100_000), Some(4096));
        assert_eq!(power_register_uw(1, 100_000), 2_000);
        // With the minimum LSB: trunc(0.04096 / (61.036e-6 × 0.1)) = 6710 (even).
        assert_eq!(calibration(61_036, 100_000), Some(6710));
        assert_eq!(calibration(1, 1), None);
    }

    #[test]
    fn signed_shunt_reads_negative() {
        // -320 mV full scale at PGA /8 is 0x8300 (-32000 × 10 µV).
        assert_eq!(shunt_uv(0x8300), -320_000);
        assert_eq!(shunt_uv(0xFFFF), -10);
        assert_eq!(current_ua(shunt_uv(0xFFFF), 100_000), -100);
        assert_eq!(current_register_ua(0xFFFE, 100_000), -200);
        assert_eq!(power_uw(5000, -100), -500);
    }

    #[test]
    fn bus_register_decoding() {
        // 0x1F40 >> 3 = 1000 → 4 V; CNVR/OVF bits are not part of the value.
        assert_eq!(bus_mv(0x1F40 | 0b11), 4000);
    }

    #[test]
    fn config_roundtrip_and_por() {
        let c = Config::default();
        assert_eq!(c.bits(), CONFIG_POR);
        assert_eq!(Config::from_bits(CONFIG_POR), c);
        assert_eq!(c.conversion_period_ns(), 1_064_000);
        let c = Config {
            bus_adc: Adc::Average(128),
            shunt_adc: Adc::Bits9,
            pga: Pga::Div1,
            bus_range: BusRange::V16,
            mode: Mode::ShuntBusTriggered,
        };
        assert_eq!(Config::from_bits(c.bits()), c);
        assert_eq!(Adc::from_bits(0b1000), Adc::Bits12);
        assert_eq!(Adc::from_bits(0b0110), Adc::Bits11);
        assert_eq!(Adc::from_settings(12, 16), Some(Adc::Average(16)));
        assert_eq!(Adc::Average(16).bits(), 0b1100);
    }
}
