//! Studies: a plan of sweeps across boards, models and settings, run unattended
//! (resumable), with statistics, cost, tables and figures (docs/study.md).
//!
//! # Layout
//! - [`config`] — one configuration (a point of the plan's axes), its stable hash, and a
//!   stored run (the protocol's result JSON or its error, keyed by configuration and repetition)
//! - [`db`] — the study database (SQLite): plan and sha256, boards' status at start, runs

pub mod config;
pub mod db;

pub use config::{ConfigHash, Configuration, StoredRun};
pub use db::{RunCounts, StudyDb, StudyDbError};
