//! The report: one row per stored job, with the columns of the tables of the 2025
//! study of on-device LM inference (arXiv 2503.09114). Values are read from the
//! stored result JSON (and the energy summary); a missing field is shown as `-`.

use serde::Serialize;
use serde_json::Value;

use super::store::JobRow;

/// One job's row. `None` prints as `-` (null in JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReportRow {
    /// Job id.
    pub job: String,
    /// Stored job state.
    pub state: String,
    /// `model.name`.
    pub model: Option<String>,
    /// `model.quant`.
    pub quant: Option<String>,
    /// `params.threads`.
    pub threads: Option<u64>,
    /// `tokens.prompt`.
    pub prompt_tokens: Option<u64>,
    /// `tokens.generated`.
    pub gen_tokens: Option<u64>,
    /// `timings.load_ms` ÷ 1000.
    pub load_s: Option<f64>,
    /// `timings.ttft_ms`.
    pub ttft_ms: Option<f64>,
    /// `timings.prefill_tps`.
    pub prefill_tps: Option<f64>,
    /// `timings.decode_tps`.
    pub decode_tps: Option<f64>,
    /// `memory.rss_peak_bytes` in MiB.
    pub rss_peak_mib: Option<f64>,
    /// `energy.avg_w` (basis rail, load ∪ prefill ∪ decode).
    pub avg_w: Option<f64>,
    /// `energy.j_per_token.decode`.
    pub j_per_token_decode: Option<f64>,
    /// `energy.j_per_token.e2e`.
    pub j_per_token_e2e: Option<f64>,
    /// `energy.tokens_per_j`.
    pub tokens_per_j: Option<f64>,
    /// `energy.simulated`.
    pub simulated: Option<bool>,
    /// The definitions version of the energy figures.
    pub definitions: Option<String>,
}

/// Column headers, in order (md and csv).
pub const COLUMNS: [&str; 17] = [
    "job",
    "state",
    "model",
    "quant",
    "threads",
    "prompt tok",
    "gen tok",
    "load s",
    "TTFT ms",
    "prefill t/s",
    "decode t/s",
    "peak RSS MiB",
    "avg W",
    "J/tok decode",
    "J/tok e2e",
    "tok/J",
    "simulated",
];

fn f(v: &Value, ptr: &str) -> Option<f64> {
    v.pointer(ptr).and_then(Value::as_f64)
}

fn u(v: &Value, ptr: &str) -> Option<u64> {
    v.pointer(ptr).and_then(Value::as_u64)
}

fn s(v: &Value, ptr: &str) -> Option<String> {
    v.pointer(ptr).and_then(Value::as_str).map(str::to_string)
}

/// Builds the row of one stored job.
pub fn row(job: &JobRow) -> ReportRow {
    let result: Value = job
        .result_json
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null);
    // The result's own `energy` object wins; the stored summary fills in.
    let energy: Value = match result.get("energy") {
        Some(e) if !e.is_null() => e.clone(),
        _ => job
            .energy_json
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null),
    };
    ReportRow {
        job: job.id.clone(),
        state: job.state.clone(),
        model: s(&result, "/model/name"),
        // A requantized model says so wherever it appears (docs/quality.md).
        quant: s(&result, "/model/quant").map(|q| match s(&result, "/model/requantized_from") {
            Some(from) => format!("{q} (REQUANTIZED from {from})"),
            None => q,
        }),
        threads: u(&result, "/params/threads"),
        prompt_tokens: u(&result, "/tokens/prompt").or_else(|| u(&energy, "/tokens/prompt")),
        gen_tokens: u(&result, "/tokens/generated").or_else(|| u(&energy, "/tokens/generated")),
        load_s: f(&result, "/timings/load_ms").map(|ms| ms / 1000.0),
        ttft_ms: f(&result, "/timings/ttft_ms"),
        prefill_tps: f(&result, "/timings/prefill_tps"),
        decode_tps: f(&result, "/timings/decode_tps"),
        rss_peak_mib: f(&result, "/memory/rss_peak_bytes").map(|b| b / (1024.0 * 1024.0)),
        avg_w: f(&energy, "/avg_w"),
        j_per_token_decode: f(&energy, "/j_per_token/decode"),
        j_per_token_e2e: f(&energy, "/j_per_token/e2e"),
        tokens_per_j: f(&energy, "/tokens_per_j"),
        simulated: energy.get("simulated").and_then(Value::as_bool),
        definitions: s(&energy, "/definitions"),
    }
}

/// Builds all rows.
pub fn rows(jobs: &[JobRow]) -> Vec<ReportRow> {
    jobs.iter().map(row).collect()
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.decimals$}"))
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), |x| x.to_string())
}

