//! Energy traces: samples + engine markers on one clock, energy math, storage, export.
//!
//! # Layout
//! - [`trace`]    — the `Trace` of one job (samples, markers, clock anchor, gaps, thermal)
//! - [`capture`]  — the only link to the live sampler: copy a job's window into a `Trace`
//! - [`phases`]   — markers → load / prefill / decode windows (warm-ups excluded)
//! - [`energy`]   — pure integration math (trapezoids, gaps, means)
//! - [`summary`]  — `summarize`: the `EnergySummary` of a job (docs/energy.md)
//! - [`thermal`]  — temperature / frequency / throttle recorder (fake-sysfs testable)
//! - [`store`]    — SQLite (WAL): jobs, traces, retention
//! - [`export`]   — CSV and JSON export of a trace
//! - [`plot`]     — SVG power plot with phase bands
//! - [`report`]   — one row per stored job (md / csv / json)

pub mod capture;
pub mod energy;
pub mod export;
pub mod phases;
pub mod plot;
pub mod report;
pub mod store;
pub mod summary;
pub mod thermal;
// The brief names the file `trace.rs`; its type is re-exported below.
#[allow(clippy::module_inception)]
pub mod trace;

pub use capture::{capture, JobCapture};
pub use energy::{summarize, EnergyOptions, EnergySummary, DEFINITIONS};
pub use phases::{phase_windows, PhaseLabel, PhaseWindows, Window};
pub use store::{JobRow, Store, StoreError};
pub use thermal::{ThermalConfig, ThermalRecorder, ThermalSeries, ThermalSummary};
pub use trace::{Gap, Marker, MarkerKind, MarkerLog, Trace};
