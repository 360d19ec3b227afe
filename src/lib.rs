//! edgewatt: run llama.cpp inference jobs on edge boards and measure what they cost
//! in energy, on one monotonic clock.
//!
//! # Layout
//! Data flows one way: a job comes in (MQTT or CLI) → the engine runs it and emits
//! events → the sampler's samples and those events meet in a trace → energy is
//! computed → results are stored and published.
//!
//! - [`clock`]   — CLOCK_MONOTONIC ns and the (monotonic, unix) anchor pair
//! - [`config`]  — layered configuration (defaults → TOML → env) and validation
//! - [`infer`]   — the llama.cpp engine thread, model registry/cache/admission, events, metrics
//! - [`power`]   — INA219/INA3221 drivers, chip simulators, hwmon rails, the sampler
//! - [`powermode`] — the board's power mode: recorded per job, applied on request, restored
//! - [`trace`]   — traces, energy math, thermal co-recording, SQLite store, export, plots
//! - [`jobs`]    — the MQTT protocol, job journal/outbox, broker session
//! - [`daemon`]  — `run(config, shutdown)`: wires everything, owns cancellation; sd_notify
//! - [`metrics`] — Prometheus metrics: registry, scrape-time collector, `/metrics` server
//! - [`quality`] — perplexity and KL divergence on a text (llama-perplexity's method)
//! - [`study`]   — study plans, runs across boards, statistics, reports
//! - [`cli`]     — one module per subcommand

pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod infer;
pub mod jobs;
pub mod metrics;
pub mod power;
pub mod powermode;
pub mod quality;
pub mod study;
pub mod trace;
