//! One run of a configuration as a protocol job: its deterministic id (so a daemon's
//! journal answers a re-sent run from its store instead of running it twice), its
//! payload, and the figures the schedule reads back from its result. Pure.

use serde_json::{json, Map, Value};

use super::config::Configuration;
use super::plan::Plan;

/// How long a board keeps a study's model loaded between runs, s.
pub const KEEP_ALIVE_S: i64 = 600;

/// The job id of (plan, configuration, repetition): `st-PLAN8-CONF16-rREP`, with
/// `-tATTEMPT` for a retry of a stored failure (a new id: the old one's answer is the
/// failure). Same inputs, same id, across restarts of `study run`.
pub fn job_id(plan_sha256: &str, config_hash: &str, repetition: u32, attempt: u32) -> String {
    let p = &plan_sha256[..plan_sha256.len().min(8)];
    let c = &config_hash[..config_hash.len().min(16)];
    if attempt == 0 {
        format!("st-{p}-{c}-r{repetition}")
    } else {
        format!("st-{p}-{c}-r{repetition}-t{attempt}")
    }
}

/// The job payload of one run: a synthetic prompt of exactly `prompt_tokens`, exactly
/// `gen_tokens` generated (`ignore_eos` + `max_tokens`), greedy, the plan's seed (every
/// repetition sees the same prompt), `warmup` unmeasured runs first. A quality run (the
/// plan's `[quality]`) is its quality job instead ([`super::quality::payload`]).
pub fn payload(id: &str, c: &Configuration, plan: &Plan, warmup: u32) -> Value {
    if let Some(q) = &c.quality {
        return super::quality::payload(id, c, q);
    }
    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    m.insert("model".into(), json!(c.model));
    m.insert("prompt_tokens".into(), json!(c.prompt_tokens));
    m.insert("max_tokens".into(), json!(c.gen_tokens));
    m.insert("ignore_eos".into(), json!(true));
    m.insert("temperature".into(), json!(0));
    m.insert("seed".into(), json!(plan.study.seed));
    m.insert("n_ctx".into(), json!(c.n_ctx));
    m.insert("n_gpu_layers".into(), json!(c.n_gpu_layers));
    m.insert("keep_alive_s".into(), json!(KEEP_ALIVE_S));
    if c.depth > 0 {
        m.insert("depth".into(), json!(c.depth));
    }
    if let Some(t) = c.threads {
        m.insert("threads".into(), json!(t));
        m.insert("threads_batch".into(), json!(t));
    }
    if let Some(b) = c.batch {
        m.insert("batch".into(), json!(b));
    }
    if let Some(p) = &c.power_mode {
        m.insert("power_mode".into(), json!(p));
    }
    if warmup > 0 {
        m.insert("warmup".into(), json!(warmup));
    }
    if let Some(c) = &plan.cooldown {
        m.insert("settle".into(), settle(c));
    }
    Value::Object(m)
}

/// The plan's `[cooldown]` as the job's `settle` field (the board's gate before the run).
pub fn settle(c: &super::plan::Cooldown) -> Value {
    let mut s = Map::new();
    if let Some(t) = c.max_temp_c {
        s.insert("max_temp_c".into(), json!(t));
    }
    if let Some(d) = c.delta_c {
        s.insert("delta_c".into(), json!(d));
    }
    s.insert("idle_rel".into(), json!(c.idle_rel));
    s.insert("settle_s".into(), json!(c.settle_s));
    s.insert("timeout_s".into(), json!(c.timeout_s));
    Value::Object(s)
}

/// Decode t/s of a result (`timings.decode_tps`).
pub fn decode_tps(result: &Value) -> Option<f64> {
    result["timings"]["decode_tps"]
        .as_f64()
        .filter(|v| v.is_finite())
}

/// Decode J/token of a result (`energy.j_per_token.decode`); `None` without sensors.
pub fn j_per_token(result: &Value) -> Option<f64> {
    result["energy"]["j_per_token"]["decode"]
        .as_f64()
        .filter(|v| v.is_finite())
}

/// The gate's wait before the run, ms (`settle.settle_ms`; 0 without a gate).
pub fn settle_ms(result: &Value) -> f64 {
    result["settle"]["settle_ms"].as_f64().unwrap_or(0.0)
}

