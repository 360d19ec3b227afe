//! Report tests on real results: the fixtures in tests/fixtures/study are result
//! JSONs captured from `edgewatt generate --json --trace` on SmolLM2-135M with the
//! simulated INA219 of scripts/demo.sh (boards `sim-a` and `sim-b`, two power
//! profiles), 24 generated tokens, threads {1, 2}, n_ctx {512, 2048}.

use std::path::Path;

use serde_json::Value;

use super::*;
use crate::infer::registry::{resolve, ModelNameError};
use crate::infer::EngineError;
use crate::jobs::protocol::ErrorBody;
use crate::study::cost::CostConfig;

fn fixture(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/study")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn cfg_of(result: &Value, device: &str) -> Configuration {
    Configuration {
        device: device.into(),
        model: result["model"]["name"].as_str().unwrap().into(),
        threads: result["params"]["threads"].as_u64().map(|t| t as u32),
        prompt_tokens: result["tokens"]["prompt"].as_u64().unwrap() as u32,
        gen_tokens: 24,
        depth: 0,
        n_ctx: result["params"]["n_ctx"].as_u64().unwrap() as u32,
        batch: None,
        n_gpu_layers: 0,
        power_mode: None,
        quality: None,
    }
}

fn stored(name: &str, device: &str, rep: u32) -> StoredRun {
    let result = fixture(name);
    let configuration = cfg_of(&result, device);
    StoredRun {
        config_hash: configuration.hash(),
        configuration,
        repetition: rep,
        job_id: result["id"].as_str().unwrap().into(),
        stored_unix_ns: result["finished_unix_ns"].as_u64().unwrap(),
        result: Some(result),
        error: None,
    }
}

/// Every fixture run, as a study would store them.
pub(crate) fn runs() -> Vec<StoredRun> {
    let mut v = Vec::new();
    for t in [1, 2] {
        for c in [512, 2048] {
            for r in 0..3 {
                v.push(stored(&format!("run_t{t}_c{c}_r{r}.json"), "sim-a", r));
            }
        }
        for r in 0..3 {
            v.push(stored(&format!("runb_t{t}_c512_r{r}.json"), "sim-b", r));
        }
    }
    v
}

fn cost() -> CostConfig {
    CostConfig {
        energy_price_per_kwh: 0.30,
        currency: "EUR".into(),
        board_price: Some(80.0),
        board_lifetime_h: Some(20_000.0),
        utilization: 0.5,
        cloud_price_per_mtok: Some(0.60),
    }
}

fn meta() -> StudyMeta {
    StudyMeta {
        name: "fixtures".into(),
        plan_sha256: "0".repeat(64),
        cost: Some(cost()),
        board_status: Default::default(),
    }
}

/// A failed run as the engine reports a model missing on a board.
fn missing_model_run() -> StoredRun {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let e: ModelNameError = resolve(&dir, "NoSuchModel").unwrap_err();
    let e = EngineError::ModelName(e);
    let configuration = Configuration {
        model: "NoSuchModel".into(),
        ..runs()[0].configuration.clone()
    };
    StoredRun {
        config_hash: configuration.hash(),
        configuration,
        repetition: 0,
        job_id: "missing-0".into(),
        result: None,
        error: Some(ErrorBody {
            code: e.code().into(),
            message: e.to_string(),
        }),
        stored_unix_ns: 1,
    }
}

#[test]
fn one_row_per_configuration_with_every_run() {
    let rs = runs();
    let rep = build(&meta(), &rs);
    assert_eq!(rep.runs, 18);
    assert_eq!(rep.configurations.len(), 6);
    assert_eq!(rep.study.boards, vec!["sim-a", "sim-b"]);
    assert!(rep.study.simulated);
    for c in &rep.configurations {
        assert_eq!(c.n, 3, "{:?}", c.config);
        assert_eq!(c.config.quant.as_deref(), Some("Q4_1"));
        assert!(c.flags.contains(&"simulated".to_string()));
        assert_eq!(c.metrics["generated_tokens"].mean, 24.0);
        assert_eq!(c.metrics["decode_tps"].n, 3);
        assert!(c.cost.is_some() && c.load_cold_ms.is_some());
        assert!(c.errors.is_empty());
    }
}

