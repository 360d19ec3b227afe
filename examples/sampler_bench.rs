//! Sampler benchmark on the chip simulators, with a CPU load running beside it.
//!
//! ```text
//! cargo run --release --example sampler_bench -- [--seconds 5] [--load busy|llama|none]
//!     [--model-dir models --model SmolLM2-135M-Instruct.Q4_1] [--pin-sampler CPU] [--rt PRIO] [--only TEXT] [--json]
//! ```
//!
//! For each scenario it starts a sampler on one simulated chip, lets it run while the
//! load runs, and reports: unique samples per second per rail against the chip's
//! conversion rate (and against the conversions the simulator actually completed),
//! duplicates (two samples from one conversion: must be 0), conversions missed,
//! empty polls, read latency p50/p99, interval jitter p99, and the sampler thread's
//! CPU as a percentage of one core (CLOCK_THREAD_CPUTIME_ID over wall time), split
//! into the time spent inside the simulated bus (each register read sleeps its wire
//! time, one timed wake-up each, and runs the chip model: on hardware that is the I2C
//! driver's blocking transfer instead) and the sampler's own.
//!
//! Beside each CPU figure it prints a floor measured on the same host, at the same
//! priority, under the same load, just before and just after the scenario: a thread
//! that does nothing but the same waits. A timed wake-up's CPU cost is the host's,
//! not the sampler's (1–5 µs on bare metal, 15–35 µs on a nested VM), so the ratio
//! to the floor is what says whether the sampler's own work is small.
//!
//! `--load busy` (default) runs a float matrix-multiply loop pinned to the last CPU;
//! `--load llama` runs real llama.cpp generations with one thread on the crate's
//! engine (needs a `.gguf` in `--model-dir`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edgewatt::clock::monotonic_ns;
use edgewatt::power::{start_sampler, SamplerOptions, SensorSpec};
use tokio_util::sync::CancellationToken;

struct Scenario {
    name: &'static str,
    spec: String,
    /// Register reads a fresh sample takes (INA219: bus with CNVR, shunt, power;
    /// INA3221: Mask/Enable, 3 × shunt + bus, Mask/Enable again).
    reads: u32,
    bus_khz: u32,
}

fn scenarios() -> Vec<Scenario> {
    let ina219 = r#"
kind = "sim"
chip = "ina219"
bus_khz = 400
shunt_ohms = 0.1
max_current_a = 3.2
adc_bits = 12
rails = ["5V_IN"]
total = true
load = [{ source = "cpu", idle_w = 2.5, max_w = 8.5, bus_v = 5.0 }]
"#;
    let ina3221 = |khz: u32| {
        format!(
            r#"
kind = "sim"
chip = "ina3221"
bus_khz = {khz}
shunt_ohms = [0.01, 0.01, 0.01]
conversion_us = 140
rails = ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
total_rail = "VDD_IN"
load = [{{ source = "cpu", idle_w = 2.5, max_w = 8.5, bus_v = 5.0 }},
        {{ source = "cpu", idle_w = 0.5, max_w = 4.5, bus_v = 5.0 }},
        {{ source = "square", low_a = 0.2, high_a = 0.3, period_ms = 100.0, bus_v = 5.0 }}]
"#
        )
    };
    vec![
        Scenario {
            name: "ina219 12-bit shunt+bus @400kHz",
            spec: ina219.to_string(),
            reads: 3,
            bus_khz: 400,
        },
        Scenario {
            name: "ina219 12-bit, clock 8% slow",
            spec: format!("{ina219}clock_error_pct = 8.0\n"),
            reads: 3,
            bus_khz: 400,
        },
        Scenario {
            name: "ina219 12-bit, clock 5% fast",
            spec: format!("{ina219}clock_error_pct = -5.0\n"),
            reads: 3,
            bus_khz: 400,
        },
        Scenario {
            name: "ina3221 3ch x 140us @400kHz",
            spec: ina3221(400),
            reads: 8,
            bus_khz: 400,
        },
        Scenario {
            name: "ina3221 3ch x 140us @1MHz",
            spec: ina3221(1000),
            reads: 8,
            bus_khz: 1000,
        },
    ]
}

