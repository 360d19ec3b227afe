//! INA219 register model (SBOS448): conversion timing from the configuration,
//! CNVR set at the end of each conversion and cleared by a power-register read or a
//! configuration write, LSB quantisation, PGA clipping and OVF, POR values.

use super::load::Load;
use super::{quantise, ConversionClock, RegisterModel};
use crate::power::ina219::{BitFlags, Config, Register, CONFIG_POR};

/// The INA219 model.
#[derive(Debug)]
pub struct Ina219Model {
    config: u16,
    calibration: u16,
    shunt: u16,
    bus_code: u16,
    current: u16,
    power: u16,
    cnvr: bool,
    ovf: bool,
    /// Conversions since the last configuration write or POR.
    clock: ConversionClock,
    /// The physical shunt, Ω (the chip does not know it; the physics does).
    shunt_ohms: f64,
    load: Load,
}

impl Ina219Model {
    /// A chip at power-on, at `now_ns`.
    pub fn new(shunt_ohms: f64, load: Load, now_ns: u64) -> Self {
        let mut m = Ina219Model {
            config: CONFIG_POR,
            calibration: 0,
            shunt: 0,
            bus_code: 0,
            current: 0,
            power: 0,
            cnvr: false,
            ovf: false,
            clock: ConversionClock::new(now_ns),
            shunt_ohms,
            load,
        };
        m.power_on_reset(now_ns);
        m
    }

    /// The chip's conversion clock runs `pct` % slow (positive) or fast (negative)
    /// against its nominal timing, like a real part's internal oscillator.
    pub fn with_clock_error_pct(mut self, pct: f64) -> Self {
        self.clock.set_error_pct(pct);
        self
    }

    /// Catches the conversion state up to `now_ns`.
    fn advance(&mut self, now_ns: u64) {
        let cfg = Config::from_bits(self.config);
        let (period, continuous) = (cfg.conversion_period_ns(), cfg.mode.continuous());
        if let Some(t_ns) = self.clock.advance(now_ns, period, continuous) {
            self.convert(&cfg, t_ns);
        }
    }

    /// Registers for a conversion completing at `t_ns`.
    fn convert(&mut self, cfg: &Config, t_ns: u64) {
        let (current_a, bus_v) = self.load.at(t_ns);
        let mode = cfg.mode as u8;
        let mut clipped = false;
        if mode & 0b001 != 0 {
            let fs_code = cfg.pga.full_scale_uv() / 10;
            let (code, c) = quantise(current_a * self.shunt_ohms, 10e-6, -fs_code, fs_code);
            clipped = c;
            self.shunt = code as i16 as u16;
        }
        if mode & 0b010 != 0 {
            let max_code = (cfg.bus_range.full_scale_mv() / 4).min(8191) as i32;
            let (code, _) = quantise(bus_v, 4e-3, 0, max_code);
            self.bus_code = code as u16;
        }
        // Current = Shunt × Cal / 4096; Power = Current × Bus / 5000 (SBOS448 eq. 4, 5).
        let mut math_ovf = false;
        if self.calibration == 0 {
            self.current = 0;
            self.power = 0;
        } else {
            let cur = i64::from(self.shunt as i16) * i64::from(self.calibration) / 4096;
            let cur = if cur > i64::from(i16::MAX) || cur < i64::from(i16::MIN) {
                math_ovf = true;
                cur.clamp(i64::from(i16::MIN), i64::from(i16::MAX))
            } else {
                cur
            };
            self.current = cur as i16 as u16;
            let p = cur.abs() * i64::from(self.bus_code) / 5000;
            if p > i64::from(u16::MAX) {
                math_ovf = true;
            }
            self.power = p.min(i64::from(u16::MAX)) as u16;
        }
        self.ovf = clipped || math_ovf;
        self.cnvr = true;
    }
}

