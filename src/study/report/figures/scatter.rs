//! Scatter figures with Pareto fronts: decode t/s against J/token per configuration
//! (one front per device), and J/token against perplexity per model × quant.

use super::*;

pub(super) fn pareto(
    report: &Report,
    root: &DrawingArea<SVGBackend, Shift>,
    title: &str,
) -> DrawResult {
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

pub(super) fn quality(
    report: &Report,
    root: &DrawingArea<SVGBackend, Shift>,
    title: &str,
) -> DrawResult {
    // One point per model × quant: the mean over its configurations.
    let mut by: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    for c in &report.configurations {
        if let (Some(p), Some(j)) = (
            crate::study::report::table::ppl_of(c),
            mean(c, "j_per_token_decode"),
        ) {
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