/// A float matrix multiply loop: the kind of work inference does, on one core.
fn busy_load(stop: Arc<AtomicBool>, ops: Arc<AtomicU64>, cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        let _ = edgewatt::power::timing::pin_to_cpu(cpu);
    }
    const N: usize = 96;
    let a: Vec<f32> = (0..N * N).map(|i| (i % 17) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..N * N).map(|i| (i % 13) as f32 * 0.2).collect();
    let mut c = vec![0f32; N * N];
    while !stop.load(Ordering::Relaxed) {
        for i in 0..N {
            for k in 0..N {
                let aik = a[i * N + k];
                for j in 0..N {
                    c[i * N + j] += aik * b[k * N + j];
                }
            }
        }
        std::hint::black_box(&mut c);
        ops.fetch_add(1, Ordering::Relaxed);
    }
}

// LLAMA-BEGIN
/// Real llama.cpp generations, one thread, until `stop`.
fn llama_load(stop: Arc<AtomicBool>, ops: Arc<AtomicU64>, model_dir: String, model: String) {
    use edgewatt::infer::{
        Engine, EngineConfig, GenerateOptions, GenerateRequest, NoopObserver, PromptInput,
    };
    let cancel = CancellationToken::new();
    let engine = match Engine::start(EngineConfig::new(model_dir), cancel.clone()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("llama load: cannot start engine: {e}");
            return;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let req = GenerateRequest {
            model: model.clone(),
            input: PromptInput::Prompt("Write a short story about a lighthouse keeper.".into()),
            options: GenerateOptions {
                max_tokens: 64,
                threads: Some(1),
                threads_batch: Some(1),
                ignore_eos: true,
                seed: Some(1),
                ..Default::default()
            },
            keep_alive_s: None,
        };
        match engine.generate_blocking(req, Box::new(NoopObserver), CancellationToken::new()) {
            Ok(_) => {
                ops.fetch_add(64, Ordering::Relaxed);
            }
            Err(e) => {
                eprintln!("llama load: {e}");
                break;
            }
        }
    }
    cancel.cancel();
}
// LLAMA-END

#[derive(Debug, serde::Serialize)]
struct Row {
    scenario: String,
    rail: String,
    nominal_hz: f64,
    /// The chip's rate as the sampler measured it.
    measured_hz: f64,
    unique_per_s: f64,
    ratio_vs_nominal: f64,
    ratio_vs_chip_conversions: f64,
    duplicates: u64,
    conversions_missed: u64,
    empty_polls_per_s: f64,
    latency_p50_us: f64,
    latency_p99_us: f64,
    jitter_p99_us: f64,
    /// The sampler thread's CPU, all of it (CLOCK_THREAD_CPUTIME_ID ÷ wall).
    sampler_cpu_percent: f64,
    /// Of that, inside the simulated I2C transactions: the wire-time sleep and the
    /// chip model (on hardware: the I2C driver's blocking transfers, whose cost
    /// depends on the board's kernel, and the chip itself).
    bus_cpu_percent: f64,
    /// The sampler's own: scheduling, its one timed wait per conversion, conversion
    /// to units, stats, ring (total minus the simulated bus).
    own_cpu_percent: f64,
    /// Measured just before and just after (mean), same priority and load: a
    /// thread that does nothing but wake once per conversion period (the least any
    /// sampler that reads every conversion without spinning pays on this host):
    /// compare with `own`.
    wake_floor_cpu_percent: f64,
    /// The same, plus one wire-time sleep per register read a fresh sample takes,
    /// like the simulated bus: the waits alone, with no sampler work; compare with
    /// `sampler_cpu_percent`.
    wait_floor_cpu_percent: f64,
    cpu_us_per_read: f64,
    errors: u64,
}

