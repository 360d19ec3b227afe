//! `edgewatt sensors`: probe the configured sensors, print their settings, then live
//! readings per rail for N seconds with the effective sample rate.
//!
//! `edgewatt sensors scan --bus /dev/i2c-1` (a nested subcommand) probes 0x40–0x4F
//! and names what answers, like `i2cdetect` with chip identities.

use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::clock::monotonic_ns;
use crate::power::{self, SamplerOptions, SensorSpec};

/// What an INA219/INA3221 (or its simulator) covers: whatever its shunt is in.
const SHUNT_COVERS: &str = "what the shunt is wired into: the board input when it sits on the 5 V supply, one rail otherwise (docs/sensors.md, \"which source measures what\")";

/// Arguments of `edgewatt sensors`.
#[derive(Debug, clap::Args)]
pub struct SensorsArgs {
    /// How long to show live readings, seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Print one JSON document (sensors, rails, final stats) instead of text.
    #[arg(long)]
    pub json: bool,
    /// `scan`: probe a bus instead of reading the configured sensors.
    #[command(subcommand)]
    pub command: Option<SensorsCommand>,
}

/// `edgewatt sensors` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SensorsCommand {
    /// Probe 0x40–0x4F on an I2C bus and identify INA219/INA3221/INA226 chips.
    Scan {
        /// The I2C bus device.
        #[arg(long, default_value = "/dev/i2c-1")]
        bus: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `edgewatt sensors` against the configured `[[power.sensors]]`.
pub fn run(args: &SensorsArgs, specs: &[SensorSpec]) -> anyhow::Result<()> {
    if let Some(SensorsCommand::Scan { bus, json }) = &args.command {
        return scan(bus, *json || args.json);
    }
    anyhow::ensure!(
        !specs.is_empty(),
        "no [[power.sensors]] configured: add one (kind = \"sim\" works without hardware)"
    );
    let cancel = CancellationToken::new();
    let handle = power::start_sampler(specs, SamplerOptions::default(), cancel.clone())
        .context("starting the power sampler")?;
    let infos = handle.describe();
    let rails = handle.rails();
    if !args.json {
        for info in &infos {
            println!(
                "{} at {}{}: conversion every {:.0} µs{}",
                info.chip,
                info.location,
                if info.simulated { " [SIMULATED]" } else { "" },
                info.conversion_period_us,
                if info.gated {
                    " (CNVR/CVRF-gated)"
                } else {
                    " (no ready flag: deduplicated by value and time)"
                },
            );
            for (k, v) in &info.settings {
                println!("    {k} = {v}");
            }
            if !info.settings.contains_key("covers") {
                // Shunt amplifiers measure what they are wired into (docs/sensors.md).
                println!("    covers = {}", SHUNT_COVERS);
            }
        }
        println!();
        println!(
            "{:<20} {:>10} {:>12} {:>12} {:>10}",
            "rail", "bus mV", "current mA", "power mW", "rate Hz"
        );
    }
    let start = monotonic_ns();
    for _ in 0..args.seconds {
        std::thread::sleep(Duration::from_secs(1));
        if args.json {
            continue;
        }
        let stats = handle.stats();
        for (i, (rail, s)) in rails.iter().zip(handle.latest()).enumerate() {
            let rate = stats
                .rails
                .iter()
                .find(|r| usize::from(r.rail) == i)
                .map(|r| r.effective_rate_hz);
            match s {
                Some(s) => println!(
                    "{:<20} {:>10} {:>12.3} {:>12.3} {:>10.1}{}{}",
                    rail.name,
                    s.bus_mv,
                    s.current_ua as f64 / 1000.0,
                    s.power_uw as f64 / 1000.0,
                    rate.unwrap_or(0.0),
                    if rail.total { " total" } else { "" },
                    if rail.simulated { " sim" } else { "" },
                ),
                None => println!("{:<20} {:>10}", rail.name, "no data"),
            }
        }
        println!();
    }
    let stats = handle.stats();
    let gaps = handle.gaps(start, monotonic_ns());
    handle.shutdown();
    if args.json {
        let doc = serde_json::json!({
            "simulated": handle.simulated(),
            "sensors": infos,
            "rails": rails,
            "latest": handle.latest(),
            "stats": stats,
            "gaps": gaps,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for r in &stats.rails {
            println!(
                "{:<20} {:>8} samples {:>9.1} Hz of {:>7.1} (chip measured; nominal {:.1}), missed {}, duplicates avoided {}, latency p50/p99 {:.0}/{:.0} µs, jitter p99 {:.0} µs, errors {:?}",
                r.name,
                r.samples,
                r.effective_rate_hz,
                r.measured_rate_hz,
                r.nominal_rate_hz,
                r.conversions_missed,
                r.duplicates_avoided,
                r.read_latency_p50_us,
                r.read_latency_p99_us,
                r.interval_jitter_p99_us,
                r.errors_by_kind
            );
        }
        for g in &gaps {
            println!(
                "gap on rail {}: {:.1} ms: {}",
                g.rail,
                (g.end_ns - g.start_ns) as f64 / 1e6,
                g.reason
            );
        }
    }
    Ok(())
}

fn scan(bus: &str, json: bool) -> anyhow::Result<()> {
    let mut i2c = power::factory::open_i2c(bus)?;
    let hits = power::scan::scan(&mut i2c);
    if json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(());
    }
    if hits.is_empty() {
        println!("{bus}: nothing answered at 0x40..=0x4f");
    }
    for h in hits {
        println!("{bus} {:#04x}: {} ({})", h.address, h.chip, h.detail);
    }
    Ok(())
}
