//! Energy per scored token of a quality job, from the job's energy summary: the eval
//! phase (recorded as `prefill`) joules of the whole board and of each rail, divided
//! by the tokens whose probability was scored.

use serde_json::{json, Map, Value};

/// `{ "total": J/token | null, "rails": { NAME: J/token } }` from an `energy` object
/// (null when the job had no sensors or scored nothing).
pub fn per_scored_token(energy: &Value, tokens_scored: u64) -> Value {
    if tokens_scored == 0 || !energy.is_object() {
        return Value::Null;
    }
    let n = tokens_scored as f64;
    let per = |v: &Value| v["energy_j"]["prefill"].as_f64().map(|j| j / n);
    let mut rails = Map::new();
    for r in energy["rails"].as_array().into_iter().flatten() {
        if let (Some(name), Some(j)) = (r["name"].as_str(), per(r)) {
            rails.insert(name.to_string(), json!(j));
        }
    }
    json!({ "total": per(energy), "rails": rails })
}

/// Adds `quality.energy_j_per_scored_token` to a result object that has both
/// `quality` and `energy`.
pub fn annotate(result: &mut Value) {
    let Some(scored) = result["quality"]["tokens_scored"].as_u64() else {
        return;
    };
    let v = per_scored_token(&result["energy"], scored);
    if let Some(q) = result.get_mut("quality").and_then(Value::as_object_mut) {
        q.insert("energy_j_per_scored_token".into(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divides_eval_joules_by_scored_tokens_per_rail() {
        let mut r = json!({
            "quality": { "tokens_scored": 100 },
            "energy": {
                "energy_j": { "prefill": 5.0 },
                "rails": [
                    { "name": "vdd_in", "energy_j": { "prefill": 4.0 } },
                    { "name": "vdd_cpu", "energy_j": { "prefill": 1.0 } }
                ]
            }
        });
        annotate(&mut r);
        let e = &r["quality"]["energy_j_per_scored_token"];
        assert_eq!(e["total"], json!(0.05));
        assert_eq!(e["rails"]["vdd_in"], json!(0.04));
        assert_eq!(e["rails"]["vdd_cpu"], json!(0.01));
        assert_eq!(per_scored_token(&Value::Null, 10), Value::Null);
        assert_eq!(per_scored_token(&r["energy"], 0), Value::Null);
    }
}
