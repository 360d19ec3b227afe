//! Studies: a plan of sweeps across boards, models and settings, run unattended
//! (resumable), with statistics, cost, tables and figures (docs/study.md).
//!
//! # Layout
//! - [`config`] — one configuration (a point of the plan's axes), its stable hash, and a
//!   stored run (the protocol's result JSON or its error, keyed by configuration and repetition)
//! - [`db`] — the study database (SQLite): plan and sha256, boards' status at start, runs
//! - [`stats`] — per-metric summaries (Welford, Student-t CI, median, CV, MAD outliers),
//!   the slow-first-run check and Welch's t-test
//! - [`cost`] — the plan's `[cost]`: cost per million tokens (energy; board amortized), EDP
//! - [`report`] — the study report from stored runs: table (md), csv, json, figures, html, compare
//! - [`plan`] — the TOML plan: parsing and validation (every error names key and value)
//! - [`quality`] — the plan's `[quality]`: one scoring run per board × model, its job
//! - [`expand`] — the plan's configurations: axes' product, includes, excludes
//! - [`schedule`] — adaptive repetitions (Student-t CI) and the run order
//! - [`job`] — one run as a protocol job: deterministic id, payload, result figures
//! - [`run`] — `study run`: boards in parallel, one run at a time each, resumable
//! - [`local`] — this machine as a board (`--local`: the engine in-process)
//! - [`remote`] — a daemon over MQTT as a board (the shared job client)

pub mod config;
pub mod cost;
pub mod db;
pub mod expand;
pub mod job;
pub mod local;
pub mod plan;
pub mod quality;
pub mod remote;
pub mod report;
pub mod run;
pub mod schedule;
pub mod stats;

pub use config::{ConfigHash, Configuration, StoredRun};
pub use db::{RunCounts, StudyDb, StudyDbError};