impl RegisterModel for Ina219Model {
    fn read(&mut self, reg: u8, now_ns: u64) -> u16 {
        self.advance(now_ns);
        match reg {
            Register::CONFIG => self.config,
            Register::SHUNT_VOLTAGE => self.shunt,
            Register::BUS_VOLTAGE => {
                (self.bus_code << 3)
                    | if self.cnvr { BitFlags::CNVR } else { 0 }
                    | if self.ovf { BitFlags::OVF } else { 0 }
            }
            Register::POWER => {
                // SBOS448 §8.6.3.2: reading the power register clears CNVR.
                self.cnvr = false;
                self.power
            }
            Register::CURRENT => self.current,
            Register::CALIBRATION => self.calibration,
            _ => 0,
        }
    }

    fn write(&mut self, reg: u8, value: u16, now_ns: u64) {
        self.advance(now_ns);
        match reg {
            Register::CONFIG if value & BitFlags::RST != 0 => self.power_on_reset(now_ns),
            Register::CONFIG => {
                // A configuration write restarts conversion and clears CNVR.
                self.config = value & !BitFlags::RST & 0x3FFF;
                self.clock.restart(now_ns);
                self.cnvr = false;
            }
            // Bit 0 of the calibration register is void and reads 0.
            Register::CALIBRATION => self.calibration = value & !1,
            _ => {}
        }
    }

    fn power_on_reset(&mut self, now_ns: u64) {
        self.config = CONFIG_POR;
        self.calibration = 0;
        self.shunt = 0;
        self.bus_code = 0;
        self.current = 0;
        self.power = 0;
        self.cnvr = false;
        self.ovf = false;
        self.clock.restart(now_ns);
    }

    fn conversions(&self) -> u64 {
        self.clock.total()
    }

    fn data_register(&self) -> u8 {
        Register::SHUNT_VOLTAGE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(current_a: f64) -> Ina219Model {
        Ina219Model::new(
            0.1,
            Load::Constant {
                current_a,
                bus_v: 5.0,
            },
            0,
        )
    }

    #[test]
    fn por_values() {
        let mut m = model(1.0);
        assert_eq!(m.read(Register::CONFIG, 0), 0x399F);
        assert_eq!(m.read(Register::CALIBRATION, 0), 0);
        assert_eq!(m.read(Register::BUS_VOLTAGE, 0) & BitFlags::CNVR, 0);
    }

    #[test]
    fn cnvr_sets_after_conversion_and_clears_on_power_read() {
        let mut m = model(1.0);
        m.write(Register::CALIBRATION, 4096, 0);
        assert_eq!(m.read(Register::BUS_VOLTAGE, 1_063_999) & BitFlags::CNVR, 0);
        let bus = m.read(Register::BUS_VOLTAGE, 1_064_000);
        assert_ne!(bus & BitFlags::CNVR, 0);
        assert_eq!(bus >> 3, 1250); // 5 V / 4 mV
        assert_eq!(m.read(Register::SHUNT_VOLTAGE, 1_064_100), 10_000); // 100 mV / 10 µV
        assert_eq!(m.read(Register::CURRENT, 1_064_150), 10_000); // 1 A / 100 µA
        assert_eq!(m.read(Register::POWER, 1_064_200), 2500); // 10000 × 1250 / 5000
        assert_eq!(m.read(Register::BUS_VOLTAGE, 1_064_300) & BitFlags::CNVR, 0);
        assert_ne!(m.read(Register::BUS_VOLTAGE, 2_128_000) & BitFlags::CNVR, 0);
        assert_eq!(m.conversions(), 2);
    }

    #[test]
    fn pga_clipping_sets_ovf() {
        let mut m = model(1.0); // 100 mV across 0.1 Ω
                                // PGA ÷1 (±40 mV), 12-bit, continuous.
        m.write(Register::CONFIG, 0x399F & !(0b11 << 11), 0);
        let bus = m.read(Register::BUS_VOLTAGE, 2_000_000);
        assert_ne!(bus & BitFlags::OVF, 0);
        assert_eq!(m.read(Register::SHUNT_VOLTAGE, 2_000_000), 4000);
    }
}
