//! The study's figures as SVG (plotters): (1) decode t/s against J/token with each
//! device's Pareto front; (2) thread scaling; (3) memory against n_ctx, weights and
//! KV stacked, per model; (4) energy per phase per configuration; (5) J/token
//! against perplexity when quality results exist. Units on every axis, a legend,
//! and SIMULATED in the title when any input was.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{ConfigReport, Report};
use crate::trace::phases::PhaseLabel;
use crate::trace::plot::band_color;

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

fn pareto(report: &Report, root: &DrawingArea<SVGBackend, Shift>, title: &str) -> DrawResult {
    let pts: Vec<(&ConfigReport, f64, f64)> = report
        .configurations
        .iter()
        .filter_map(|c| Some((c, mean(c, "j_per_token_decode")?, mean(c, "decode_tps")?)))
        .collect();
    let (x0, x1) = range(pts.iter().map(|p| p.1), true);
    let (y0, y1) = range(
        pts.iter().flat_map(|p| {
            let s = &p.0.metrics["decode_tps"];
            [p.2, s.ci95_high.unwrap_or(p.2), s.ci95_low.unwrap_or(p.2)]
        }),
        true,
    );
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("energy per decoded token (J/token)")
        .y_desc("decode speed (tokens/s)")
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    let mut series = Vec::new();
    for (i, dev) in devices(report).iter().enumerate() {
        let col = color(i);
        let mine: Vec<&(&ConfigReport, f64, f64)> =
            pts.iter().filter(|p| &p.0.config.device == dev).collect();
        if mine.is_empty() {
            continue;
        }
        // 95 % CI of decode t/s as a vertical bar through each point.
        chart
            .draw_series(mine.iter().filter_map(|p| {
                let s = &p.0.metrics["decode_tps"];
                Some(PathElement::new(
                    vec![(p.1, s.ci95_low?), (p.1, s.ci95_high?)],
                    col.mix(0.6).stroke_width(1),
                ))
            }))
            .map_err(err)?;
        chart
            .draw_series(
                mine.iter()
                    .map(|p| Circle::new((p.1, p.2), 5, col.filled())),
            )
            .map_err(err)?
            .label(dev.clone())
            .legend(move |(x, y)| Circle::new((x + 9, y), 5, col.filled()));
        series.push(dev.clone());
        let front = pareto_front(&mine.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>(), false);
        let name = format!("{dev} Pareto front");
        chart
            .draw_series(LineSeries::new(front, col.stroke_width(2)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2)));
        series.push(name);
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(series)
}

/// Configurations grouped into thread-scaling lines: every axis but `threads` equal.
fn thread_lines(report: &Report) -> BTreeMap<String, Vec<&ConfigReport>> {
    let labels = short_labels(report);
    let mut lines: BTreeMap<String, Vec<&ConfigReport>> = BTreeMap::new();
    for (c, label) in report.configurations.iter().zip(&labels) {
        if c.config.threads.is_none() {
            continue;
        }
        // The label without its thread part names the line.
        let key: Vec<&str> = label
            .split(' ')
            .filter(|w| !(w.starts_with('t') && w[1..].parse::<u32>().is_ok()))
            .collect();
        lines.entry(key.join(" ")).or_default().push(c);
    }
    for v in lines.values_mut() {
        v.sort_by_key(|c| c.config.threads);
    }
    lines
}

fn threads(report: &Report, root: &DrawingArea<SVGBackend, Shift>, title: &str) -> DrawResult {
    let lines = thread_lines(report);
    let (title_area, body) = root.split_vertically(40);
    title_area.titled(title, ("sans-serif", 22)).map_err(err)?;
    let panels = body.split_evenly((1, 2));
    let max_t = report
        .configurations
        .iter()
        .filter_map(|c| c.config.threads)
        .max()
        .unwrap_or(1) as f64;
    let mut series = Vec::new();
    for (pi, (key, desc)) in [
        ("decode_tps", "decode speed (tokens/s)"),
        ("j_per_token_decode", "energy per decoded token (J/token)"),
    ]
    .into_iter()
    .enumerate()
    {
        let (y0, y1) = range(lines.values().flatten().filter_map(|c| mean(c, key)), true);
        let mut chart = ChartBuilder::on(&panels[pi])
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(66)
            .build_cartesian_2d(0.5..max_t + 0.5, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("threads")
            .y_desc(desc)
            .x_labels(max_t as usize + 1)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(err)?;
        for (i, (name, cs)) in lines.iter().enumerate() {
            let col = color(i);
            let pts: Vec<(f64, f64)> = cs
                .iter()
                .filter_map(|c| Some((c.config.threads? as f64, mean(c, key)?)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 4, col.filled())))
                .map_err(err)?;
            if pi == 0 {
                series.push(name.clone());
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    }
    Ok(series)
}

fn memory(report: &Report, root: &DrawingArea<SVGBackend, Shift>, title: &str) -> DrawResult {
    // model → n_ctx → (weights, kv) in MiB (the first configuration at that n_ctx).
    let mut by_model: BTreeMap<&str, BTreeMap<u32, (f64, f64)>> = BTreeMap::new();
    for c in &report.configurations {
        if let (Some(w), Some(k)) = (c.weights_bytes, c.kv_bytes) {
            by_model
                .entry(c.config.model.as_str())
                .or_default()
                .entry(c.config.n_ctx)
                .or_insert((w as f64 / 1048576.0, k as f64 / 1048576.0));
        }
    }
    let (title_area, body) = root.split_vertically(40);
    title_area.titled(title, ("sans-serif", 22)).map_err(err)?;
    let panels = body.split_evenly((1, by_model.len().max(1)));
    let (wc, kc) = (color(0), color(1));
    for (pi, (model, ctxs)) in by_model.iter().enumerate() {
        let n = ctxs.len() as i32;
        let top = ctxs.values().map(|(w, k)| w + k).fold(0.0, f64::max) * 1.2;
        let names: Vec<String> = ctxs.keys().map(|c| c.to_string()).collect();
        let mut chart = ChartBuilder::on(&panels[pi])
            .caption(*model, ("sans-serif", 15))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(66)
            .build_cartesian_2d((0..n).into_segmented(), 0.0..top.max(1.0))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("context size n_ctx (tokens)")
            .y_desc("memory (MiB)")
            .x_labels(names.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(err)?;
        let bars: Vec<(i32, f64, f64)> = ctxs
            .values()
            .enumerate()
            .map(|(i, (w, k))| (i as i32, *w, *k))
            .collect();
        let bar = |i: i32, y0: f64, y1: f64, c: RGBColor| {
            let mut r = Rectangle::new(
                [
                    (SegmentValue::Exact(i), y0),
                    (SegmentValue::Exact(i + 1), y1),
                ],
                c.filled(),
            );
            r.set_margin(0, 0, 10, 10);
            r
        };
        chart
            .draw_series(bars.iter().map(|(i, w, _)| bar(*i, 0.0, *w, wc)))
            .map_err(err)?
            .label("weights")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], wc.filled()));
        chart
            .draw_series(bars.iter().map(|(i, w, k)| bar(*i, *w, w + k, kc)))
            .map_err(err)?
            .label("KV cache")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], kc.filled()));
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    }
    Ok(vec!["weights".into(), "KV cache".into()])
}