/// CPU (% of one core) of a thread that only sleeps: to the next period, once per
/// `period_ns`, then `reads` sleeps of `wire_ns` back to back (as the simulated bus
/// does), for `ms`, with the sampler's timer slack, priority and pinning.
fn wake_floor(
    period_ns: u64,
    reads: u32,
    wire_ns: u64,
    ms: u64,
    rt: Option<i32>,
    pin: Option<usize>,
) -> f64 {
    use edgewatt::power::timing::{
        pin_to_cpu, precise_sleep_until_ns, set_precise_timer_slack, set_realtime_priority,
        thread_cpu_ns,
    };
    std::thread::spawn(move || {
        set_precise_timer_slack();
        if let Some(p) = rt {
            let _ = set_realtime_priority(p);
        }
        if let Some(c) = pin {
            let _ = pin_to_cpu(c);
        }
        let (c0, t0) = (thread_cpu_ns(), monotonic_ns());
        let mut deadline = t0;
        while deadline < t0 + ms * 1_000_000 {
            deadline += period_ns;
            precise_sleep_until_ns(deadline);
            let mut bus_free = monotonic_ns();
            for _ in 0..reads {
                bus_free += wire_ns;
                precise_sleep_until_ns(bus_free);
            }
        }
        (thread_cpu_ns() - c0) as f64 * 100.0 / (monotonic_ns() - t0) as f64
    })
    .join()
    .unwrap_or(0.0)
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = arg(&args, "--seconds").unwrap_or(5);
    let load: String = arg(&args, "--load").unwrap_or_else(|| "busy".into());
    let pin_sampler: Option<usize> = arg(&args, "--pin-sampler");
    let rt: Option<i32> = arg(&args, "--rt");
    let json = args.iter().any(|a| a == "--json");
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    // What one timed sleep costs on this host (the sampler and the simulated bus
    // both sleep): CPU per wake-up and uncompensated lateness.
    let (wake_cpu_ns, wake_late_ns) = std::thread::spawn(|| {
        use edgewatt::power::timing::{set_precise_timer_slack, sleep_until_ns, thread_cpu_ns};
        set_precise_timer_slack();
        let (c0, mut late) = (thread_cpu_ns(), 0u64);
        for _ in 0..2000 {
            let d = monotonic_ns() + 120_000;
            sleep_until_ns(d);
            late += monotonic_ns() - d;
        }
        ((thread_cpu_ns() - c0) / 2000, late / 2000)
    })
    .join()
    .unwrap_or((0, 0));

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let loader = {
        let (stop, ops) = (stop.clone(), ops.clone());
        match load.as_str() {
            "none" => None,
            // LLAMA-BEGIN
            "llama" => {
                let dir: String = arg(&args, "--model-dir").unwrap_or_else(|| "models".into());
                let model: String =
                    arg(&args, "--model").unwrap_or_else(|| "SmolLM2-135M-Instruct.Q4_1".into());
                Some(std::thread::spawn(move || {
                    llama_load(stop, ops, dir, model)
                }))
            }
            // LLAMA-END
            _ => Some(std::thread::spawn(move || {
                busy_load(stop, ops, Some(cpus - 1))
            })),
        }
    };
    // Let the load (and a model load) get going first.
    std::thread::sleep(Duration::from_millis(if load == "llama" {
        3000
    } else {
        300
    }));

    let mut rows = Vec::new();
    let only: Option<String> = arg(&args, "--only");
    for sc in scenarios()
        .into_iter()
        .filter(|sc| only.as_ref().is_none_or(|o| sc.name.contains(o.as_str())))
    {
        let spec: SensorSpec = toml::from_str(&sc.spec)?;
        let opts = SamplerOptions {
            cpu_affinity: pin_sampler,
            realtime_priority: rt,
            ..Default::default()
        };
        // The chip's period from its settings (the sensor is built, not started);
        // then the floor, alone on its core like the sampler will be.
        let period_ns = edgewatt::power::factory::build_one(&spec, 0)?
            .sensor
            .period_ns()
            .max(1);
        let wire_ns = edgewatt::power::sim::transaction_ns(&[(false, 1), (true, 2)], sc.bus_khz);
        // Floors before and after the run (averaged): the host's wake-up cost drifts.
        let floors = || {
            (
                wake_floor(period_ns, 0, 0, 1000, rt, pin_sampler),
                wake_floor(period_ns, sc.reads, wire_ns, 1000, rt, pin_sampler),
            )
        };
        let floors_before = floors();
        let h = start_sampler(&[spec], opts, CancellationToken::new())?;
        // Skip the first 200 ms (initialisation, phase lock).
        std::thread::sleep(Duration::from_millis(200));
        let sim0 = h.sim_stats()[0].1;
        let cpu0: Vec<(u64, u64)> = h
            .stats()
            .threads
            .iter()
            .map(|t| (t.cpu_ns, t.wall_ns))
            .collect();
        let t0 = monotonic_ns();
        std::thread::sleep(Duration::from_secs(seconds));
        let t1 = monotonic_ns();
        let sim1 = h.sim_stats()[0].1;
        let stats = h.stats();
        let window = h.window(t0, t1);
        h.shutdown();
        let floors_after = floors();
        let floor_pct = (floors_before.0 + floors_after.0) / 2.0;
        let wait_floor_pct = (floors_before.1 + floors_after.1) / 2.0;
        let span_s = (t1 - t0) as f64 / 1e9;
        let (cpu1, wall1) = stats
            .threads
            .first()
            .map(|t| (t.cpu_ns, t.wall_ns))
            .unwrap_or((0, 1));
        let wall = (wall1 - cpu0[0].1).max(1) as f64;
        let cpu_pct = (cpu1 - cpu0[0].0) as f64 * 100.0 / wall;
        let bus_pct = (sim1.bus_cpu_ns - sim0.bus_cpu_ns) as f64 * 100.0 / wall;
        let chip_conversions = (sim1.conversions - sim0.conversions).max(1);
        for (i, rail) in h.rails().iter().enumerate() {
            let samples: Vec<_> = window.iter().filter(|s| usize::from(s.rail) == i).collect();
            // Ground truth from the simulator: data reads of an already-read conversion.
            let duplicates = sim1.duplicate_reads - sim0.duplicate_reads;
            let r = &stats.rails[i];
            let nominal = 1e9 / period_ns as f64;
            let unique = samples.len() as f64 / span_s;
            rows.push(Row {
                scenario: sc.name.into(),
                rail: rail.name.clone(),
                nominal_hz: nominal,
                measured_hz: r.measured_rate_hz,
                unique_per_s: unique,
                ratio_vs_nominal: unique / nominal,
                ratio_vs_chip_conversions: samples.len() as f64 / chip_conversions as f64,
                duplicates,
                conversions_missed: r.conversions_missed,
                empty_polls_per_s: r.duplicates_avoided as f64 / (span_s + 0.2),
                latency_p50_us: r.read_latency_p50_us,
                latency_p99_us: r.read_latency_p99_us,
                jitter_p99_us: r.interval_jitter_p99_us,
                sampler_cpu_percent: cpu_pct,
                bus_cpu_percent: bus_pct,
                own_cpu_percent: (cpu_pct - bus_pct).max(0.0),
                wake_floor_cpu_percent: floor_pct,
                wait_floor_cpu_percent: wait_floor_pct,
                cpu_us_per_read: (cpu1 - cpu0[0].0) as f64 / 1000.0 / samples.len().max(1) as f64,
                errors: r.errors_by_kind.values().sum(),
            });
        }
    }
    stop.store(true, Ordering::Relaxed);
    let load_ops = ops.load(Ordering::Relaxed);
    if let Some(l) = loader {
        let _ = l.join();
    }

    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "sampler_bench: {seconds} s per scenario, load = {load} ({load_ops} {} done), {cpus} CPUs, sampler pinned: {pin_sampler:?}, SCHED_FIFO: {rt:?}",
        if load == "llama" { "tokens" } else { "matmuls" }
    );
    println!(
        "host: a 120 µs timed sleep costs {:.1} µs CPU per wake-up and wakes {:.1} µs late uncompensated",
        wake_cpu_ns as f64 / 1000.0,
        wake_late_ns as f64 / 1000.0
    );
    println!(
        "{:<34} {:<15} {:>8} {:>8} {:>9} {:>6} {:>6} {:>4} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>4}",
        "scenario", "rail", "chip Hz", "meas Hz", "unique/s", "ratio", "r/conv", "dup", "missed", "empty/s", "lat p50", "lat p99", "jit p99", "cpu %", "floor%", "bus %", "own %", "floor%", "µs/read", "err"
    );
    for r in &rows {
        println!(
            "{:<34} {:<15} {:>8.1} {:>8.1} {:>9.1} {:>6.3} {:>6.3} {:>4} {:>6} {:>7.0} {:>7.0} {:>7.0} {:>7.0} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>7.1} {:>4}",
            r.scenario,
            r.rail,
            r.nominal_hz,
            r.measured_hz,
            r.unique_per_s,
            r.ratio_vs_nominal,
            r.ratio_vs_chip_conversions,
            r.duplicates,
            r.conversions_missed,
            r.empty_polls_per_s,
            r.latency_p50_us,
            r.latency_p99_us,
            r.jitter_p99_us,
            r.sampler_cpu_percent,
            r.wait_floor_cpu_percent,
            r.bus_cpu_percent,
            r.own_cpu_percent,
            r.wake_floor_cpu_percent,
            r.cpu_us_per_read,
            r.errors
        );
    }
    println!("(latency and jitter in µs; ratio = unique ÷ chip conversion rate; r/conv = unique ÷ conversions the simulator completed;");
    println!(" cpu % = the sampler thread's CPU, and beside it the floor: a thread that does nothing but the same waits (one");
    println!(" sleep per conversion period + one wire-time sleep per register read), measured before and after, same priority;");
    println!(" bus % = of cpu %, inside the simulated I2C transactions (the chip model and one timed wake per register read: on");
    println!(" hardware the I2C driver's blocking transfer instead); own % = cpu − bus, the sampler's own cost, and beside it");
    println!(" its floor: a thread doing nothing but wake once per conversion period)");
    Ok(())
}
