//! Stacked bars: memory against n_ctx (weights and KV cache) per model, and energy per
//! phase (load, prefill, decode) per configuration.

use super::*;

pub(super) fn memory(
    report: &Report,
    root: &DrawingArea<SVGBackend, Shift>,
    title: &str,
) -> DrawResult {
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

pub(super) fn energy_phases(
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
