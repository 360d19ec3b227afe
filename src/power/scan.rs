//! `edgewatt sensors scan`: probe 0x40–0x4F and name what answers, by ID registers
//! where the chip has them and by plausibility checks where it does not (INA219).

use embedded_hal::i2c::{ErrorKind, I2c};
use serde::Serialize;

use super::ina219;
use super::ina3221;

/// A device that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanHit {
    /// 7-bit address.
    pub address: u8,
    /// `ina3221`, `ina226`, `ina219?`, `unknown`.
    pub chip: String,
    /// How it was identified.
    pub detail: String,
}

fn read<I: I2c>(i2c: &mut I, address: u8, reg: u8) -> Result<u16, ErrorKind> {
    let mut buf = [0u8; 2];
    i2c.write_read(address, &[reg], &mut buf)
        .map_err(|e| embedded_hal::i2c::Error::kind(&e))?;
    Ok(u16::from_be_bytes(buf))
}

/// Identifies the device at `address`, or `None` if nothing acknowledges.
pub fn identify<I: I2c>(i2c: &mut I, address: u8) -> Option<ScanHit> {
    let config = read(i2c, address, 0x00).ok()?;
    let hit = |chip: &str, detail: String| {
        Some(ScanHit {
            address,
            chip: chip.into(),
            detail,
        })
    };
    let mfr = read(i2c, address, ina3221::Register::MANUFACTURER_ID).unwrap_or(0);
    let die = read(i2c, address, ina3221::Register::DIE_ID).unwrap_or(0);
    if mfr == ina3221::MANUFACTURER_ID {
        return match die {
            ina3221::DIE_ID => hit(
                "ina3221",
                format!("manufacturer id {mfr:#06x}, die id {die:#06x}, config {config:#06x}"),
            ),
            0x2260 => hit(
                "ina226",
                format!(
                    "manufacturer id {mfr:#06x}, die id {die:#06x} (not supported by this driver)"
                ),
            ),
            _ => hit(
                "ti-unknown",
                format!("manufacturer id {mfr:#06x}, unknown die id {die:#06x}"),
            ),
        };
    }
    // The INA219 has no ID register: config bit 14 is reserved (reads 0) and the
    // calibration register's bit 0 is void (reads 0).
    let cal = read(i2c, address, ina219::Register::CALIBRATION).unwrap_or(1);
    if config & 0x4000 == 0 && cal & 1 == 0 {
        let por = if config == ina219::CONFIG_POR {
            " (power-on value)"
        } else {
            ""
        };
        return hit(
            "ina219?",
            format!("no id register; plausible config {config:#06x}{por}, calibration {cal:#06x}"),
        );
    }
    hit("unknown", format!("config reads {config:#06x}"))
}

/// Probes every address in 0x40..=0x4F.
pub fn scan<I: I2c>(i2c: &mut I) -> Vec<ScanHit> {
    (0x40..=0x4Fu8).filter_map(|a| identify(i2c, a)).collect()
}
