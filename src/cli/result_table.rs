//! The human-readable result of a job (speed and energy tables), shared by
//! `edgewatt submit` and `edgewatt generate --trace`.

use serde_json::Value;

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

/// The human-readable result: a speed table and an energy table.
pub fn result_table(r: &Value) -> String {
    let mut s = String::new();
    let id = r.get("id").and_then(Value::as_str).unwrap_or("?");
    let dev = r.get("device").and_then(Value::as_str).unwrap_or("?");
    let state = r.get("state").and_then(Value::as_str).unwrap_or("?");
    s.push_str(&format!("job {id} on {dev}: {state}"));
    if let Some(e) = r.get("error") {
        s.push_str(&format!(
            " — {} ({})",
            e.get("message").and_then(Value::as_str).unwrap_or(""),
            e.get("code").and_then(Value::as_str).unwrap_or("")
        ));
    }
    s.push('\n');
    if r.get("timings").is_none() {
        return s;
    }
    let model = r
        .get("model")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    let quant = r
        .get("model")
        .and_then(|m| m.get("quant"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let fr = r.get("finish_reason").and_then(Value::as_str).unwrap_or("");
    let pt = num(r, &["tokens", "prompt"]).unwrap_or(0.0);
    let gt = num(r, &["tokens", "generated"]).unwrap_or(0.0);
    let t = |k: &str| num(r, &["timings", k]).unwrap_or(0.0);
    // A requantized model says so wherever its result is shown (issue 12).
    let requant = r
        .get("model")
        .and_then(|m| m.get("requantized_from"))
        .and_then(Value::as_str)
        .map_or(String::new(), |from| format!(" (requantized from {from})"));
    s.push_str(&format!(
        "model {model} {quant}{requant}, finish {fr}, {pt:.0} prompt + {gt:.0} generated tokens\n"
    ));
    if let Some(line) = power_mode_line(r.get("power_mode").unwrap_or(&Value::Null)) {
        s.push_str(&line);
    }
    s.push_str("  phase        ms      tok/s\n");
    s.push_str(&format!("  queue  {:>9.1}\n", t("queue_ms")));
    s.push_str(&format!("  load   {:>9.1}\n", t("load_ms")));
    s.push_str(&format!(
        "  prefill{:>9.1}  {:>9.1}\n",
        t("prefill_ms"),
        t("prefill_tps")
    ));
    s.push_str(&format!("  ttft   {:>9.1}\n", t("ttft_ms")));
    s.push_str(&format!(
        "  decode {:>9.1}  {:>9.1}\n",
        t("decode_ms"),
        t("decode_tps")
    ));
    s.push_str(&format!("  total  {:>9.1}\n", t("total_ms")));
    s.push_str(&format!(
        "  token latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\n",
        num(r, &["timings", "token_latency_ms", "p50"]).unwrap_or(0.0),
        num(r, &["timings", "token_latency_ms", "p90"]).unwrap_or(0.0),
        num(r, &["timings", "token_latency_ms", "p99"]).unwrap_or(0.0),
        num(r, &["timings", "token_latency_ms", "max"]).unwrap_or(0.0),
    ));
    let Some(e) = r.get("energy").filter(|e| !e.is_null()) else {
        s.push_str("energy: not measured (no power sensors configured on the board)\n");
        return s;
    };
    let sim = e.get("simulated").and_then(Value::as_bool).unwrap_or(false);
    let defs = e.get("definitions").and_then(Value::as_str).unwrap_or("?");
    s.push_str(&format!(
        "energy ({}definitions {defs}, {:.0} Hz, {} samples, {} gaps):\n",
        if sim { "SIMULATED sensor, " } else { "" },
        num(e, &["sample_rate_hz"]).unwrap_or(0.0),
        num(e, &["samples"]).unwrap_or(0.0),
        num(e, &["gaps"]).unwrap_or(0.0),
    ));
    s.push_str("  rail              idle W   avg W  peak W   load J prefill J decode J  total J\n");
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
    for rail in e
        .get("rails")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = rail.get("name").and_then(Value::as_str).unwrap_or("?");
        let total = rail.get("total").and_then(Value::as_bool).unwrap_or(false);
        s.push_str(&format!(
            "  {:<16}{:>8}{:>8}{:>8}{:>9}{:>9}{:>9}{:>9}\n",
            format!("{name}{}", if total { "*" } else { "" }),
            f(num(rail, &["idle_w"])),
            f(num(rail, &["avg_w"])),
            f(num(rail, &["peak_w"])),
            f(num(rail, &["energy_j", "load"])),
            f(num(rail, &["energy_j", "prefill"])),
            f(num(rail, &["energy_j", "decode"])),
            f(num(rail, &["energy_j", "total"])),
        ));
    }
    s.push_str(&format!(
        "  J/token decode {}  e2e {}  tokens/J {}  (gross, on {}; * = board total)\n",
        f(num(e, &["j_per_token", "decode"])),
        f(num(e, &["j_per_token", "e2e"])),
        f(num(e, &["tokens_per_j"])),
        e.get("basis").and_then(Value::as_str).unwrap_or("?"),
    ));
    s
}

/// `power mode eco: policy0 powersave 600–1000 MHz (ran 600–1000); nvpmodel 1 15W;
/// arm_freq 2400 MHz`; `None` when the board exposed nothing (a J/token figure is
/// shown with the mode it was measured under).
fn power_mode_line(pm: &Value) -> Option<String> {
    if !pm.is_object() {
        return None;
    }
    let mhz = |v: Option<&Value>| {
        v.and_then(Value::as_f64)
            .map(|k| format!("{:.0}", k / 1000.0))
    };
    let mut parts = Vec::new();
    for p in pm
        .get("cpufreq")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut part = format!(
            "policy{}",
            p.get("policy").and_then(Value::as_u64).unwrap_or(0)
        );
        if let Some(g) = p.get("governor").and_then(Value::as_str) {
            part.push_str(&format!(" {g}"));
        }
        if let (Some(lo), Some(hi)) = (mhz(p.get("min_khz")), mhz(p.get("max_khz"))) {
            part.push_str(&format!(" {lo}–{hi} MHz"));
        }
        if let (Some(lo), Some(hi)) = (mhz(p.get("seen_min_khz")), mhz(p.get("seen_max_khz"))) {
            part.push_str(&format!(" (ran {lo}–{hi})"));
        }
        parts.push(part);
    }
    if let Some(n) = pm.get("nvpmodel").filter(|n| n.is_object()) {
        let id = n.get("id").and_then(Value::as_u64).unwrap_or(0);
        let name = n.get("name").and_then(Value::as_str).unwrap_or("");
        parts.push(format!("nvpmodel {id} {name}").trim_end().to_string());
    }
    if let Some(f) = pm.get("arm_freq_mhz").and_then(Value::as_u64) {
        parts.push(format!("arm_freq {f} MHz"));
    }
    let name = pm.get("name").and_then(Value::as_str);
    if parts.is_empty() && name.is_none() {
        return None;
    }
    Some(format!(
        "power mode {}: {}\n",
        name.unwrap_or("(as found)"),
        if parts.is_empty() {
            "nothing readable".into()
        } else {
            parts.join("; ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_requantized_model_is_marked() {
        let r = json!({"id": "a", "device": "d", "state": "succeeded", "timings": {},
                       "model": {"name": "m.Q8_0", "quant": "Q8_0", "requantized_from": "m.gguf (Q4_1)"}});
        let t = result_table(&r);
        assert!(
            t.contains("model m.Q8_0 Q8_0 (requantized from m.gguf (Q4_1))"),
            "{t}"
        );
        let mut plain = r.clone();
        plain["model"]["requantized_from"] = Value::Null;
        assert!(!result_table(&plain).contains("requantized"));
    }

    #[test]
    fn table_shows_error() {
        let t = result_table(
            &json!({"id":"a","device":"d","state":"rejected","error":{"code":"x","message":"m"}}),
        );
        assert!(t.contains("rejected") && t.contains("(x)"), "{t}");
    }

    #[test]
    fn the_power_mode_is_shown_beside_the_figures() {
        let r = json!({"id": "a", "device": "d", "state": "succeeded", "timings": {},
            "power_mode": {"name": "eco", "cpufreq": [{"policy": 0, "governor": "powersave",
                "min_khz": 600000, "max_khz": 1000000, "seen_min_khz": 600000, "seen_max_khz": 1000000}],
                "nvpmodel": {"id": 1, "name": "15W"}, "arm_freq_mhz": 2400}});
        let t = result_table(&r);
        assert!(
            t.contains("power mode eco: policy0 powersave 600–1000 MHz (ran 600–1000); nvpmodel 1 15W; arm_freq 2400 MHz\n"),
            "{t}"
        );
        let mut bare = r.clone();
        bare["power_mode"] = json!({"cpufreq": [{"policy": 4, "governor": "schedutil"}]});
        assert!(result_table(&bare).contains("power mode (as found): policy4 schedutil\n"));
        bare["power_mode"] = Value::Null;
        assert!(!result_table(&bare).contains("power mode"));
    }
}
