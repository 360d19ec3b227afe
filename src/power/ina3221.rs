//! TI INA3221 driver (datasheet SBOS576), generic over `embedded_hal::i2c::I2c`.
//!
//! Three channels, no current or power registers: P = V × I is computed here from the
//! signed shunt voltage and the configured shunts.

use embedded_hal::i2c::I2c;

use super::register;

/// Register addresses (SBOS576 §8.6).
pub struct Register;
impl Register {
    /// Configuration, POR 0x7127.
    pub const CONFIG: u8 = 0x00;
    /// Mask/Enable, POR 0x0002; bit 0 CVRF (cleared by reading this register).
    pub const MASK_ENABLE: u8 = 0x0F;
    /// Manufacturer ID, reads 0x5449 ("TI").
    pub const MANUFACTURER_ID: u8 = 0xFE;
    /// Die ID, reads 0x3220.
    pub const DIE_ID: u8 = 0xFF;

    /// Shunt-voltage register of channel 1..=3.
    pub const fn shunt(channel: u8) -> u8 {
        0x01 + 2 * (channel - 1)
    }
    /// Bus-voltage register of channel 1..=3.
    pub const fn bus(channel: u8) -> u8 {
        0x02 + 2 * (channel - 1)
    }
}

/// Bit flags.
pub struct BitFlags;
impl BitFlags {
    /// Config: reset.
    pub const RST: u16 = 0b1000_0000_0000_0000;
    /// Mask/Enable: conversion ready.
    pub const CVRF: u16 = 0b0000_0000_0000_0001;
    /// Config: channel enable bit for channel 1..=3 (bits 14, 13, 12).
    pub const fn channel_enable(channel: u8) -> u16 {
        1 << (15 - channel)
    }
}

/// Configuration at power-on: all channels, 1 sample, 1.1 ms + 1.1 ms, continuous.
pub const CONFIG_POR: u16 = 0x7127;
/// Mask/Enable at power-on.
pub const MASK_ENABLE_POR: u16 = 0x0002;
/// Expected manufacturer ID.
pub const MANUFACTURER_ID: u16 = 0x5449;
/// Expected die ID.
pub const DIE_ID: u16 = 0x3220;

/// Conversion time per bus or shunt measurement (SBOS576 table 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConversionTime {
    /// 140 µs.
    Us140 = 0,
    /// 204 µs.
    Us204 = 1,
    /// 332 µs.
    Us332 = 2,
    /// 588 µs.
    Us588 = 3,
    /// 1.1 ms (power-on default).
    #[default]
    Us1100 = 4,
    /// 2.116 ms.
    Us2116 = 5,
    /// 4.156 ms.
    Us4156 = 6,
    /// 8.244 ms.
    Us8244 = 7,
}

const CT_NS: [u64; 8] = [
    140_000, 204_000, 332_000, 588_000, 1_100_000, 2_116_000, 4_156_000, 8_244_000,
];
const AVG_N: [u64; 8] = [1, 4, 16, 64, 128, 256, 512, 1024];
const CT_ALL: [ConversionTime; 8] = [
    ConversionTime::Us140,
    ConversionTime::Us204,
    ConversionTime::Us332,
    ConversionTime::Us588,
    ConversionTime::Us1100,
    ConversionTime::Us2116,
    ConversionTime::Us4156,
    ConversionTime::Us8244,
];
const AVG_ALL: [Averaging; 8] = [
    Averaging::X1,
    Averaging::X4,
    Averaging::X16,
    Averaging::X64,
    Averaging::X128,
    Averaging::X256,
    Averaging::X512,
    Averaging::X1024,
];

impl ConversionTime {
    /// Nanoseconds.
    pub fn ns(self) -> u64 {
        CT_NS[self as usize]
    }
    /// From µs (exact datasheet values only).
    pub fn from_us(us: u32) -> Option<Self> {
        CT_NS
            .iter()
            .position(|&n| n == u64::from(us) * 1000)
            .map(|i| CT_ALL[i])
    }
    fn from_bits(b: u16) -> Self {
        CT_ALL[(b & 0b111) as usize]
    }
}

/// Averaging count (SBOS576 table 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Averaging {
    /// 1 (power-on default).
    #[default]
    X1 = 0,
    /// 4.
    X4 = 1,
    /// 16.
    X16 = 2,
    /// 64.
    X64 = 3,
    /// 128.
    X128 = 4,
    /// 256.
    X256 = 5,
    /// 512.
    X512 = 6,
    /// 1024.
    X1024 = 7,
}

impl Averaging {
    /// Samples averaged.
    pub fn count(self) -> u64 {
        AVG_N[self as usize]
    }
    /// From a count (exact datasheet values only).
    pub fn from_count(n: u16) -> Option<Self> {
        AVG_N
            .iter()
            .position(|&c| c == u64::from(n))
            .map(|i| AVG_ALL[i])
    }
    fn from_bits(b: u16) -> Self {
        AVG_ALL[(b & 0b111) as usize]
    }
}