/// `timings.total_ms` of a result.
pub fn total_ms(result: &Value) -> f64 {
    result["timings"]["total_ms"].as_f64().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::super::plan::parse;
    use super::*;
    use crate::infer::{GenerateOptions, PromptInput};
    use crate::jobs::protocol::{parse_job, Limits};

    fn plan() -> Plan {
        parse(
            "[study]\nname = \"t\"\nseed = 9\n[axes]\ndevice = [\"local\"]\nmodel = [\"m\"]\n\
             prompt_tokens = [32]\ngen_tokens = [16]\n",
        )
        .unwrap()
    }

    fn cfg() -> Configuration {
        Configuration {
            device: "local".into(),
            model: "m".into(),
            threads: Some(2),
            prompt_tokens: 32,
            gen_tokens: 16,
            depth: 64,
            n_ctx: 512,
            batch: Some(256),
            n_gpu_layers: 0,
            power_mode: None,
            quality: None,
        }
    }

    #[test]
    fn ids_are_deterministic_valid_and_distinct() {
        let a = job_id(&"a".repeat(64), &"b".repeat(64), 3, 0);
        assert_eq!(a, format!("st-aaaaaaaa-{}-r3", "b".repeat(16)));
        assert_eq!(a, job_id(&"a".repeat(64), &"b".repeat(64), 3, 0));
        assert_ne!(a, job_id(&"a".repeat(64), &"b".repeat(64), 3, 1));
        assert_ne!(a, job_id(&"a".repeat(64), &"b".repeat(64), 4, 0));
        assert!(crate::jobs::protocol::validate_id(&a).is_ok());
    }

    #[test]
    fn the_payload_is_a_valid_job_with_exact_lengths() {
        let id = job_id(&"a".repeat(64), &cfg().hash().0, 0, 0);
        let p = payload(&id, &cfg(), &plan(), 1);
        let job = parse_job(
            p.to_string().as_bytes(),
            &Limits::default(),
            &GenerateOptions::default(),
        )
        .unwrap();
        assert_eq!(job.id, id);
        assert_eq!(job.request.input, PromptInput::PromptTokens(32));
        let o = &job.request.options;
        assert_eq!(
            (o.max_tokens, o.ignore_eos, o.depth, o.n_ctx),
            (16, true, 64, 512)
        );
        assert_eq!(
            (o.threads, o.batch, o.seed, o.warmup),
            (Some(2), 256, Some(9), 1)
        );
        assert_eq!(o.temperature, 0.0);
        assert_eq!(job.settle, None);
    }

    #[test]
    fn the_cooldown_becomes_every_runs_settle_field() {
        let p = parse(
            "[study]\nname = \"t\"\n[axes]\ndevice = [\"local\"]\nmodel = [\"m\"]\n\
             prompt_tokens = [32]\ngen_tokens = [16]\n[cooldown]\nmax_temp_c = 70\nsettle_s = 1\n",
        )
        .unwrap();
        let v = payload("j", &cfg(), &p, 0);
        assert_eq!(
            v["settle"],
            json!({"max_temp_c": 70.0, "idle_rel": 0.1, "settle_s": 1.0, "timeout_s": 120.0})
        );
        let job = parse_job(
            v.to_string().as_bytes(),
            &Limits::default(),
            &GenerateOptions::default(),
        )
        .unwrap();
        let s = job.settle.unwrap();
        assert_eq!(
            (s.max_temp_c, s.delta_c, s.settle_s),
            (Some(70.0), None, 1.0)
        );
        assert_eq!(settle_ms(&json!({"settle": {"settle_ms": 1500.0}})), 1500.0);
        assert_eq!(settle_ms(&json!({})), 0.0);
    }

    #[test]
    fn figures_are_read_from_the_result_schema() {
        let r = json!({"timings": {"decode_tps": 120.5, "total_ms": 800.0},
                       "energy": {"j_per_token": {"decode": 0.04}}});
        assert_eq!(decode_tps(&r), Some(120.5));
        assert_eq!(j_per_token(&r), Some(0.04));
        assert_eq!(total_ms(&r), 800.0);
        let none = json!({"timings": {"decode_tps": 1.0}, "energy": null});
        assert_eq!(j_per_token(&none), None);
    }
}
