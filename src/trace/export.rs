//! Trace export: CSV (one row per sample, with its phase) and JSON (the whole trace).

use std::io::Write;

use super::phases::phase_windows;
use super::trace::Trace;

/// The CSV header.
pub const CSV_HEADER: &str = "t_ns,rail,bus_mv,current_ua,power_uw,phase";

/// Export errors.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write export: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot serialise trace: {0}")]
    Json(#[from] serde_json::Error),
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// Writes one row per sample: `t_ns` (read midpoint, CLOCK_MONOTONIC), the rail's
/// name, bus mV, µA, µW and the phase label of that instant (docs/energy.md).
pub fn write_csv<W: Write>(trace: &Trace, mut out: W) -> Result<(), ExportError> {
    let pw = phase_windows(&trace.markers);
    let names: Vec<String> = (0..trace.rails.len())
        .map(|i| csv_field(&trace.rails[i].name).into_owned())
        .collect();
    writeln!(out, "{CSV_HEADER}")?;
    for s in &trace.samples {
        let t = s.t_ns();
        let rail = names
            .get(usize::from(s.rail))
            .cloned()
            .unwrap_or_else(|| format!("rail{}", s.rail));
        writeln!(
            out,
            "{t},{rail},{},{},{},{}",
            s.bus_mv,
            s.current_ua,
            s.power_uw,
            pw.label_at(t).as_str()
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Writes the whole trace as pretty JSON.
pub fn write_json<W: Write>(trace: &Trace, mut out: W) -> Result<(), ExportError> {
    serde_json::to_writer_pretty(&mut out, trace)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ClockAnchor;
    use crate::infer::events::FinishReason;
    use crate::power::{RailInfo, Sample};
    use crate::trace::trace::{Marker, MarkerKind};

    #[test]
    fn csv_rows_carry_phase() {
        let mut t = Trace::new(
            "j",
            vec![RailInfo {
                name: "VDD,IN".into(),
                total: true,
                source: "sim".into(),
                simulated: true,
            }],
            ClockAnchor {
                monotonic_ns: 0,
                unix_ns: 0,
            },
        );
        t.samples = [5u64, 15, 25, 35]
            .iter()
            .map(|&ts| Sample {
                t_before_ns: ts,
                t_after_ns: ts,
                rail: 0,
                bus_mv: 5000,
                current_ua: 200,
                power_uw: 1000,
            })
            .collect();
        t.markers = vec![
            Marker {
                t_ns: 10,
                kind: MarkerKind::PrefillStart { prompt_tokens: 1 },
            },
            Marker {
                t_ns: 20,
                kind: MarkerKind::PrefillEnd,
            },
            Marker {
                t_ns: 30,
                kind: MarkerKind::Done {
                    finish_reason: FinishReason::Eog,
                },
            },
        ];
        let mut buf = Vec::new();
        write_csv(&t, &mut buf).expect("csv");
        let text = String::from_utf8(buf).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines[1], "5,\"VDD,IN\",5000,200,1000,idle");
        assert_eq!(lines[2], "15,\"VDD,IN\",5000,200,1000,prefill");
        assert_eq!(lines[3], "25,\"VDD,IN\",5000,200,1000,decode");
        assert_eq!(lines[4], "35,\"VDD,IN\",5000,200,1000,after");
        let mut json = Vec::new();
        write_json(&t, &mut json).expect("json");
        let back: Trace = serde_json::from_slice(&json).expect("parse");
        assert_eq!(back, t);
    }
}