/// The configuration register, decoded. `Default` is the power-on value 0x7127.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Channel 1..=3 enabled.
    pub channels: [bool; 3],
    /// Averaging.
    pub averaging: Averaging,
    /// Bus conversion time.
    pub bus_ct: ConversionTime,
    /// Shunt conversion time.
    pub shunt_ct: ConversionTime,
    /// Mode bits (7 = shunt and bus, continuous; same table as the INA219).
    pub mode: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_bits(CONFIG_POR)
    }
}

impl Config {
    /// Register value.
    pub fn bits(&self) -> u16 {
        let mut v = 0;
        for ch in 1..=3u8 {
            if self.channels[usize::from(ch - 1)] {
                v |= BitFlags::channel_enable(ch);
            }
        }
        v | ((self.averaging as u16) << 9)
            | ((self.bus_ct as u16) << 6)
            | ((self.shunt_ct as u16) << 3)
            | u16::from(self.mode & 0b111)
    }
    /// Decodes a register value.
    pub fn from_bits(v: u16) -> Config {
        Config {
            channels: [1u8, 2, 3].map(|ch| v & BitFlags::channel_enable(ch) != 0),
            averaging: Averaging::from_bits(v >> 9),
            bus_ct: ConversionTime::from_bits(v >> 6),
            shunt_ct: ConversionTime::from_bits(v >> 3),
            mode: (v & 0b111) as u8,
        }
    }
    /// Enabled channel count.
    pub fn enabled(&self) -> usize {
        self.channels.iter().filter(|&&c| c).count()
    }
    /// Time of one full cycle over the enabled channels, ns; CVRF sets once per cycle
    /// (3 channels × (140 + 140) µs = 840 µs → ≈ 1.19 kHz per channel).
    pub fn conversion_period_ns(&self) -> u64 {
        let per_channel = match self.mode & 0b11 {
            1 => self.shunt_ct.ns(),
            2 => self.bus_ct.ns(),
            3 => self.shunt_ct.ns() + self.bus_ct.ns(),
            _ => 0,
        };
        self.enabled() as u64 * per_channel * self.averaging.count()
    }
}

/// Shunt register → µV (13-bit signed, left-justified by 3, LSB 40 µV).
pub fn shunt_uv(raw: u16) -> i32 {
    i32::from((raw as i16) >> 3) * 40
}

/// Bus register → mV (left-justified by 3, LSB 8 mV; negative codes read 0).
pub fn bus_mv(raw: u16) -> u32 {
    (i32::from((raw as i16) >> 3) * 8).max(0) as u32
}

/// Driver errors, generic over the bus error.
#[derive(Debug, thiserror::Error)]
pub enum Error<E: core::fmt::Debug> {
    /// The bus transaction failed.
    #[error("i2c error: {0:?}")]
    I2c(E),
    /// The device at the address is not an INA3221.
    #[error("device at {address:#04x} is not an ina3221: manufacturer id '{manufacturer:#06x}' (expected 0x5449), die id '{die:#06x}' (expected 0x3220)")]
    IdMismatch {
        /// Address probed.
        address: u8,
        /// Manufacturer ID read.
        manufacturer: u16,
        /// Die ID read.
        die: u16,
    },
    /// A setting the chip cannot represent.
    #[error("invalid ina3221 setting {what}: '{value}', expected {expected}")]
    InvalidSetting {
        /// Which setting.
        what: &'static str,
        /// Value given.
        value: String,
        /// Allowed range.
        expected: &'static str,
    },
    /// The configuration is not what was written (supply dip → POR, or a reset).
    #[error("ina3221 brown-out: config reads '{read:#06x}', wrote '{wrote:#06x}'")]
    BrownOut {
        /// Written.
        wrote: u16,
        /// Read back.
        read: u16,
    },
}

/// One channel of a fresh conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelReading {
    /// Bus voltage, mV.
    pub bus_mv: u32,
    /// Shunt voltage, µV (signed).
    pub shunt_uv: i32,
    /// Current, µA (signed).
    pub current_ua: i64,
    /// Power, µW (signed).
    pub power_uw: i64,
}

/// An INA3221 on an I2C bus.
#[derive(Debug)]
pub struct Ina3221<I2C> {
    i2c: I2C,
    address: u8,
    /// Shadow of the last configuration written.
    config: Config,
    shunt_uohm: [u32; 3],
}

