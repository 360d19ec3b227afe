//! The report's main table (one row per configuration) and its errors table, as
//! cells that Markdown and HTML both render.

use super::{ConfigReport, Report};

/// One column: its header and how a row fills it.
pub struct Column {
    pub header: &'static str,
    pub cell: fn(&ConfigReport) -> String,
}

/// A number with `sig` significant digits, no exponent for ordinary magnitudes.
pub fn fmt_sig(v: f64, sig: usize) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor() as i32;
    if !(-4..=9).contains(&mag) {
        return format!("{v:.*e}", sig.saturating_sub(1));
    }
    let decimals = (sig as i32 - 1 - mag).max(0) as usize;
    format!("{v:.decimals$}")
}

fn opt(v: Option<f64>, sig: usize) -> String {
    v.map_or("–".into(), |v| fmt_sig(v, sig))
}

fn mean(c: &ConfigReport, k: &str) -> Option<f64> {
    c.metrics.get(k).map(|s| s.mean)
}

/// "mean ± CI half-width" (just the mean with one value).
pub fn mean_ci(c: &ConfigReport, k: &str, sig: usize) -> String {
    match c.metrics.get(k) {
        None => "–".into(),
        Some(s) => match s.ci95_high {
            Some(h) => format!("{} ± {}", fmt_sig(s.mean, sig), fmt_sig(h - s.mean, 2)),
            None => fmt_sig(s.mean, sig),
        },
    }
}

fn mib(b: Option<u64>) -> String {
    opt(b.map(|b| b as f64 / 1048576.0), 4)
}

fn currency(c: &ConfigReport, v: Option<f64>) -> String {
    match (v, &c.cost) {
        (Some(v), Some(k)) => format!("{} {}", fmt_sig(v, 3), k.currency),
        _ => "–".into(),
    }
}

/// The main table's columns, in order.
pub const COLUMNS: &[Column] = &[
    Column {
        header: "device",
        cell: |c| c.config.device.clone(),
    },
    Column {
        header: "model",
        cell: |c| c.config.model.clone(),
    },
    Column {
        header: "quant",
        cell: |c| c.config.quant.clone().unwrap_or_else(|| "–".into()),
    },
    Column {
        header: "threads",
        cell: |c| c.config.threads.map_or("default".into(), |t| t.to_string()),
    },
    Column {
        header: "prompt",
        cell: |c| c.config.prompt_tokens.to_string(),
    },
    Column {
        header: "gen",
        cell: |c| c.config.gen_tokens.to_string(),
    },
    Column {
        header: "depth",
        cell: |c| c.config.depth.to_string(),
    },
    Column {
        header: "n_ctx",
        cell: |c| c.config.n_ctx.to_string(),
    },
    Column {
        header: "batch",
        cell: |c| c.config.batch.map_or("default".into(), |b| b.to_string()),
    },
    Column {
        header: "ngl",
        cell: |c| c.config.n_gpu_layers.to_string(),
    },
    Column {
        header: "power mode",
        cell: |c| power_mode(c),
    },
    Column {
        header: "model MiB",
        cell: |c| mib(c.model_size_bytes),
    },
    Column {
        header: "model+KV MiB",
        cell: |c| mib(c.model_kv_bytes),
    },
    Column {
        header: "RSS peak MiB",
        cell: |c| opt(mean(c, "rss_peak_bytes").map(|b| b / 1048576.0), 4),
    },
    Column {
        header: "cold load ms",
        cell: |c| opt(c.load_cold_ms, 4),
    },
    Column {
        header: "TTFT ms",
        cell: |c| mean_ci(c, "ttft_ms", 4),
    },
    Column {
        header: "prefill t/s",
        cell: |c| mean_ci(c, "prefill_tps", 4),
    },
    Column {
        header: "decode t/s",
        cell: |c| mean_ci(c, "decode_tps", 4),
    },
    Column {
        header: "decode t/s pooled",
        cell: |c| opt(c.decode_tps_pooled, 4),
    },
    Column {
        header: "avg W",
        cell: |c| opt(mean(c, "avg_w"), 3),
    },
    Column {
        header: "idle W",
        cell: |c| opt(mean(c, "idle_w"), 3),
    },
    Column {
        header: "J/token decode",
        cell: |c| mean_ci(c, "j_per_token_decode", 3),
    },
    Column {
        header: "J/token e2e",
        cell: |c| mean_ci(c, "j_per_token_e2e", 3),
    },
    Column {
        header: "J/token decode net",
        cell: |c| opt(mean(c, "j_per_token_decode_net"), 3),
    },
    Column {
        header: "J/token e2e net",
        cell: |c| opt(mean(c, "j_per_token_e2e_net"), 3),
    },
    Column {
        header: "tokens/J",
        cell: |c| opt(mean(c, "tokens_per_j"), 3),
    },
    Column {
        header: "EDP J·s/token²",
        cell: |c| opt(mean(c, "edp"), 3),
    },
    Column {
        header: "cost/Mtok energy",
        cell: |c| currency(c, c.cost.as_ref().map(|k| k.energy_per_mtok)),
    },
    Column {
        header: "cost/Mtok with board",
        cell: |c| currency(c, c.cost.as_ref().and_then(|k| k.total_per_mtok)),
    },
    Column {
        header: "cloud/Mtok",
        cell: |c| currency(c, c.cost.as_ref().and_then(|k| k.cloud_per_mtok)),
    },
    Column {
        header: "perplexity",
        cell: ppl_cell,
    },
    Column {
        header: "KLD",
        cell: kld_cell,
    },
    Column {
        header: "n",
        cell: |c| c.n.to_string(),
    },
    Column {
        header: "flags",
        cell: |c| c.flags.join(" "),
    },
];

