//! Thread scaling: decode t/s and J/token against threads, one line per model × device.

use super::*;

/// Configurations grouped into thread-scaling lines: every axis but `threads` equal.
pub(super) fn thread_lines(report: &Report) -> BTreeMap<String, Vec<&ConfigReport>> {
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

pub(super) fn threads(
    report: &Report,
    root: &DrawingArea<SVGBackend, Shift>,
    title: &str,
) -> DrawResult {
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