#[test]
fn cold_load_is_the_first_disk_load_on_the_board() {
    let rs = runs();
    let rep = build(&meta(), &rs);
    for c in &rep.configurations {
        let first = rs
            .iter()
            .filter(|r| r.configuration.device == c.config.device)
            .filter_map(|r| r.result.as_ref())
            .min_by_key(|r| r["started_unix_ns"].as_u64().unwrap())
            .unwrap();
        assert_eq!(c.load_cold_ms, first["timings"]["load_ms"].as_f64());
    }
}

#[test]
fn pooled_decode_rate_is_tokens_over_time() {
    let rs = runs();
    let rep = build(&meta(), &rs);
    let c = &rep.configurations[0];
    let mine: Vec<&Value> = rs
        .iter()
        .filter(|r| r.config_hash == c.config_hash)
        .filter_map(|r| r.result.as_ref())
        .collect();
    let tokens: f64 = mine
        .iter()
        .map(|r| r["tokens"]["generated"].as_f64().unwrap() - 1.0)
        .sum();
    let secs: f64 = mine
        .iter()
        .map(|r| r["timings"]["decode_ms"].as_f64().unwrap() / 1e3)
        .sum();
    assert!((c.decode_tps_pooled.unwrap() - tokens / secs).abs() < 1e-9);
}

#[test]
fn failed_run_is_a_row_with_its_error() {
    let mut rs = runs();
    rs.push(missing_model_run());
    let rep = build(&meta(), &rs);
    assert_eq!(rep.configurations.len(), 7);
    let bad = rep
        .configurations
        .iter()
        .find(|c| c.config.model == "NoSuchModel")
        .unwrap();
    assert_eq!(bad.n, 0);
    assert!(bad.metrics.is_empty());
    assert_eq!(bad.errors[0].code, "model_not_found");
    assert!(bad.errors[0].message.contains("NoSuchModel"));
    assert!(bad.flags.contains(&"failed_runs".to_string()));
    let md = table::markdown(&rep);
    assert!(md.contains("## Failed runs") && md.contains("model_not_found"));
    let csv = csv::to_csv(&rep);
    assert_eq!(csv.lines().count(), 8);
    assert!(csv
        .lines()
        .any(|l| l.contains("NoSuchModel") && l.ends_with("model_not_found")));
}

#[test]
fn validity_flags_follow_the_results() {
    let mut rs = runs();
    let r = rs[0].result.as_mut().unwrap();
    r["thermal"]["throttled"] = Value::Bool(true);
    r["settle"] = serde_json::json!({"settle_ms": 1200, "temp_c_start": 61.5, "settled": false});
    r["energy"]["incomplete"]["decode"] = Value::Bool(true);
    r["energy"]["duration_s"]["prefill"] = serde_json::json!(0.001);
    let rep = build(&meta(), &rs);
    let c = rep
        .configurations
        .iter()
        .find(|c| c.config_hash == rs[0].config_hash)
        .unwrap();
    for f in [
        "throttled",
        "not_settled",
        "incomplete",
        "few_samples:prefill",
    ] {
        assert!(c.flags.contains(&f.to_string()), "{f}: {:?}", c.flags);
    }
    assert_eq!(c.metrics["settle_ms"].n, 1);
    // The other configurations are untouched.
    let other = rep
        .configurations
        .iter()
        .find(|c| c.config_hash != rs[0].config_hash)
        .unwrap();
    assert!(!other
        .flags
        .iter()
        .any(|f| f == "throttled" || f == "not_settled"));
}

