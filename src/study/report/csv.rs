//! The report as CSV: one row per configuration, every number of the JSON
//! flattened (`METRIC_mean`, `METRIC_sd`, … for each metric; cost columns; flags
//! and error codes joined with `;`). RFC 4180 quoting.

use super::metrics::METRICS;
use super::{ConfigReport, Report};

/// Statistics written per metric, in order.
pub const STATS: [&str; 10] = [
    "n",
    "mean",
    "sd",
    "ci95_low",
    "ci95_high",
    "median",
    "cv",
    "min",
    "max",
    "outliers",
];

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn f(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v}"))
}

fn u(v: Option<u64>) -> String {
    v.map_or(String::new(), |v| v.to_string())
}

/// The header row's names.
pub fn header() -> Vec<String> {
    let mut h: Vec<String> = [
        "device",
        "model",
        "quant",
        "threads",
        "prompt_tokens",
        "gen_tokens",
        "depth",
        "n_ctx",
        "batch",
        "n_gpu_layers",
        "power_mode",
        "config_hash",
        "n",
        "decode_tps_pooled",
        "model_size_bytes",
        "model_kv_bytes",
        "weights_bytes",
        "kv_bytes",
        "load_cold_ms",
        "cost_currency",
        "cost_energy_per_mtok",
        "cost_board_per_mtok",
        "cost_total_per_mtok",
        "cost_cloud_per_mtok",
        "cost_vs_cloud",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for m in METRICS {
        h.extend(STATS.iter().map(|s| format!("{}_{s}", m.key)));
    }
    h.extend(QUALITY.iter().map(|s| s.to_string()));
    h.extend(["flags".to_string(), "errors".to_string()]);
    h
}

/// The board × model's quality score and the requantization mark (before the flags).
pub const QUALITY: [&str; 7] = [
    "quality_kind",
    "quality_ppl",
    "quality_ppl_stderr",
    "quality_kld_mean",
    "quality_kld_stderr",
    "quality_reference",
    "requantized_from",
];

/// One configuration's cells, in [`header`] order.
pub fn row(c: &ConfigReport) -> Vec<String> {
    let k = &c.config;
    let cost = c.cost.as_ref();
    let mut r = vec![
        k.device.clone(),
        k.model.clone(),
        k.quant.clone().unwrap_or_default(),
        k.threads.map_or(String::new(), |t| t.to_string()),
        k.prompt_tokens.to_string(),
        k.gen_tokens.to_string(),
        k.depth.to_string(),
        k.n_ctx.to_string(),
        k.batch.map_or(String::new(), |b| b.to_string()),
        k.n_gpu_layers.to_string(),
        k.power_mode.clone().unwrap_or_default(),
        c.config_hash.0.clone(),
        c.n.to_string(),
        f(c.decode_tps_pooled),
        u(c.model_size_bytes),
        u(c.model_kv_bytes),
        u(c.weights_bytes),
        u(c.kv_bytes),
        f(c.load_cold_ms),
        cost.map_or(String::new(), |k| k.currency.clone()),
        f(cost.map(|k| k.energy_per_mtok)),
        f(cost.and_then(|k| k.board_per_mtok)),
        f(cost.and_then(|k| k.total_per_mtok)),
        f(cost.and_then(|k| k.cloud_per_mtok)),
        f(cost.and_then(|k| k.vs_cloud)),
    ];
    for m in METRICS {
        match c.metrics.get(m.key) {
            None => r.extend(STATS.iter().map(|_| String::new())),
            Some(s) => r.extend([
                s.n.to_string(),
                f(Some(s.mean)),
                f(s.sd),
                f(s.ci95_low),
                f(s.ci95_high),
                f(Some(s.median)),
                f(s.cv),
                f(Some(s.min)),
                f(Some(s.max)),
                s.outliers.len().to_string(),
            ]),
        }
    }
    let q = c.quality.as_ref();
    r.extend([
        q.map_or(String::new(), |q| q.kind.clone()),
        f(q.and_then(|q| q.ppl)),
        f(q.and_then(|q| q.ppl_stderr)),
        f(q.and_then(|q| q.kld_mean)),
        f(q.and_then(|q| q.kld_stderr)),
        q.and_then(|q| q.reference.clone()).unwrap_or_default(),
        c.requantized_from.clone().unwrap_or_default(),
    ]);
    r.push(c.flags.join(";"));
    let codes: Vec<&str> = c.errors.iter().map(|e| e.code.as_str()).collect();
    r.push(codes.join(";"));
    r
}

/// The whole CSV, header first.
pub fn to_csv(report: &Report) -> String {
    let line = |cells: Vec<String>| {
        let q: Vec<String> = cells.iter().map(|c| quote(c)).collect();
        q.join(",") + "\n"
    };
    let mut out = line(header());
    for c in &report.configurations {
        out.push_str(&line(row(c)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_follows_rfc4180() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(
            header().len(),
            25 + METRICS.len() * STATS.len() + QUALITY.len() + 2
        );
    }
}
