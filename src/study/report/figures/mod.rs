//! The study's figures as SVG (plotters): (1) decode t/s against J/token with each
//! device's Pareto front; (2) thread scaling; (3) memory against n_ctx, weights and
//! KV stacked, per model; (4) energy per phase per configuration; (5) J/token
//! against perplexity when quality results exist. Units on every axis, a legend,
//! and SIMULATED in the title when any input was.
//!
//! - `scatter` — decode t/s vs J/token and J/token vs perplexity, with Pareto fronts
//! - `lines`   — thread scaling
//! - `stacked` — memory vs n_ctx, energy per phase

mod lines;
mod scatter;
mod stacked;

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{ConfigReport, Report};
use crate::trace::phases::PhaseLabel;
use crate::trace::plot::band_color;
use lines::threads;
use scatter::{pareto, quality};
use stacked::{energy_phases, memory};

/// One figure's size, px.
const SIZE: (u32, u32) = (1100, 620);
/// Series colours (Okabe–Ito, colour-blind safe).
const COLORS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// Figure errors.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    #[error("cannot draw figure '{name}': {reason}")]
    Draw { name: &'static str, reason: String },
}

/// One rendered figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File stem (`pareto`, `threads`, `memory`, `energy_phases`, `quality`).
    pub name: &'static str,
    pub title: String,
    /// Names of the series drawn (as in the legend).
    pub series: Vec<String>,
    pub svg: String,
}

type DrawResult = Result<Vec<String>, String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Every figure the report's data supports (thread scaling needs two thread
/// counts; quality needs perplexity results).
pub fn all(report: &Report) -> Result<Vec<Figure>, FigureError> {
    type Draw = fn(&Report, &DrawingArea<SVGBackend, Shift>, &str) -> DrawResult;
    let sim = if report.study.simulated {
        " · SIMULATED"
    } else {
        ""
    };
    let wanted: [(&'static str, String, bool, Draw); 5] = [
        (
            "pareto",
            format!("Decode speed against energy per token{sim}"),
            has(report, "decode_tps") && has(report, "j_per_token_decode"),
            pareto,
        ),
        (
            "threads",
            format!("Thread scaling{sim}"),
            thread_counts(report) >= 2,
            threads,
        ),
        (
            "memory",
            format!("Memory against context size: weights + KV cache{sim}"),
            report
                .configurations
                .iter()
                .any(|c| c.weights_bytes.is_some()),
            memory,
        ),
        (
            "energy_phases",
            format!("Energy per phase per configuration{sim}"),
            has(report, "energy_decode_j"),
            energy_phases,
        ),
        (
            "quality",
            format!("Energy per token against perplexity{sim}"),
            report.configurations.iter().any(|c| {
                super::table::ppl_of(c).is_some() && mean(c, "j_per_token_decode").is_some()
            }),
            quality,
        ),
    ];
    let mut out = Vec::new();
    for (name, title, ok, draw) in wanted {
        if !ok {
            continue;
        }
        let mut svg = String::new();
        let series = {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            let drawn = root
                .fill(&WHITE)
                .map_err(err)
                .and_then(|_| draw(report, &root, &title))
                .and_then(|s| root.present().map_err(err).map(|_| s));
            drawn.map_err(|reason| FigureError::Draw { name, reason })?
        };
        out.push(Figure {
            name,
            title,
            series,
            svg,
        });
    }
    Ok(out)
}

fn has(report: &Report, key: &str) -> bool {
    report
        .configurations
        .iter()
        .any(|c| c.metrics.contains_key(key))
}

fn mean(c: &ConfigReport, key: &str) -> Option<f64> {
    c.metrics.get(key).map(|s| s.mean)
}

fn thread_counts(report: &Report) -> usize {
    let mut t: Vec<u32> = report
        .configurations
        .iter()
        .filter_map(|c| c.config.threads)
        .collect();
    t.sort();
    t.dedup();
    t.len()
}

/// Short labels for configurations: device and model, plus whichever other axes
/// vary within the study.
pub fn short_labels(report: &Report) -> Vec<String> {
    let cs = &report.configurations;
    let varies = |f: &dyn Fn(&ConfigReport) -> String| {
        cs.iter()
            .map(f)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1
    };
    type Part = (&'static str, fn(&ConfigReport) -> String);
    let parts: [Part; 8] = [
        ("t", |c| {
            c.config.threads.map_or("def".into(), |t| t.to_string())
        }),
        ("p", |c| c.config.prompt_tokens.to_string()),
        ("g", |c| c.config.gen_tokens.to_string()),
        ("d", |c| c.config.depth.to_string()),
        ("ctx", |c| c.config.n_ctx.to_string()),
        ("b", |c| {
            c.config.batch.map_or("def".into(), |b| b.to_string())
        }),
        ("ngl", |c| c.config.n_gpu_layers.to_string()),
        ("pm ", |c| c.config.power_mode.clone().unwrap_or_default()),
    ];
    let used: Vec<_> = parts.iter().filter(|(_, f)| varies(f)).collect();
    cs.iter()
        .map(|c| {
            let mut s = format!("{} · {}", c.config.device, c.config.model);
            for (p, f) in &used {
                s.push_str(&format!(" {p}{}", f(c)));
            }
            s
        })
        .collect()
}

/// Pareto front of (cost x, benefit y) points: lowest x for each higher y, sorted
/// by x. `minimize_y` flips y to a cost too.
pub fn pareto_front(points: &[(f64, f64)], minimize_y: bool) -> Vec<(f64, f64)> {
    let mut p: Vec<(f64, f64)> = points.to_vec();
    p.sort_by(|a, b| {
        a.0.total_cmp(&b.0).then(if minimize_y {
            a.1.total_cmp(&b.1)
        } else {
            b.1.total_cmp(&a.1)
        })
    });
    let mut front: Vec<(f64, f64)> = Vec::new();
    for q in p {
        let better = front
            .last()
            .is_none_or(|l| if minimize_y { q.1 < l.1 } else { q.1 > l.1 });
        if better {
            front.push(q);
        }
    }
    front
}

fn range(vals: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.05).max(1e-9);
    (if from_zero { lo } else { lo - pad }, hi + pad)
}

fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    pos: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(pos)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(err)
}

fn devices(report: &Report) -> Vec<String> {
    report.study.boards.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_keeps_non_dominated_points() {
        // (J/token, t/s): (0.2, 30) is dominated by (0.1, 40).
        let pts = [
            (0.1, 40.0),
            (0.2, 30.0),
            (0.3, 60.0),
            (0.05, 10.0),
            (0.3, 50.0),
        ];
        assert_eq!(
            pareto_front(&pts, false),
            vec![(0.05, 10.0), (0.1, 40.0), (0.3, 60.0)]
        );
        // Both minimised (perplexity, J/token).
        let q = [(10.0, 0.3), (12.0, 0.1), (11.0, 0.35), (9.0, 0.5)];
        assert_eq!(
            pareto_front(&q, true),
            vec![(9.0, 0.5), (10.0, 0.3), (12.0, 0.1)]
        );
    }
}
