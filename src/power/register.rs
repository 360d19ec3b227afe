//! 16-bit big-endian register access shared by the INA219 and INA3221 drivers.

use embedded_hal::i2c::I2c;

/// Writes `value` to register `reg`: one write of the pointer byte and the value, MSB
/// first.
pub(crate) fn write<I2C: I2c>(
    i2c: &mut I2C,
    address: u8,
    reg: u8,
    value: u16,
) -> Result<(), I2C::Error> {
    let [hi, lo] = value.to_be_bytes();
    i2c.write(address, &[reg, hi, lo])
}

/// Reads register `reg`, MSB first.
///
/// Register reads use `write_read` (one combined transaction, repeated START): the
/// Raspberry Pi's i2c-bcm2835 driver rejects some longer multi-message transactions,
/// and a separate write+read would let another master move the register pointer in
/// between.
pub(crate) fn read<I2C: I2c>(i2c: &mut I2C, address: u8, reg: u8) -> Result<u16, I2C::Error> {
    let mut buf = [0u8; 2];
    i2c.write_read(address, &[reg], &mut buf)?;
    Ok(u16::from_be_bytes(buf))
}
