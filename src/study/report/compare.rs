//! Two studies side by side: for each configuration both have (matched by
//! configuration hash), per metric the ratio of means B ÷ A, Welch's t-test p, and
//! a mark where the difference is significant (p < 0.05) *and* beyond the noise
//! threshold (|ratio − 1| > threshold) — what compare-llama-bench.py lacks.

use serde::{Deserialize, Serialize};

use super::table::fmt_sig;
use super::{ConfigKey, Report};
use crate::study::stats::welch;

/// Significance level of the mark.
pub const ALPHA: f64 = 0.05;
/// Metrics compared, in order.
pub const COMPARED: [&str; 7] = [
    "decode_tps",
    "prefill_tps",
    "ttft_ms",
    "avg_w",
    "j_per_token_decode",
    "j_per_token_e2e",
    "rss_peak_bytes",
];

/// One metric of one matched configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricDiff {
    pub metric: String,
    pub mean_a: f64,
    pub mean_b: f64,
    /// mean_b ÷ mean_a.
    pub ratio: Option<f64>,
    /// Welch two-sided p (`None` below two runs a side or with no variance).
    pub p: Option<f64>,
    /// p < 0.05 and |ratio − 1| > threshold.
    pub significant: bool,
}

/// A configuration both studies ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigDiff {
    pub config: ConfigKey,
    pub n_a: usize,
    pub n_b: usize,
    pub metrics: Vec<MetricDiff>,
}

/// The comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub threshold: f64,
    pub matched: Vec<ConfigDiff>,
    /// Configurations only one side has (labels).
    pub only_a: usize,
    pub only_b: usize,
}

/// Compares `b` against `a`.
pub fn compare(a: &Report, b: &Report, threshold: f64) -> Comparison {
    let mut matched = Vec::new();
    for ca in &a.configurations {
        let Some(cb) = b
            .configurations
            .iter()
            .find(|c| c.config_hash == ca.config_hash)
        else {
            continue;
        };
        let metrics = COMPARED
            .iter()
            .filter_map(|k| {
                let (va, vb) = (ca.values.get(*k)?, cb.values.get(*k)?);
                let (sa, sb) = (ca.metrics.get(*k)?, cb.metrics.get(*k)?);
                let ratio = (sa.mean != 0.0).then(|| sb.mean / sa.mean);
                let p = welch(va, vb).map(|(_, _, p)| p);
                Some(MetricDiff {
                    metric: k.to_string(),
                    mean_a: sa.mean,
                    mean_b: sb.mean,
                    ratio,
                    p,
                    significant: p.is_some_and(|p| p < ALPHA)
                        && ratio.is_some_and(|r| (r - 1.0).abs() > threshold),
                })
            })
            .collect();
        matched.push(ConfigDiff {
            config: ca.config.clone(),
            n_a: ca.n,
            n_b: cb.n,
            metrics,
        });
    }
    let count_only = |x: &Report, y: &Report| {
        x.configurations
            .iter()
            .filter(|c| {
                !y.configurations
                    .iter()
                    .any(|d| d.config_hash == c.config_hash)
            })
            .count()
    };
    Comparison {
        a: a.study.name.clone(),
        b: b.study.name.clone(),
        threshold,
        only_a: count_only(a, b),
        only_b: count_only(b, a),
        matched,
    }
}

/// The comparison as a Markdown table: one row per configuration × metric; `**`
/// marks a significant difference.
pub fn markdown(c: &Comparison) -> String {
    let mut out = format!(
        "# Compare {} (A) → {} (B)\n\nratio = mean B ÷ mean A; Welch t-test p; ✱ = p < {ALPHA} and |ratio − 1| > {} %\n\n",
        c.a,
        c.b,
        fmt_sig(c.threshold * 100.0, 3)
    );
    out.push_str("| device | model | threads | prompt | n_ctx | n A | n B | metric | mean A | mean B | ratio | p | |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for d in &c.matched {
        for m in &d.metrics {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                d.config.device,
                d.config.model,
                d.config.threads.map_or("default".into(), |t| t.to_string()),
                d.config.prompt_tokens,
                d.config.n_ctx,
                d.n_a,
                d.n_b,
                m.metric,
                fmt_sig(m.mean_a, 4),
                fmt_sig(m.mean_b, 4),
                m.ratio.map_or("–".into(), |r| format!("{r:.3}")),
                m.p.map_or("–".into(), |p| fmt_sig(p, 2)),
                if m.significant { "✱" } else { "" },
            ));
        }
    }
    out.push_str(&format!(
        "\n{} configurations matched; {} only in A, {} only in B\n",
        c.matched.len(),
        c.only_a,
        c.only_b
    ));
    out
}