impl<I2C: I2c> Ina3221<I2C> {
    /// Creates the driver; checks the settings without touching the bus.
    pub fn new(
        i2c: I2C,
        address: u8,
        shunt_uohm: [u32; 3],
        config: Config,
    ) -> Result<Self, Error<I2C::Error>> {
        if !(0x40..=0x43).contains(&address) {
            return Err(Error::InvalidSetting {
                what: "address",
                value: format!("{address:#04x}"),
                expected: "0x40..=0x43",
            });
        }
        if config.enabled() == 0 {
            return Err(Error::InvalidSetting {
                what: "channels",
                value: "none".into(),
                expected: "at least one enabled channel",
            });
        }
        if let Some(s) = shunt_uohm.iter().find(|&&s| s == 0) {
            return Err(Error::InvalidSetting {
                what: "shunt",
                value: s.to_string(),
                expected: "a shunt above 0 ohms",
            });
        }
        Ok(Ina3221 {
            i2c,
            address,
            config,
            shunt_uohm,
        })
    }

    /// Checks the ID registers (refusing anything that is not an INA3221), then writes
    /// the configuration.
    pub fn init(&mut self) -> Result<(), Error<I2C::Error>> {
        let manufacturer = self.read_register(Register::MANUFACTURER_ID)?;
        let die = self.read_register(Register::DIE_ID)?;
        if manufacturer != MANUFACTURER_ID || die != DIE_ID {
            return Err(Error::IdMismatch {
                address: self.address,
                manufacturer,
                die,
            });
        }
        self.write_register(Register::CONFIG, self.config.bits())
    }

    /// Reads the enabled channels if CVRF says a fresh cycle completed, else `None`
    /// (one register read; reading Mask/Enable clears CVRF).
    pub fn read_if_ready(
        &mut self,
    ) -> Result<Option<[Option<ChannelReading>; 3]>, Error<I2C::Error>> {
        if !self.poll_ready()? {
            return Ok(None);
        }
        self.read_channels().map(Some)
    }

    /// The gating read: Mask/Enable (clears CVRF); true when a cycle completed.
    pub fn poll_ready(&mut self) -> Result<bool, Error<I2C::Error>> {
        let me = self.read_register(Register::MASK_ENABLE)?;
        Ok(me & BitFlags::CVRF != 0)
    }

    /// The enabled channels' shunt and bus registers, in channel order.
    pub fn read_channels(&mut self) -> Result<[Option<ChannelReading>; 3], Error<I2C::Error>> {
        let mut out = [None; 3];
        for ch in 1..=3u8 {
            let i = usize::from(ch - 1);
            if !self.config.channels[i] {
                continue;
            }
            let shunt = self.read_register(Register::shunt(ch))?;
            let bus = self.read_register(Register::bus(ch))?;
            out[i] = Some(self.convert(ch, shunt, bus));
        }
        Ok(out)
    }

    /// Pure part: registers of channel `ch` → reading.
    pub fn convert(&self, ch: u8, shunt: u16, bus: u16) -> ChannelReading {
        let shunt_uv = shunt_uv(shunt);
        let bus_mv = bus_mv(bus);
        let current_ua = super::ina219::current_ua(shunt_uv, self.shunt_uohm[usize::from(ch - 1)]);
        ChannelReading {
            bus_mv,
            shunt_uv,
            current_ua,
            power_uw: super::ina219::power_uw(bus_mv, current_ua),
        }
    }

    /// Brown-out check: the configuration must read back as written (one read).
    pub fn check_brown_out(&mut self) -> Result<(), Error<I2C::Error>> {
        let read = self.read_register(Register::CONFIG)?;
        let wrote = self.config.bits();
        if read != wrote {
            return Err(Error::BrownOut { wrote, read });
        }
        Ok(())
    }

    /// The shadowed configuration.
    pub fn config(&self) -> Config {
        self.config
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
    fn por_config_decodes() {
        let c = Config::default();
        assert_eq!(c.channels, [true, true, true]);
        assert_eq!(c.averaging, Averaging::X1);
        assert_eq!(c.bus_ct, ConversionTime::Us1100);
        assert_eq!(c.shunt_ct, ConversionTime::Us1100);
        assert_eq!(c.mode, 7);
        assert_eq!(c.bits(), CONFIG_POR);
        assert_eq!(c.conversion_period_ns(), 6_600_000);
    }

    #[test]
    fn fastest_cycle_is_840_us() {
        let c = Config {
            bus_ct: ConversionTime::Us140,
            shunt_ct: ConversionTime::Us140,
            ..Config::default()
        };
        assert_eq!(c.conversion_period_ns(), 840_000);
        assert_eq!(c.bits(), 0x7007);
    }

    #[test]
    fn shunt_is_13_bit_signed() {
        assert_eq!(shunt_uv(0x7FF8), 4095 * 40); // +163.8 mV
        assert_eq!(shunt_uv(0x8000), -4096 * 40); // −163.84 mV
        assert_eq!(shunt_uv(0xFFF8), -40);
        assert_eq!(bus_mv(0xFFF8), 0); // negative code → 0
        assert_eq!(bus_mv(625 << 3), 5000);
    }

    #[test]
    fn register_map() {
        assert_eq!(Register::shunt(3), 0x05);
        assert_eq!(Register::bus(2), 0x04);
        assert_eq!(BitFlags::channel_enable(1), 0x4000);
    }
}
