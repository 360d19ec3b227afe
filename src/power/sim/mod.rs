//! Register-level chip simulators (`kind = "sim"`): an INA219 and an INA3221 that
//! implement `embedded_hal::i2c::I2c`, so the real drivers and the sampler run on
//! them unchanged.
//!
//! Time is the host's CLOCK_MONOTONIC: a chip model converts lazily, working out on
//! each register access how many conversions have completed since the configuration
//! was written. Each transaction takes as long as it would on the wire at the
//! configured bus clock (≈ 120 µs for a register read at 400 kHz), slept precisely,
//! so the sampler's time budget is the real one.

pub mod faults;
pub mod ina219;
pub mod ina3221;
pub mod load;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};
use serde::Serialize;

use crate::clock::monotonic_ns;
use crate::power::timing::{precise_sleep_until_ns, thread_cpu_ns};
pub use faults::FaultSchedule;

/// What a chip model does with register traffic; `now_ns` is when the bytes reach it.
pub trait RegisterModel: Send {
    /// Reads a register (side effects such as clearing CNVR/CVRF happen here).
    fn read(&mut self, reg: u8, now_ns: u64) -> u16;
    /// Writes a register.
    fn write(&mut self, reg: u8, value: u16, now_ns: u64);
    /// Supply dip: every register back to its power-on value.
    fn power_on_reset(&mut self, now_ns: u64);
    /// Conversions completed since creation.
    fn conversions(&self) -> u64;
    /// The register whose reads mark "this conversion was consumed" (the INA219's
    /// shunt register, the INA3221's channel-1 shunt): reading it twice for one
    /// conversion counts as a duplicate read.
    fn data_register(&self) -> u8;
}

/// Counters shared between a simulator and whoever watches it (tests, the bench).
#[derive(Debug, Default)]
pub struct SimCounters {
    /// Transactions addressed to the chip.
    pub transactions: AtomicU64,
    /// Conversions the chip completed (as of the last access).
    pub conversions: AtomicU64,
    /// Transactions answered with an injected NACK.
    pub nacks_injected: AtomicU64,
    /// Transactions failed with an injected bus error.
    pub bus_errors_injected: AtomicU64,
    /// Stuck-bus episodes started.
    pub stuck_episodes: AtomicU64,
    /// Transactions that timed out on a stuck bus.
    pub stuck_timeouts: AtomicU64,
    /// Brown-outs (registers back to POR).
    pub brown_outs: AtomicU64,
    /// Data-register reads of a conversion that had already been read (a reader
    /// not gating on CNVR/CVRF would make these: the benchmark's ground truth).
    pub duplicate_reads: AtomicU64,
    /// Calls into the simulated bus (every `transaction`, answered or not).
    pub bus_calls: AtomicU64,
    /// CPU time (CLOCK_THREAD_CPUTIME_ID) the calling thread spent inside simulated
    /// transactions, ns (measured on one call in 16, scaled): the wire-time wait (one
    /// timed wake-up) and the chip model. On hardware that is the I2C driver's
    /// blocking transfer and the chip's silicon instead, so the sampler benchmark
    /// reports it apart from the sampler's own CPU.
    pub bus_cpu_ns: AtomicU64,
}

/// A snapshot of `SimCounters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Transactions addressed to the chip.
    pub transactions: u64,
    /// Conversions completed.
    pub conversions: u64,
    /// Injected NACKs.
    pub nacks_injected: u64,
    /// Injected bus errors.
    pub bus_errors_injected: u64,
    /// Stuck episodes.
    pub stuck_episodes: u64,
    /// Stuck timeouts.
    pub stuck_timeouts: u64,
    /// Brown-outs.
    pub brown_outs: u64,
    /// Reads of an already-read conversion.
    pub duplicate_reads: u64,
    /// Calls into the simulated bus.
    pub bus_calls: u64,
    /// CPU time spent inside simulated transactions (wire wait + chip model), ns.
    pub bus_cpu_ns: u64,
}

impl SimCounters {
    /// Reads all counters.
    pub fn snapshot(&self) -> SimStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimStats {
            transactions: l(&self.transactions),
            conversions: l(&self.conversions),
            nacks_injected: l(&self.nacks_injected),
            bus_errors_injected: l(&self.bus_errors_injected),
            stuck_episodes: l(&self.stuck_episodes),
            stuck_timeouts: l(&self.stuck_timeouts),
            brown_outs: l(&self.brown_outs),
            duplicate_reads: l(&self.duplicate_reads),
            bus_calls: l(&self.bus_calls),
            bus_cpu_ns: l(&self.bus_cpu_ns),
        }
    }
}

/// A simulated bus error, classified like a real adapter's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimError(pub ErrorKind);

impl embedded_hal::i2c::Error for SimError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "simulated i2c error: {:?}", self.0)
    }
}

/// How long a stuck bus blocks one transaction before the adapter gives up
/// (Linux adapters time out; i2c-bcm2835 after its clock-stretch timeout).
pub const ADAPTER_TIMEOUT_NS: u64 = 25_000_000;