/// Perplexity of a row: its board × model's quality run, else a result's own.
pub fn ppl_of(c: &ConfigReport) -> Option<f64> {
    c.quality
        .as_ref()
        .and_then(|q| q.ppl)
        .or_else(|| mean(c, "ppl"))
}

/// Mean KL divergence of a row (as [`ppl_of`]).
pub fn kld_of(c: &ConfigReport) -> Option<f64> {
    c.quality
        .as_ref()
        .and_then(|q| q.kld_mean)
        .or_else(|| mean(c, "kld_mean"))
}

/// "PPL ± stderr" (llama-perplexity's ±) from the quality run, else "mean ± CI".
fn ppl_cell(c: &ConfigReport) -> String {
    match c.quality.as_ref().and_then(|q| q.ppl.zip(q.ppl_stderr)) {
        Some((p, e)) => format!("{} ± {}", fmt_sig(p, 4), fmt_sig(e, 2)),
        None => mean_ci(c, "ppl", 4),
    }
}

fn kld_cell(c: &ConfigReport) -> String {
    match c
        .quality
        .as_ref()
        .and_then(|q| q.kld_mean.zip(q.kld_stderr))
    {
        Some((k, e)) => format!("{} ± {}", fmt_sig(k, 3), fmt_sig(e, 2)),
        None => opt(kld_of(c), 3),
    }
}

