//! The report as JSON: the machine contract (docs/study-report.md). It is the
//! serde form of [`Report`]; this module only fixes its spelling.

use super::Report;

/// The report as pretty JSON (non-finite numbers never occur: metrics skip them).
pub fn to_json(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|_| "{}".into())
}