fn cells(r: &ReportRow) -> Vec<String> {
    vec![
        r.job.clone(),
        r.state.clone(),
        opt(&r.model),
        opt(&r.quant),
        opt(&r.threads),
        opt(&r.prompt_tokens),
        opt(&r.gen_tokens),
        num(r.load_s, 2),
        num(r.ttft_ms, 1),
        num(r.prefill_tps, 2),
        num(r.decode_tps, 2),
        num(r.rss_peak_mib, 0),
        num(r.avg_w, 3),
        num(r.j_per_token_decode, 4),
        num(r.j_per_token_e2e, 4),
        num(r.tokens_per_j, 3),
        r.simulated
            .map_or("-", |b| if b { "yes" } else { "no" })
            .to_string(),
    ]
}

/// A Markdown table, with a note naming the energy definitions used.
pub fn to_markdown(rows: &[ReportRow]) -> String {
    let esc = |c: &str| c.replace('|', "\\|");
    let mut out = format!("| {} |\n", COLUMNS.join(" | "));
    out.push_str(&format!("|{}\n", "---|".repeat(COLUMNS.len())));
    for r in rows {
        let c: Vec<String> = cells(r).iter().map(|c| esc(c)).collect();
        out.push_str(&format!("| {} |\n", c.join(" | ")));
    }
    let mut defs: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.definitions.as_deref())
        .collect();
    defs.sort_unstable();
    defs.dedup();
    if !defs.is_empty() {
        out.push_str(&format!(
            "\nEnergy figures follow {} (docs/energy.md).\n",
            defs.join(", ")
        ));
    }
    out
}

/// CSV with the same columns.
pub fn to_csv(rows: &[ReportRow]) -> String {
    let field = |c: &str| {
        if c.contains([',', '"', '\n']) {
            format!("\"{}\"", c.replace('"', "\"\""))
        } else {
            c.to_string()
        }
    };
    let mut out = COLUMNS.map(field).join(",");
    out.push('\n');
    for r in rows {
        let c: Vec<String> = cells(r).iter().map(|c| field(c)).collect();
        out.push_str(&c.join(","));
        out.push('\n');
    }
    out
}

/// JSON array of row objects (missing values are null).
pub fn to_json(rows: &[ReportRow]) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(result: Option<&str>, energy: Option<&str>) -> JobRow {
        JobRow {
            id: "j1".into(),
            state: "done".into(),
            request_json: None,
            result_json: result.map(str::to_string),
            energy_json: energy.map(str::to_string),
            created_unix_ns: 0,
            updated_unix_ns: 0,
        }
    }

    #[test]
    fn reads_result_fields() {
        let r = row(&job(
            Some(
                r#"{"model":{"name":"qwen","quant":"Q4_K_M"},"params":{"threads":4},
                "tokens":{"prompt":12,"generated":64},
                "timings":{"load_ms":1500,"ttft_ms":120.5,"prefill_tps":80.0,"decode_tps":12.5},
                "memory":{"rss_peak_bytes":1048576},
                "energy":{"definitions":"edgewatt-energy-v1","simulated":true,"avg_w":4.5,
                          "j_per_token":{"decode":0.3,"e2e":0.35},"tokens_per_j":2.857}}"#,
            ),
            None,
        ));
        assert_eq!(r.model.as_deref(), Some("qwen"));
        assert_eq!(r.threads, Some(4));
        assert_eq!(r.load_s, Some(1.5));
        assert_eq!(r.rss_peak_mib, Some(1.0));
        assert_eq!(r.j_per_token_e2e, Some(0.35));
        assert_eq!(r.simulated, Some(true));
        let md = to_markdown(std::slice::from_ref(&r));
        assert!(
            md.contains("| j1 | done | qwen | Q4_K_M | 4 | 12 | 64 | 1.50 |"),
            "{md}"
        );
        assert!(md.contains("| yes |"));
        assert!(md.contains("edgewatt-energy-v1"));
        let csv = to_csv(&[r]);
        assert_eq!(csv.lines().count(), 2);
    }

    #[test]
    fn requantized_models_say_so() {
        let r = row(&job(
            Some(
                r#"{"model":{"name":"m.Q8_0","quant":"Q8_0","requantized_from":"m.gguf (Q4_1)"}}"#,
            ),
            None,
        ));
        assert_eq!(
            r.quant.as_deref(),
            Some("Q8_0 (REQUANTIZED from m.gguf (Q4_1))")
        );
    }

    #[test]
    fn missing_fields_are_dashes() {
        let r = row(&job(None, Some(r#"{"simulated":false,"avg_w":2.0}"#)));
        assert_eq!(r.avg_w, Some(2.0));
        let md = to_markdown(std::slice::from_ref(&r));
        let line = md.lines().nth(2).expect("row");
        assert_eq!(
            line,
            "| j1 | done | - | - | - | - | - | - | - | - | - | - | 2.000 | - | - | - | no |"
        );
        let json = to_json(&[r]).expect("json");
        assert!(json.contains("\"model\": null"));
    }
}
