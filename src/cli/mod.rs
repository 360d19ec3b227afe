//! The command line: one module per subcommand; this file holds the top-level parser
//! and dispatch. `main` only parses, sets up logging and maps errors to exit codes.
//!
//! - `generate` — one local run (optionally traced)      - `models`  — the model directory
//! - `bench`    — pp/tg figures comparable to llama-bench - `info`    — build facts
//! - `sensors`  — probe sensors, live readings, bus scan  - `trace`   — export/plot a stored trace
//! - `report`   — one row per stored job                  - `config`  — check the configuration
//! - `daemon`   — the MQTT service                        - `submit`  — send jobs to a daemon
//! - `quantize` — new quantizations of a model            - `quality` — perplexity / KL divergence
//! - `study`    — plan and run a sweep across boards

pub mod bench;
pub mod config_cmd;
pub mod daemon_cmd;
pub mod generate;
pub mod generate_traced;
pub mod info;
pub mod models;
pub mod quality;
pub mod quantize;
pub mod report;
pub mod result_table;
pub mod sensors;
pub mod study;
pub mod study_report;
pub mod submit;
pub mod trace;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::infer::EngineConfig;

/// edgewatt: run llama.cpp jobs on edge boards and measure their energy.
#[derive(Debug, Parser)]
#[command(name = "edgewatt", version, long_version = info::long_version(), about)]
pub struct Cli {
    /// Configuration file (default: /etc/edgewatt/edgewatt.toml when it exists).
    #[arg(long, short, global = true, env = "EDGEWATT_CONFIG")]
    pub config: Option<PathBuf>,
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once per process; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run one generation locally and print its metrics.
    Generate(generate::GenerateArgs),
    /// List the models in the model directory.
    Models {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure prompt processing and generation speed (comparable to llama-bench).
    Bench(bench::BenchArgs),
    /// Show what this binary was built for (target CPU, ggml features).
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Probe the configured power sensors and show live readings; scan an I2C bus.
    Sensors(sensors::SensorsArgs),
    /// Export or plot a stored energy trace.
    Trace(trace::TraceArgs),
    /// One row per stored job: speed, memory and energy, like the study's tables.
    Report(report::ReportArgs),
    /// Validate and print the effective configuration.
    Config(config_cmd::ConfigArgs),
    /// Run the MQTT job daemon (the systemd service).
    Daemon(daemon_cmd::DaemonArgs),
    /// Submit jobs to a daemon over MQTT and show their states, tokens and results.
    Submit(submit::SubmitArgs),
    /// Write a model again in other quantizations (llama.cpp's quantizer), beside it.
    Quantize(quantize::QuantizeArgs),
    /// Perplexity of a model on a text, or its KL divergence from a reference model.
    Quality(quality::QualityArgs),
    /// Studies: plan a sweep, run it across boards (resumable), report it (docs/study.md).
    Study(study::StudyArgs),
}

/// How a failure maps to the process exit code.
pub enum Exit {
    /// Bad configuration or arguments (EX_CONFIG).
    Config = 78,
    /// Anything else.
    Failure = 1,
}

/// Loads the configuration named on the command line (or the default layers).
pub fn load_config(path: Option<&std::path::Path>) -> Result<Config, crate::config::ConfigError> {
    crate::config::load(path)
}

/// The engine settings from the configuration.
pub fn engine_config(cfg: &Config) -> EngineConfig {
    EngineConfig {
        model_dir: cfg.models.dir.clone(),
        memory_budget_bytes: cfg.models.memory_budget_bytes(),
        default_keep_alive_s: cfg.models.keep_alive_s,
        load_progress: true,
        llama_perf: false,
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let path = cli.config.as_deref();
    match cli.command {
        Command::Info { json } => info::run(json),
        Command::Models { json } => {
            let cfg = load_config(path)?;
            models::run(&cfg.models.dir, json)
        }
        Command::Generate(args) => {
            let cfg = load_config(path)?;
            if args.trace {
                let result = generate_traced::run(&args, &cfg)?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&result)?);
                } else {
                    eprint!("{}", submit::result_table(&result));
                    eprintln!(
                        "trace stored: edgewatt trace plot {} -o trace.svg",
                        result["id"].as_str().unwrap_or("?")
                    );
                }
                return Ok(());
            }
            let report = generate::run(&args, engine_config(&cfg), &cfg.inference)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                use std::io::Write;
                let _ = std::io::stdout().flush();
                eprint!("{}", generate::metrics_table(&report));
            }
            Ok(())
        }
        Command::Sensors(args) => {
            let cfg = load_config(path)?;
            sensors::run(&args, &cfg.power.sensors)
        }
        Command::Trace(args) => {
            let cfg = load_config(path)?;
            trace::run(args, &cfg.store.path)
        }
        Command::Report(args) => {
            let cfg = load_config(path)?;
            report::run(args, &cfg.store.path)
        }
        Command::Config(args) => config_cmd::run(&args, path),
        Command::Daemon(args) => {
            let cfg = load_config(path)?;
            daemon_cmd::run(&args, cfg, path)
        }
        Command::Submit(args) => {
            let cfg = load_config(path)?;
            submit::run(&args, &cfg)
        }
        Command::Quality(args) => {
            let cfg = load_config(path)?;
            let result = quality::run(&args, &cfg)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                eprint!("{}", quality::table(&result));
            }
            Ok(())
        }
        Command::Quantize(args) => {
            let cfg = load_config(path)?;
            quantize::run(&args, &cfg.models.dir)
        }
        Command::Study(args) => {
            let cfg = load_config(path)?;
            study::run(args, &cfg)
        }
        Command::Bench(args) => {
            let cfg = load_config(path)?;
            let mut ec = engine_config(&cfg);
            ec.load_progress = false;
            bench::run(&args, ec)
        }
    }
}