fn power_mode(c: &ConfigReport) -> String {
    let rec = c.power_mode_recorded.as_ref();
    let name = c.config.power_mode.clone().or_else(|| match rec {
        Some(serde_json::Value::Object(o)) => o
            .get("name")
            .or_else(|| o.get("mode"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
        Some(v) => v.as_str().map(str::to_string),
        None => None,
    });
    match (name, rec.and_then(recorded_summary)) {
        (Some(n), Some(d)) => format!("{n} ({d})"),
        (Some(n), None) => n,
        (None, Some(d)) => d,
        (None, None) => "–".into(),
    }
}

/// What a result's recorded `power_mode` says in a few words: the nvpmodel mode,
/// then each distinct cpufreq governor and cap (`powersave ≤1.50 GHz`).
pub fn recorded_summary(v: &serde_json::Value) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(n) = v["nvpmodel"]["name"].as_str() {
        parts.push(format!("nvpmodel {n}"));
    } else if let Some(id) = v["nvpmodel"]["id"].as_u64() {
        parts.push(format!("nvpmodel {id}"));
    }
    let mut seen: Vec<String> = Vec::new();
    for p in v["cpufreq"].as_array().into_iter().flatten() {
        let gov = p["governor"].as_str().unwrap_or("?");
        let d = match p["max_khz"].as_u64() {
            Some(k) => format!("{gov} ≤{:.2} GHz", k as f64 / 1e6),
            None => gov.to_string(),
        };
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    if !seen.is_empty() {
        parts.push(seen.join(" / "));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The columns this report fills: the optional ones (power mode, cost, quality)
/// only when some row has them.
pub fn columns(report: &Report) -> Vec<&'static Column> {
    let any = |f: &dyn Fn(&ConfigReport) -> bool| report.configurations.iter().any(f);
    let has_power = any(&|c| c.config.power_mode.is_some() || c.power_mode_recorded.is_some());
    let has_cost = any(&|c| c.cost.is_some());
    let has_board = any(&|c| c.cost.as_ref().is_some_and(|k| k.total_per_mtok.is_some()));
    let has_cloud = any(&|c| c.cost.as_ref().is_some_and(|k| k.cloud_per_mtok.is_some()));
    let has_ppl = any(&|c| ppl_of(c).is_some());
    let has_kld = any(&|c| kld_of(c).is_some());
    COLUMNS
        .iter()
        .filter(|col| match col.header {
            "power mode" => has_power,
            "cost/Mtok energy" => has_cost,
            "cost/Mtok with board" => has_board,
            "cloud/Mtok" => has_cloud,
            "perplexity" => has_ppl,
            "KLD" => has_kld,
            _ => true,
        })
        .collect()
}

/// The main table as header + rows of cells.
pub fn main_table(report: &Report) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let cols = columns(report);
    let rows = report
        .configurations
        .iter()
        .map(|c| cols.iter().map(|col| (col.cell)(c)).collect())
        .collect();
    (cols.iter().map(|c| c.header).collect(), rows)
}

/// The errors table: one row per failed run.
pub fn errors_table(report: &Report) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let rows = report
        .configurations
        .iter()
        .flat_map(|c| {
            c.errors.iter().map(move |e| {
                vec![
                    c.config.device.clone(),
                    c.config.model.clone(),
                    c.config.threads.map_or("default".into(), |t| t.to_string()),
                    c.config.prompt_tokens.to_string(),
                    e.repetition.to_string(),
                    e.job_id.clone(),
                    e.code.clone(),
                    e.message.clone(),
                ]
            })
        })
        .collect();
    let header = vec![
        "device",
        "model",
        "threads",
        "prompt",
        "repetition",
        "job",
        "code",
        "error",
    ];
    (header, rows)
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn md_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", header.join(" | "));
    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for r in rows {
        let cells: Vec<String> = r.iter().map(|c| md_escape(c)).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// The report as Markdown: title, main table, errors, and what the flags mean.
pub fn markdown(report: &Report) -> String {
    let s = &report.study;
    let mut out = format!(
        "# Study {}{}\n\nplan sha256 `{}` · {} runs · {} configurations · boards: {}\n\n",
        s.name,
        if s.simulated {
            " (SIMULATED power)"
        } else {
            ""
        },
        s.plan_sha256,
        report.runs,
        report.configurations.len(),
        s.boards.join(", "),
    );
    out.push_str("Means ± 95 % CI half-width (Student t); J/token net = idle subtracted.\n\n");
    let (h, rows) = main_table(report);
    out.push_str(&md_table(&h, &rows));
    let (h, rows) = errors_table(report);
    if !rows.is_empty() {
        out.push_str("\n## Failed runs\n\n");
        out.push_str(&md_table(&h, &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_digits() {
        assert_eq!(fmt_sig(47.870681, 4), "47.87");
        assert_eq!(fmt_sig(0.0965842, 3), "0.0966");
        assert_eq!(fmt_sig(1234.6, 3), "1235");
        assert_eq!(fmt_sig(0.0, 3), "0");
        assert_eq!(fmt_sig(f64::NAN, 3), "–");
        assert_eq!(fmt_sig(1.5e-7, 2), "1.5e-7");
        assert_eq!(md_escape("a|b\nc"), "a\\|b c");
    }
}
