//! INA3221 register model (SBOS576): a cycle over the enabled channels (shunt then
//! bus, each at its conversion time × averaging), CVRF set at the end of the cycle
//! and cleared by reading Mask/Enable or writing the configuration; ID registers;
//! 13-bit quantisation and clipping; POR values.

use super::load::Load;
use super::{quantise, ConversionClock, RegisterModel};
use crate::power::ina3221::{
    BitFlags, Config, Register, CONFIG_POR, DIE_ID, MANUFACTURER_ID, MASK_ENABLE_POR,
};

/// The INA3221 model.
#[derive(Debug)]
pub struct Ina3221Model {
    /// Registers 0x00..=0x11 (data and limit registers are stored here too).
    regs: [u16; 0x12],
    cvrf: bool,
    /// Cycles since the last configuration write or POR.
    clock: ConversionClock,
    shunt_ohms: [f64; 3],
    loads: [Option<Load>; 3],
    /// What the die answers at 0xFE/0xFF (a wrong part can be simulated).
    ids: (u16, u16),
}

impl Ina3221Model {
    /// A chip at power-on.
    pub fn new(shunt_ohms: [f64; 3], loads: [Option<Load>; 3], now_ns: u64) -> Self {
        let mut m = Ina3221Model {
            regs: [0; 0x12],
            cvrf: false,
            clock: ConversionClock::new(now_ns),
            shunt_ohms,
            loads,
            ids: (MANUFACTURER_ID, DIE_ID),
        };
        m.power_on_reset(now_ns);
        m
    }

    /// Answer other IDs (to test that a wrong part is refused).
    pub fn with_ids(mut self, manufacturer: u16, die: u16) -> Self {
        self.ids = (manufacturer, die);
        self
    }

    /// The chip's conversion clock runs `pct` % slow (positive) or fast (negative)
    /// against its nominal timing, like a real part's internal oscillator.
    pub fn with_clock_error_pct(mut self, pct: f64) -> Self {
        self.clock.set_error_pct(pct);
        self
    }

    fn advance(&mut self, now_ns: u64) {
        let cfg = Config::from_bits(self.regs[0]);
        let (period, continuous) = (cfg.conversion_period_ns(), cfg.mode & 0b100 != 0);
        if let Some(t_ns) = self.clock.advance(now_ns, period, continuous) {
            self.convert(&cfg, t_ns);
        }
    }

    fn convert(&mut self, cfg: &Config, t_ns: u64) {
        for ch in 0..3 {
            if !cfg.channels[ch] {
                continue;
            }
            let (current_a, bus_v) = match &mut self.loads[ch] {
                Some(l) => l.at(t_ns),
                None => (0.0, 0.0),
            };
            let c = ch as u8 + 1;
            if cfg.mode & 0b001 != 0 {
                let (code, _) = quantise(current_a * self.shunt_ohms[ch], 40e-6, -4096, 4095);
                self.regs[usize::from(Register::shunt(c))] = ((code as i16) << 3) as u16;
            }
            if cfg.mode & 0b010 != 0 {
                let (code, _) = quantise(bus_v, 8e-3, 0, 4095);
                self.regs[usize::from(Register::bus(c))] = (code as u16) << 3;
            }
        }
        self.cvrf = true;
    }
}

impl RegisterModel for Ina3221Model {
    fn read(&mut self, reg: u8, now_ns: u64) -> u16 {
        self.advance(now_ns);
        match reg {
            Register::MANUFACTURER_ID => self.ids.0,
            Register::DIE_ID => self.ids.1,
            Register::MASK_ENABLE => {
                // SBOS576 §8.6.2.14: reading Mask/Enable clears CVRF.
                let v = (self.regs[0x0F] & !BitFlags::CVRF)
                    | if self.cvrf { BitFlags::CVRF } else { 0 };
                self.cvrf = false;
                v
            }
            r if usize::from(r) < self.regs.len() => self.regs[usize::from(r)],
            _ => 0,
        }
    }

    fn write(&mut self, reg: u8, value: u16, now_ns: u64) {
        self.advance(now_ns);
        match reg {
            Register::CONFIG if value & BitFlags::RST != 0 => self.power_on_reset(now_ns),
            Register::CONFIG => {
                self.regs[0] = value;
                self.clock.restart(now_ns);
                self.cvrf = false;
            }
            Register::MASK_ENABLE => self.regs[0x0F] = value & !BitFlags::CVRF,
            // Limit registers are writable; data registers are not.
            0x07..=0x0C | 0x0E | 0x10 | 0x11 => self.regs[usize::from(reg)] = value,
            _ => {}
        }
    }

    fn power_on_reset(&mut self, now_ns: u64) {
        self.regs = [0; 0x12];
        self.regs[0] = CONFIG_POR;
        for r in 0x07..=0x0C {
            self.regs[r] = 0x7FF8;
        }
        self.regs[0x0E] = 0x7FF8;
        self.regs[0x0F] = MASK_ENABLE_POR;
        self.regs[0x10] = 0x2710;
        self.regs[0x11] = 0x2328;
        self.cvrf = false;
        self.clock.restart(now_ns);
    }

    fn conversions(&self) -> u64 {
        self.clock.total()
    }

    fn data_register(&self) -> u8 {
        Register::shunt(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_timing_and_cvrf() {
        let loads = [
            Some(Load::Constant {
                current_a: 1.0,
                bus_v: 5.0,
            }),
            Some(Load::Constant {
                current_a: -0.5,
                bus_v: 12.0,
            }),
            None,
        ];
        let mut m = Ina3221Model::new([0.1, 0.1, 0.1], loads, 0);
        assert_eq!(m.read(Register::MANUFACTURER_ID, 0), 0x5449);
        m.write(Register::CONFIG, 0x7007, 0); // 3 ch, 140 µs + 140 µs
        assert_eq!(m.read(Register::MASK_ENABLE, 839_999) & 1, 0);
        assert_eq!(m.read(Register::MASK_ENABLE, 840_000) & 1, 1);
        assert_eq!(m.read(Register::MASK_ENABLE, 840_001) & 1, 0);
        // 100 mV / 40 µV = 2500, clipped to nothing; left-justified by 3.
        assert_eq!(m.read(Register::shunt(1), 840_002), 2500 << 3);
        assert_eq!(m.read(Register::shunt(2), 840_002) as i16 >> 3, -1250);
        assert_eq!(m.read(Register::bus(2), 840_002) >> 3, 1500);
    }

    #[test]
    fn shunt_clips_at_163_mv() {
        let loads = [
            Some(Load::Constant {
                current_a: 10.0,
                bus_v: 5.0,
            }),
            None,
            None,
        ];
        let mut m = Ina3221Model::new([0.1, 0.1, 0.1], loads, 0);
        m.write(Register::CONFIG, 0x7007, 0);
        assert_eq!(m.read(Register::shunt(1), 1_000_000) >> 3, 4095);
    }
}