#[test]
fn quality_and_power_mode_columns_appear_when_results_carry_them() {
    let mut rs = runs();
    let base = build(&meta(), &rs);
    let (h, _) = table::main_table(&base);
    assert!(!h.contains(&"perplexity") && !h.contains(&"power mode"));
    for (i, r) in rs.iter_mut().enumerate() {
        let res = r.result.as_mut().unwrap();
        res["quality"] = serde_json::json!({"ppl": 18.0 + (i % 3) as f64 * 0.1, "ppl_stderr": 0.4, "kld_mean": 0.02});
        res["power_mode"] = serde_json::json!({"name": "MAXN"});
    }
    let rep = build(&meta(), &rs);
    let (h, rows) = table::main_table(&rep);
    assert!(h.contains(&"perplexity") && h.contains(&"KLD") && h.contains(&"power mode"));
    let col = h.iter().position(|c| *c == "power mode").unwrap();
    assert!(rows.iter().all(|r| r[col] == "MAXN"));
    let figs = figures::all(&rep).unwrap();
    assert!(figs.iter().any(|f| f.name == "quality"));
    assert!(figures::all(&base)
        .unwrap()
        .iter()
        .all(|f| f.name != "quality"));
}

#[test]
fn compare_marks_only_significant_differences_beyond_threshold() {
    let rs = runs();
    let a = build(&meta(), &rs);
    // B: the same runs with decode 20 % faster (times shortened), J/token unchanged.
    let mut faster = rs.clone();
    for r in &mut faster {
        let res = r.result.as_mut().unwrap();
        let tps = res["timings"]["decode_tps"].as_f64().unwrap();
        res["timings"]["decode_tps"] = serde_json::json!(tps * 1.2);
    }
    let b = build(
        &StudyMeta {
            name: "b".into(),
            ..meta()
        },
        &faster,
    );
    let cmp = compare::compare(&a, &b, 0.02);
    assert_eq!(cmp.matched.len(), 6);
    for d in &cmp.matched {
        let dec = d.metrics.iter().find(|m| m.metric == "decode_tps").unwrap();
        assert!((dec.ratio.unwrap() - 1.2).abs() < 1e-12);
        let j = d
            .metrics
            .iter()
            .find(|m| m.metric == "j_per_token_decode")
            .unwrap();
        assert_eq!(j.ratio, Some(1.0));
        assert!(!j.significant);
        // Significance needs p < 0.05: with three runs a side and this spread it is
        // what Welch says, recomputed here.
        let p = crate::study::stats::welch(
            &a.configurations
                .iter()
                .find(|c| c.config.device == d.config.device && c.config == d.config)
                .unwrap()
                .values["decode_tps"],
            &b.configurations
                .iter()
                .find(|c| c.config == d.config)
                .unwrap()
                .values["decode_tps"],
        )
        .map(|x| x.2);
        assert_eq!(dec.p, p);
        assert_eq!(dec.significant, p.unwrap() < 0.05);
    }
    // Against itself nothing is significant.
    let same = compare::compare(&a, &a, 0.02);
    assert!(same
        .matched
        .iter()
        .flat_map(|d| &d.metrics)
        .all(|m| !m.significant));
    assert!(compare::markdown(&cmp).contains("decode_tps"));
}

#[test]
fn the_recorded_power_mode_is_shown_beside_its_name() {
    let rec = serde_json::json!({"name": "eco", "nvpmodel": {"id": 3, "name": "7W"},
        "cpufreq": [{"policy": 0, "governor": "powersave", "max_khz": 1500000},
                    {"policy": 4, "governor": "powersave", "max_khz": 1500000},
                    {"policy": 6, "governor": "performance"}]});
    assert_eq!(
        table::recorded_summary(&rec).as_deref(),
        Some("nvpmodel 7W, powersave ≤1.50 GHz / performance")
    );
    assert_eq!(table::recorded_summary(&serde_json::json!({})), None);
    let mut rs = runs();
    for r in rs.iter_mut() {
        r.result.as_mut().unwrap()["power_mode"] = rec.clone();
    }
    let rep = build(&meta(), &rs);
    let (h, rows) = table::main_table(&rep);
    let col = h.iter().position(|c| *c == "power mode").unwrap();
    assert!(
        rows.iter()
            .all(|r| r[col] == "eco (nvpmodel 7W, powersave ≤1.50 GHz / performance)"),
        "{rows:?}"
    );
}
