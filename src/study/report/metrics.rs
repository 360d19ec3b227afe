//! The metrics a report summarises, each read from one run's result JSON (the
//! protocol's result schema, docs/protocol.md and docs/energy.md).

use serde_json::Value;

/// A metric: its key in the report and how to read it from a result.
pub struct Metric {
    /// Key in `metrics` (JSON), column prefix (CSV).
    pub key: &'static str,
    /// Unit, for tables and docs.
    pub unit: &'static str,
    /// The value of one run, when it has one.
    pub read: fn(&Value) -> Option<f64>,
}

/// A number at a JSON pointer.
pub fn num(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64)
}

/// Seconds per generated token, end to end (prefill + decode, as `j_per_token.e2e`
/// counts energy): `energy.duration_s.{prefill+decode} ÷ energy.tokens.generated`,
/// else the timings' `(prefill_ms + decode_ms) ÷ tokens.generated`.
pub fn s_per_token_e2e(r: &Value) -> Option<f64> {
    let from_energy = || {
        let s = num(r, "/energy/duration_s/prefill")? + num(r, "/energy/duration_s/decode")?;
        let g = num(r, "/energy/tokens/generated")?;
        (g > 0.0).then(|| s / g)
    };
    from_energy().or_else(|| {
        let s = (num(r, "/timings/prefill_ms")? + num(r, "/timings/decode_ms")?) / 1e3;
        let g = num(r, "/tokens/generated")?;
        (g > 0.0).then(|| s / g)
    })
}

/// Every metric, in report order.
pub const METRICS: &[Metric] = &[
    Metric {
        key: "decode_tps",
        unit: "tokens/s",
        read: |r| num(r, "/timings/decode_tps"),
    },
    Metric {
        key: "prefill_tps",
        unit: "tokens/s",
        read: |r| num(r, "/timings/prefill_tps"),
    },
    Metric {
        key: "ttft_ms",
        unit: "ms",
        read: |r| num(r, "/timings/ttft_ms"),
    },
    Metric {
        key: "load_ms",
        unit: "ms",
        read: |r| num(r, "/timings/load_ms"),
    },
    Metric {
        key: "total_ms",
        unit: "ms",
        read: |r| num(r, "/timings/total_ms"),
    },
    Metric {
        key: "prompt_tokens",
        unit: "tokens",
        read: |r| num(r, "/tokens/prompt"),
    },
    Metric {
        key: "generated_tokens",
        unit: "tokens",
        read: |r| num(r, "/tokens/generated"),
    },
    Metric {
        key: "rss_peak_bytes",
        unit: "bytes",
        read: |r| num(r, "/memory/rss_peak_bytes"),
    },
    Metric {
        key: "avg_w",
        unit: "W",
        read: |r| num(r, "/energy/avg_w"),
    },
    Metric {
        key: "idle_w",
        unit: "W",
        read: |r| num(r, "/energy/idle_w"),
    },
    Metric {
        key: "peak_w",
        unit: "W",
        read: |r| num(r, "/energy/peak_w"),
    },
    Metric {
        key: "j_per_token_decode",
        unit: "J/token",
        read: |r| num(r, "/energy/j_per_token/decode"),
    },
    Metric {
        key: "j_per_token_e2e",
        unit: "J/token",
        read: |r| num(r, "/energy/j_per_token/e2e"),
    },
    Metric {
        key: "j_per_token_decode_net",
        unit: "J/token",
        read: |r| num(r, "/energy/active_j_per_token/decode"),
    },
    Metric {
        key: "j_per_token_e2e_net",
        unit: "J/token",
        read: |r| num(r, "/energy/active_j_per_token/e2e"),
    },
    Metric {
        key: "tokens_per_j",
        unit: "tokens/J",
        read: |r| num(r, "/energy/tokens_per_j"),
    },
    Metric {
        key: "s_per_token_e2e",
        unit: "s/token",
        read: s_per_token_e2e,
    },
    Metric {
        key: "edp",
        unit: "J·s/token²",
        read: |r| Some(num(r, "/energy/j_per_token/e2e")? * s_per_token_e2e(r)?),
    },
    Metric {
        key: "energy_load_j",
        unit: "J",
        read: |r| num(r, "/energy/energy_j/load"),
    },
    Metric {
        key: "energy_prefill_j",
        unit: "J",
        read: |r| num(r, "/energy/energy_j/prefill"),
    },
    Metric {
        key: "energy_decode_j",
        unit: "J",
        read: |r| num(r, "/energy/energy_j/decode"),
    },
    Metric {
        key: "settle_ms",
        unit: "ms",
        read: |r| num(r, "/settle/settle_ms"),
    },
    Metric {
        key: "ppl",
        unit: "",
        read: |r| num(r, "/quality/ppl"),
    },
    Metric {
        key: "ppl_stderr",
        unit: "",
        read: |r| num(r, "/quality/ppl_stderr"),
    },
    Metric {
        key: "kld_mean",
        unit: "nats",
        read: |r| num(r, "/quality/kld_mean"),
    },
];

/// The metric with this key.
pub fn metric(key: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn s_per_token_prefers_energy_durations() {
        let r = json!({
            "energy": {"duration_s": {"prefill": 0.1, "decode": 0.7}, "tokens": {"generated": 32}},
            "timings": {"prefill_ms": 50.0, "decode_ms": 300.0}, "tokens": {"generated": 16}
        });
        assert!((s_per_token_e2e(&r).unwrap() - 0.8 / 32.0).abs() < 1e-15);
        let t = json!({"timings": {"prefill_ms": 50.0, "decode_ms": 300.0}, "tokens": {"generated": 16}});
        assert!((s_per_token_e2e(&t).unwrap() - 0.35 / 16.0).abs() < 1e-15);
        assert_eq!(s_per_token_e2e(&json!({})), None);
        assert!(metric("edp").is_some() && metric("nope").is_none());
        let keys: std::collections::BTreeSet<_> = METRICS.iter().map(|m| m.key).collect();
        assert_eq!(keys.len(), METRICS.len());
    }
}