/// Wire time of a transaction at `bus_khz`: 9 bits per byte (8 + ACK) including
/// each address byte, plus one bit time per START/repeated START and the STOP.
/// A 1-byte-pointer, 2-byte register read is 48 bits: 120 µs at 400 kHz.
pub fn transaction_ns(ops: &[(bool, usize)], bus_khz: u32) -> u64 {
    bits_ns(transaction_bits(ops.iter().map(|&(_, len)| len)), bus_khz)
}

/// Bits on the wire for operations of these lengths (see `transaction_ns`).
fn transaction_bits(lens: impl Iterator<Item = usize>) -> usize {
    lens.map(|len| 9 * (1 + len) + 1).sum::<usize>() + 1
}

/// Time of `bits` at `bus_khz`, ns.
fn bits_ns(bits: usize, bus_khz: u32) -> u64 {
    bits as u64 * 1_000_000 / u64::from(bus_khz.max(1))
}

/// One bus call in this many has its CPU cost measured (and counted for all).
const BUS_CPU_SAMPLING: u64 = 16;

/// A chip model on its own simulated bus.
pub struct SimI2c<M> {
    model: M,
    address: u8,
    bus_khz: u32,
    /// The register pointer (set by the first byte of every write).
    pointer: u8,
    faults: FaultSchedule,
    counters: Arc<SimCounters>,
    /// Transaction time is slept (true) or only accounted (false; unit tests).
    realtime: bool,
    /// When the last transaction left the wire: the bus is one timeline, so a
    /// transaction never starts before the previous one ended, even when a sleep
    /// returned a little early.
    bus_free_ns: u64,
    /// Conversion count when the data register was last read.
    last_data_conversion: u64,
}

impl<M: RegisterModel> SimI2c<M> {
    /// A simulator answering at `address`.
    pub fn new(model: M, address: u8, bus_khz: u32, faults: FaultSchedule) -> Self {
        SimI2c {
            model,
            address,
            bus_khz,
            pointer: 0,
            faults,
            counters: Arc::new(SimCounters::default()),
            realtime: true,
            bus_free_ns: 0,
            last_data_conversion: 0,
        }
    }

    /// Skip the wire-time sleep (for tests that check logic, not timing).
    pub fn without_wire_time(mut self) -> Self {
        self.realtime = false;
        self
    }

    /// The shared counters.
    pub fn counters(&self) -> Arc<SimCounters> {
        self.counters.clone()
    }

    /// The chip model (tests inspect it).
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    fn wait(&self, until_ns: u64) {
        if self.realtime {
            precise_sleep_until_ns(until_ns);
        }
    }

