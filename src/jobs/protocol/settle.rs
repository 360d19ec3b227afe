//! The `settle` job field (docs/protocol.md): the conditions the board waits for
//! before the measured run — SoC temperature at most `max_temp_c` (or within `delta_c`
//! of its idle temperature) and total-rail power within `idle_rel` of its idle
//! baseline, both holding for `settle_s`, giving up after `timeout_s`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fields::{out_of_range, truncate, wrong};
use super::JobError;

/// Sub-fields `settle` may carry; anything else is `unknown_field` (`settle.NAME`).
pub const SETTLE_FIELDS: &[&str] = &["max_temp_c", "delta_c", "idle_rel", "settle_s", "timeout_s"];

/// Default `idle_rel` (same as the study plan's `[cooldown]`).
pub const DEFAULT_IDLE_REL: f64 = 0.1;
/// Default `settle_s`.
pub const DEFAULT_SETTLE_S: f64 = 2.0;
/// Default `timeout_s`.
pub const DEFAULT_TIMEOUT_S: f64 = 120.0;

/// A validated `settle` field.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SettleSpec {
    /// Settled in temperature when the hottest thermal zone is at most this, °C …
    pub max_temp_c: Option<f64>,
    /// … or within this many °C of the board's idle temperature. Neither set: no
    /// temperature condition.
    pub delta_c: Option<f64>,
    /// Total-rail power within this fraction of its idle baseline.
    pub idle_rel: f64,
    /// Both conditions must hold this long without a break, s.
    pub settle_s: f64,
    /// Give up after this long, s (the run then starts with `settled: false`).
    pub timeout_s: f64,
}

impl SettleSpec {
    /// True when a temperature condition was asked for.
    pub fn wants_temperature(&self) -> bool {
        self.max_temp_c.is_some() || self.delta_c.is_some()
    }
}

fn get_f64(map: &Map<String, Value>, key: &str) -> Result<Option<f64>, JobError> {
    let field = format!("settle.{key}");
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(Some(f)),
            _ => Err(wrong(&field, "a finite number", v)),
        },
        Some(v) => Err(wrong(&field, "a number", v)),
    }
}

fn ranged(
    map: &Map<String, Value>,
    key: &str,
    lo: f64,
    hi: f64,
    default: Option<f64>,
) -> Result<Option<f64>, JobError> {
    match get_f64(map, key)? {
        Some(v) if !(lo..=hi).contains(&v) => Err(out_of_range(
            &format!("settle.{key}"),
            v,
            format!("{lo}..={hi}"),
        )),
        Some(v) => Ok(Some(v)),
        None => Ok(default),
    }
}

/// Parses the job's `settle` field; `None` when absent or null.
pub(super) fn parse_settle(job: &Map<String, Value>) -> Result<Option<SettleSpec>, JobError> {
    let map = match job.get("settle") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(v) => {
            return Err(wrong(
                "settle",
                "an object {max_temp_c, delta_c, idle_rel, settle_s, timeout_s}",
                v,
            ))
        }
    };
    if let Some(k) = map.keys().find(|k| !SETTLE_FIELDS.contains(&k.as_str())) {
        return Err(JobError::UnknownField {
            field: format!("settle.{}", truncate(k, 40)),
        });
    }
    let spec = SettleSpec {
        max_temp_c: ranged(map, "max_temp_c", -40.0, 150.0, None)?,
        delta_c: ranged(map, "delta_c", 0.0, 100.0, None)?,
        idle_rel: ranged(map, "idle_rel", 0.0, 10.0, Some(DEFAULT_IDLE_REL))?
            .unwrap_or(DEFAULT_IDLE_REL),
        settle_s: ranged(map, "settle_s", 0.0, 3600.0, Some(DEFAULT_SETTLE_S))?
            .unwrap_or(DEFAULT_SETTLE_S),
        timeout_s: ranged(map, "timeout_s", 0.0, 86_400.0, Some(DEFAULT_TIMEOUT_S))?
            .unwrap_or(DEFAULT_TIMEOUT_S),
    };
    if spec.settle_s > spec.timeout_s {
        return Err(out_of_range(
            "settle.settle_s",
            spec.settle_s,
            format!("at most settle.timeout_s = {}", spec.timeout_s),
        ));
    }
    Ok(Some(spec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Option<SettleSpec>, JobError> {
        parse_settle(json!({ "settle": v }).as_object().unwrap())
    }

    #[test]
    fn defaults_and_values() {
        let s = parse(json!({})).unwrap().unwrap();
        assert_eq!(
            (s.max_temp_c, s.delta_c, s.idle_rel, s.settle_s, s.timeout_s),
            (None, None, 0.1, 2.0, 120.0)
        );
        assert!(!s.wants_temperature());
        let s = parse(json!({"max_temp_c": 70, "delta_c": 5.5, "idle_rel": 0.15, "settle_s": 1, "timeout_s": 30}))
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.max_temp_c, s.delta_c, s.idle_rel, s.settle_s, s.timeout_s),
            (Some(70.0), Some(5.5), 0.15, 1.0, 30.0)
        );
        assert!(s.wants_temperature());
        assert_eq!(parse(Value::Null).unwrap(), None);
        assert_eq!(parse_settle(&Map::new()).unwrap(), None);
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let cases = [
            (json!(5), "wrong_type", "settle"),
            (
                json!({"max_temp_c": "hot"}),
                "wrong_type",
                "settle.max_temp_c",
            ),
            (
                json!({"max_temp_c": 151}),
                "out_of_range",
                "settle.max_temp_c",
            ),
            (json!({"delta_c": -1}), "out_of_range", "settle.delta_c"),
            (json!({"idle_rel": 11}), "out_of_range", "settle.idle_rel"),
            (
                json!({"timeout_s": 1e9}),
                "out_of_range",
                "settle.timeout_s",
            ),
            (
                json!({"settle_s": 10, "timeout_s": 5}),
                "out_of_range",
                "settle.settle_s",
            ),
            (json!({"cool": true}), "unknown_field", "settle.cool"),
        ];
        for (v, code, field) in cases {
            let e = parse(v.clone()).unwrap_err();
            assert_eq!(e.code(), code, "{v}");
            assert!(e.to_string().contains(&format!("'{field}'")), "{e}");
        }
    }
}
