//! Studies: a plan of sweeps across boards, models and settings, run unattended
//! (resumable), with statistics, cost, tables and figures (docs/study.md).
//!
//! # Layout
//! - [`config`] — one configuration (a point of the plan's axes), its stable hash, and a
//!   stored run (the protocol's result JSON or its error, keyed by configuration and repetition)

pub mod config;

pub use config::{ConfigHash, Configuration, StoredRun};
