//! Prometheus metrics for fleet dashboards (issue 14): `GET /metrics` on
//! `[metrics] listen`, in the Prometheus text format, built with the
//! `prometheus-client` crate. docs/service.md lists the series and example queries.
//!
//! - [`registry`] — the families (jobs, durations, rates, J/token, rail energy, build
//!   info) and [`Metrics`], the handle the daemon updates
//! - [`collect`]  — figures read at scrape time (queue, broker, model cache, sampler)
//! - [`energy`]   — rail energy since start, integrated from the sampler's rings
//! - [`http`]     — the minimal HTTP/1.1 server

pub mod collect;
pub mod energy;
pub mod http;
pub mod registry;

pub use collect::{RailSnapshot, Snapshot, SnapshotSource};
pub use registry::{BuildLabels, JobFigures, Metrics, CONTENT_TYPE};
