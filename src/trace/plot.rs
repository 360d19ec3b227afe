//! SVG plot of a trace: power per rail over time (seconds from the job's first
//! marker), shaded bands for load / prefill / decode (and warm-ups), token ticks,
//! each rail's idle baseline as a dashed line, a legend, and a title that says
//! SIMULATED when it is.

use plotters::prelude::*;

use super::energy::{rail_points, EnergySummary};
use super::phases::{phase_windows, PhaseLabel, Window};
use super::trace::{MarkerKind, Trace};

/// Plot size, px.
const SIZE: (u32, u32) = (1280, 640);
/// Most points drawn per rail; longer series are reduced to min/max per bucket.
const MAX_POINTS: usize = 4000;
/// Rail line colours (Okabe–Ito, colour-blind safe).
const RAIL_COLORS: [RGBColor; 6] = [
    RGBColor(0, 0, 0),
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(204, 121, 167),
    RGBColor(0, 158, 115),
    RGBColor(86, 180, 233),
];
/// Band opacity.
const BAND_ALPHA: f64 = 0.18;

/// The band colour of a phase.
pub fn band_color(label: PhaseLabel) -> RGBColor {
    match label {
        PhaseLabel::Load => RGBColor(230, 159, 0),
        PhaseLabel::Prefill => RGBColor(86, 180, 233),
        PhaseLabel::Decode => RGBColor(0, 158, 115),
        _ => RGBColor(150, 150, 150),
    }
}

/// Plot errors.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("trace of job '{0}' has no samples to plot")]
    Empty(String),
    #[error("cannot draw plot: {0}")]
    Draw(String),
}

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// Reduces `(x, y)` points to at most ~`max` by keeping each bucket's min and max
/// in time order, so peaks survive.
pub fn decimate(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max < 4 {
        return points.to_vec();
    }
    let per = points.len().div_ceil(max / 2);
    let mut out = Vec::with_capacity(max + 2);
    for chunk in points.chunks(per) {
        let lo = chunk
            .iter()
            .enumerate()
            .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1));
        let hi = chunk
            .iter()
            .enumerate()
            .max_by(|a, b| a.1 .1.total_cmp(&b.1 .1));
        if let (Some((il, l)), Some((ih, h))) = (lo, hi) {
            if il == ih {
                out.push(*l);
            } else if il < ih {
                out.extend([*l, *h]);
            } else {
                out.extend([*h, *l]);
            }
        }
    }
    out
}

/// Renders the plot as an SVG document. `summary` supplies the idle baselines
/// (its `rails[i].idle_w`); pass `None` to omit them.
pub fn render_svg(trace: &Trace, summary: Option<&EnergySummary>) -> Result<String, PlotError> {
    if trace.samples.is_empty() {
        return Err(PlotError::Empty(trace.job_id.clone()));
    }
    let pw = phase_windows(&trace.markers);
    let first_sample = trace.samples.iter().map(|s| s.t_ns()).min().unwrap_or(0);
    let last_sample = trace.samples.iter().map(|s| s.t_ns()).max().unwrap_or(0);
    let origin_ns = pw.job.map_or(first_sample, |j| j.start_ns);
    let secs = |t_ns: u64| (t_ns as i128 - origin_ns as i128) as f64 * 1e-9;
    let x0 = secs(first_sample.min(origin_ns));
    let mut x1 = secs(last_sample.max(pw.job.map_or(0, |j| j.end_ns)));
    if x1 <= x0 {
        x1 = x0 + 1e-3;
    }

    let series: Vec<Vec<(f64, f64)>> = (0..trace.rails.len().max(1))
        .map(|r| {
            let pts: Vec<(f64, f64)> = rail_points(&trace.samples, u16::try_from(r).unwrap_or(0))
                .into_iter()
                .map(|(t, uw)| (secs(t), uw as f64 * 1e-6))
                .collect();
            decimate(&pts, MAX_POINTS)
        })
        .collect();
    let y_max = series
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.15;
    let y_min = series.iter().flatten().map(|p| p.1).fold(0.0f64, f64::min);

    let mut title = match &trace.model {
        Some(m) => format!("{m} · job {}", trace.job_id),
        None => format!("job {}", trace.job_id),
    };
    if trace.simulated {
        title.push_str(" · SIMULATED");
    }

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y_min..y_max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("time since job start (s)")
            .y_desc("power (W)")
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(draw_err)?;

        // Phase bands, one per window, labelled at the top.
        let bands: Vec<(PhaseLabel, Window)> = [
            (PhaseLabel::Load, &pw.load),
            (PhaseLabel::Prefill, &pw.prefill),
            (PhaseLabel::Decode, &pw.decode),
            (PhaseLabel::Warmup, &pw.warmup),
        ]
        .into_iter()
        .flat_map(|(l, ws)| ws.iter().map(move |w| (l, *w)))
        .collect();
        chart
            .draw_series(bands.iter().map(|(l, w)| {
                Rectangle::new(
                    [(secs(w.start_ns), y_max), (secs(w.end_ns), y_min)],
                    band_color(*l).mix(BAND_ALPHA).filled(),
                )
            }))
            .map_err(draw_err)?;
        chart
            .draw_series(bands.iter().map(|(l, w)| {
                Text::new(
                    l.as_str(),
                    (secs(w.start_ns), y_max * 0.985),
                    ("sans-serif", 13)
                        .into_font()
                        .color(&band_color(*l).mix(0.9)),
                )
            }))
            .map_err(draw_err)?;

        // Token ticks along the bottom.
        let tick_h = (y_max - y_min) * 0.03;
        chart
            .draw_series(
                trace
                    .markers
                    .iter()
                    .filter(|m| matches!(m.kind, MarkerKind::Token { .. }))
                    .map(|m| {
                        let x = secs(m.t_ns);
                        PathElement::new(vec![(x, y_min), (x, y_min + tick_h)], BLACK.mix(0.5))
                    }),
            )
            .map_err(draw_err)?
            .label("token")
            .legend(|(x, y)| {
                PathElement::new(vec![(x + 8, y - 5), (x + 8, y + 5)], BLACK.mix(0.5))
            });

        for (i, pts) in series.iter().enumerate() {
            if pts.is_empty() {
                continue;
            }
            let color = RAIL_COLORS[i % RAIL_COLORS.len()];
            let name = trace.rail_name(u16::try_from(i).unwrap_or(u16::MAX));
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(draw_err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            let idle = summary.and_then(|s| s.rails.get(i)).and_then(|r| r.idle_w);
            if let Some(idle_w) = idle {
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(x0, idle_w), (x1, idle_w)],
                        8,
                        5,
                        color.mix(0.8).stroke_width(1),
                    ))
                    .map_err(draw_err)?
                    .label(format!("{name} idle {idle_w:.2} W"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 6, y)], color.stroke_width(1))
                    });
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimate_keeps_extremes_and_bounds_size() {
        let pts: Vec<(f64, f64)> = (0..10_000)
            .map(|i| (i as f64, if i == 5_000 { 99.0 } else { (i % 7) as f64 }))
            .collect();
        let d = decimate(&pts, 1000);
        assert!(d.len() <= 1002, "{}", d.len());
        assert!(d.iter().any(|p| p.1 == 99.0));
        assert!(d.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(decimate(&pts[..10], 1000).len(), 10);
    }
}