    /// One transaction on the wire and in the chip model.
    fn transact(&mut self, address: u8, operations: &mut [Operation<'_>]) -> Result<(), SimError> {
        let start = monotonic_ns().max(self.bus_free_ns);
        // 9 bits per byte (8 + ACK) and the address byte, per operation: see
        // `transaction_ns` (no allocation here: this runs once per register read).
        let bits = transaction_bits(operations.iter().map(|op| match op {
            Operation::Read(b) => b.len(),
            Operation::Write(b) => b.len(),
        }));
        let wire_ns = bits_ns(bits, self.bus_khz);
        let addr_byte_ns = transaction_ns(&[(false, 0)], self.bus_khz);

        // A stuck bus (SDA held low) blocks everyone, whatever the address.
        let fired = self.faults.poll(start);
        if fired.brown_out {
            self.counters.brown_outs.fetch_add(1, Ordering::Relaxed);
            self.model.power_on_reset(start);
        }
        if fired.stuck_started {
            self.counters.stuck_episodes.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(until) = self.faults.stuck_until(start) {
            self.wait(until.min(start + ADAPTER_TIMEOUT_NS));
            self.counters.stuck_timeouts.fetch_add(1, Ordering::Relaxed);
            return Err(SimError(ErrorKind::Other));
        }
        if address != self.address {
            self.wait(start + addr_byte_ns);
            return Err(SimError(ErrorKind::NoAcknowledge(
                NoAcknowledgeSource::Address,
            )));
        }
        self.counters.transactions.fetch_add(1, Ordering::Relaxed);
        if self.faults.take_nack() {
            self.counters.nacks_injected.fetch_add(1, Ordering::Relaxed);
            self.wait(start + addr_byte_ns);
            return Err(SimError(ErrorKind::NoAcknowledge(
                NoAcknowledgeSource::Address,
            )));
        }
        if self.faults.take_bus_error() {
            self.counters
                .bus_errors_injected
                .fetch_add(1, Ordering::Relaxed);
            self.wait(start + wire_ns / 2);
            return Err(SimError(ErrorKind::Bus));
        }

        // The chip sees the bytes at the end of the wire time (the data phase).
        let t_chip = start + wire_ns;
        self.bus_free_ns = t_chip;
        self.wait(t_chip);
        for op in operations.iter_mut() {
            match op {
                Operation::Write(bytes) => {
                    if let Some(&p) = bytes.first() {
                        self.pointer = p;
                    }
                    if bytes.len() >= 3 {
                        self.model.write(
                            self.pointer,
                            u16::from_be_bytes([bytes[1], bytes[2]]),
                            t_chip,
                        );
                    }
                }
                Operation::Read(buf) => {
                    // No auto-increment on these chips: longer reads repeat the register.
                    let v = self.model.read(self.pointer, t_chip).to_be_bytes();
                    if self.pointer == self.model.data_register() {
                        let conv = self.model.conversions();
                        if conv > 0 && conv == self.last_data_conversion {
                            self.counters
                                .duplicate_reads
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        self.last_data_conversion = conv;
                    }
                    for (i, b) in buf.iter_mut().enumerate() {
                        *b = v[i % 2];
                    }
                }
            }
        }
        self.counters
            .conversions
            .store(self.model.conversions(), Ordering::Relaxed);
        Ok(())
    }
}

impl<M: RegisterModel> ErrorType for SimI2c<M> {
    type Error = SimError;
}

impl<M: RegisterModel> I2c for SimI2c<M> {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), SimError> {
        let n = self.counters.bus_calls.fetch_add(1, Ordering::Relaxed);
        if !self.realtime || n % BUS_CPU_SAMPLING != 0 {
            return self.transact(address, operations);
        }
        // Reading the thread's CPU clock is a syscall: measure one call in
        // BUS_CPU_SAMPLING and count it for all of them, so the accounting does not
        // inflate what it measures.
        let cpu0 = thread_cpu_ns();
        let r = self.transact(address, operations);
        let cpu1 = thread_cpu_ns();
        // The clock reads' own cost inside the interval (about one read): not the
        // bus's, so not counted as it.
        let read_cost = thread_cpu_ns().saturating_sub(cpu1);
        let spent = cpu1.saturating_sub(cpu0).saturating_sub(read_cost);
        self.counters
            .bus_cpu_ns
            .fetch_add(spent * BUS_CPU_SAMPLING, Ordering::Relaxed);
        r
    }
}

/// Conversion timing shared by the chip models: a conversion completes every period
/// from the last configuration write or POR (only the first one in a triggered mode).
#[derive(Debug)]
struct ConversionClock {
    /// When the current conversion sequence started (last config write or POR).
    t0_ns: u64,
    /// Conversions completed since `t0_ns`.
    done: u64,
    /// Conversions completed since creation.
    total: u64,
    /// The chip's oscillator error, parts per million of the period (+ = slow).
    error_ppm: i64,
}

impl ConversionClock {
    /// A sequence starting at `now_ns`.
    fn new(now_ns: u64) -> Self {
        ConversionClock {
            t0_ns: now_ns,
            done: 0,
            total: 0,
            error_ppm: 0,
        }
    }

    /// The oscillator runs `pct` % slow (positive) or fast (negative).
    fn set_error_pct(&mut self, pct: f64) {
        self.error_ppm = (pct * 10_000.0).round() as i64;
    }

    /// Restarts the sequence at `now_ns` (configuration write, POR).
    fn restart(&mut self, now_ns: u64) {
        self.t0_ns = now_ns;
        self.done = 0;
    }

    /// Conversions completed since creation.
    fn total(&self) -> u64 {
        self.total
    }

    /// Catches up to `now_ns`: when conversions completed since the last call, returns
    /// when the latest one did.
    fn advance(&mut self, now_ns: u64, period_ns: u64, continuous: bool) -> Option<u64> {
        let period_ns = (i128::from(period_ns) * i128::from(1_000_000 + self.error_ppm) / 1_000_000)
            .max(0) as u64;
        if period_ns == 0 || now_ns < self.t0_ns {
            return None;
        }
        let k = (now_ns - self.t0_ns) / period_ns;
        // Triggered modes convert once per configuration write.
        let k = if continuous { k } else { k.min(1) };
        if k <= self.done {
            return None;
        }
        self.total += k - self.done;
        self.done = k;
        Some(self.t0_ns + k * period_ns)
    }
}

/// Rounds to the nearest integer code and clamps to `lo..=hi`; says if it clamped.
pub fn quantise(value: f64, lsb: f64, lo: i32, hi: i32) -> (i32, bool) {
    let code = (value / lsb).round();
    if code > f64::from(hi) {
        (hi, true)
    } else if code < f64::from(lo) {
        (lo, true)
    } else {
        (code as i32, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_read_is_120_us_at_400_khz() {
        assert_eq!(transaction_ns(&[(false, 1), (true, 2)], 400), 120_000);
        assert_eq!(transaction_ns(&[(false, 1), (true, 2)], 1000), 48_000);
        // A 3-byte register write: 4 bytes × 9 + START + STOP = 38 bits.
        assert_eq!(transaction_ns(&[(false, 3)], 400), 95_000);
    }

    #[test]
    fn quantise_clamps() {
        assert_eq!(quantise(0.0012345, 0.00001, -4000, 4000), (123, false));
        assert_eq!(quantise(0.05, 0.00001, -4000, 4000), (4000, true));
        assert_eq!(quantise(-0.05, 0.00001, -4000, 4000), (-4000, true));
    }
}