fn energy_phases(
    report: &Report,
    root: &DrawingArea<SVGBackend, Shift>,
    title: &str,
) -> DrawResult {
    let labels = short_labels(report);
    let rows: Vec<(String, [f64; 3])> = report
        .configurations
        .iter()
        .zip(labels)
        .filter(|(c, _)| c.metrics.contains_key("energy_decode_j"))
        .map(|(c, l)| {
            let m = |k| mean(c, k).unwrap_or(0.0);
            (
                l,
                [
                    m("energy_load_j"),
                    m("energy_prefill_j"),
                    m("energy_decode_j"),
                ],
            )
        })
        .collect();
    let n = rows.len() as i32;
    let top = rows
        .iter()
        .map(|(_, e)| e.iter().sum::<f64>())
        .fold(0.0, f64::max)
        * 1.15;
    let names: Vec<String> = rows.iter().map(|(l, _)| l.clone()).collect();
    let label_w = names.iter().map(|s| s.chars().count()).max().unwrap_or(10) as u32 * 7 + 20;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(label_w.clamp(80, 520))
        .build_cartesian_2d(0.0..top.max(1e-6), (0..n).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("energy per job, mean (J)")
        .y_labels(names.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    let phases = [
        ("load", PhaseLabel::Load),
        ("prefill", PhaseLabel::Prefill),
        ("decode", PhaseLabel::Decode),
    ];
    for (pi, (name, label)) in phases.into_iter().enumerate() {
        let col = band_color(label);
        chart
            .draw_series(rows.iter().enumerate().map(|(i, (_, e))| {
                let x0: f64 = e[..pi].iter().sum();
                let mut r = Rectangle::new(
                    [
                        (x0, SegmentValue::Exact(i as i32)),
                        (x0 + e[pi], SegmentValue::Exact(i as i32 + 1)),
                    ],
                    col.filled(),
                );
                r.set_margin(4, 4, 0, 0);
                r
            }))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], col.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    Ok(phases.iter().map(|p| p.0.to_string()).collect())
}

fn quality(report: &Report, root: &DrawingArea<SVGBackend, Shift>, title: &str) -> DrawResult {
    // One point per model × quant: the mean over its configurations.
    let mut by: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    for c in &report.configurations {
        if let (Some(p), Some(j)) = (super::table::ppl_of(c), mean(c, "j_per_token_decode")) {
            let key = format!(
                "{} {}{}",
                c.config.model,
                c.config.quant.clone().unwrap_or_default(),
                if c.requantized_from.is_some() {
                    " (requantized)"
                } else {
                    ""
                }
            );
            let e = by.entry(key).or_insert((0.0, 0.0, 0));
            *e = (e.0 + p, e.1 + j, e.2 + 1);
        }
    }
    let pts: Vec<(String, f64, f64)> = by
        .into_iter()
        .map(|(k, (p, j, n))| (k, p / n as f64, j / n as f64))
        .collect();
    let (x0, x1) = range(pts.iter().map(|p| p.1), false);
    let (y0, y1) = range(pts.iter().map(|p| p.2), true);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("perplexity (lower is better)")
        .y_desc("energy per decoded token (J/token)")
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    let mut series = Vec::new();
    for (i, (name, p, j)) in pts.iter().enumerate() {
        let col = color(i);
        chart
            .draw_series([Circle::new((*p, *j), 6, col.filled())])
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| Circle::new((x + 9, y), 5, col.filled()));
        series.push(name.clone());
    }
    let front = pareto_front(&pts.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>(), true);
    chart
        .draw_series(LineSeries::new(front, BLACK.stroke_width(2)))
        .map_err(err)?
        .label("Pareto front")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(2)));
    series.push("Pareto front".into());
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(series)
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
