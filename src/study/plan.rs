//! The study plan (TOML, docs/study.md): `[study]`, `[axes]`, `[[include]]`,
//! `[[exclude]]`, `[cooldown]`, `[cost]`, `[quality]` (checked in [`super::quality`]). Parsing and validation only; the
//! configurations come from [`super::expand`]. Every error names the key and the value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::hex;

/// Axis names, in the order configurations are listed.
pub const AXES: &[&str] = &[
    "device",
    "model",
    "threads",
    "prompt_tokens",
    "gen_tokens",
    "depth",
    "n_ctx",
    "batch",
    "n_gpu_layers",
    "power_mode",
];

/// `n_ctx` when the plan leaves the axis out (the daemon's `inference.n_ctx` default).
pub const DEFAULT_N_CTX: u32 = 2048;

/// Why a plan was refused. Each variant has a stable [`PlanError::code`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read plan '{path}': {reason}")]
    Read { path: String, reason: String },
    #[error("plan is not valid TOML for a study: {reason}")]
    Syntax { reason: String },
    #[error("plan key '{key}' is invalid: '{value}' ({allowed})")]
    Invalid {
        key: String,
        value: String,
        allowed: String,
    },
    #[error("plan key '{key}' is an empty list; an axis needs at least one value")]
    EmptyAxis { key: String },
    #[error("plan key '{key}' is missing: {hint}")]
    Missing { key: String, hint: &'static str },
    #[error("plan expands to no configuration (every combination of [axes] and [[include]] is excluded)")]
    NoConfiguration,
}

impl PlanError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            PlanError::Read { .. } => "plan_unreadable",
            PlanError::Syntax { .. } => "plan_syntax",
            PlanError::Invalid { .. } => "plan_invalid",
            PlanError::EmptyAxis { .. } => "plan_empty_axis",
            PlanError::Missing { .. } => "plan_missing_key",
            PlanError::NoConfiguration => "plan_no_configuration",
        }
    }
}

pub(super) fn invalid(key: &str, value: impl ToString, allowed: impl ToString) -> PlanError {
    PlanError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
}

/// In which order a board runs its repetitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Repetitions of different configurations shuffled with the seed, one round of
    /// every configuration at a time, models kept together within a round: a slow
    /// drift of the board spreads over all configurations.
    #[default]
    Interleaved,
    /// llama-bench's fixed nesting: all repetitions of one configuration, then the next.
    Grouped,
}

/// `[study] repetitions`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repetitions {
    /// At least this many measured runs per configuration.
    pub min: u32,
    /// Never more than this many.
    pub max: u32,
    /// Stop early once the 95 % CI half-width of decode t/s and of J/token are both
    /// within this fraction of their means (0 = always run `max`).
    #[serde(default)]
    pub target_ci_rel: f64,
}

impl Default for Repetitions {
    fn default() -> Self {
        Repetitions {
            min: 3,
            max: 10,
            target_ci_rel: 0.05,
        }
    }
}

/// `[study]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySection {
    /// Study name: the database is `NAME.study.db` next to the plan.
    pub name: String,
    /// Seed of the synthetic prompts and of the interleaved order.
    #[serde(default)]
    pub seed: u32,
    /// Unmeasured warm-up runs of each configuration on each board (per `study run`).
    #[serde(default)]
    pub warmup: u32,
    /// Repetitions per configuration.
    #[serde(default)]
    pub repetitions: Repetitions,
    /// Run order on each board.
    #[serde(default)]
    pub order: Order,
}

/// `[axes]`, and each `[[include]]`/`[[exclude]]` table (the same keys, all optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxisValues {
    pub device: Option<Vec<String>>,
    pub model: Option<Vec<String>>,
    pub threads: Option<Vec<u32>>,
    pub prompt_tokens: Option<Vec<u32>>,
    pub gen_tokens: Option<Vec<u32>>,
    pub depth: Option<Vec<u32>>,
    pub n_ctx: Option<Vec<u32>>,
    pub batch: Option<Vec<u32>>,
    pub n_gpu_layers: Option<Vec<u32>>,
    pub power_mode: Option<Vec<String>>,
}

/// `[cooldown]`: the settle gate every measured run waits for on its board.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cooldown {
    /// Settled when the SoC temperature is at most this, °C …
    pub max_temp_c: Option<f64>,
    /// … or within this many °C of the board's idle temperature at the study's start.
    pub delta_c: Option<f64>,
    /// Total-rail power within this fraction of its idle baseline …
    #[serde(default = "default_idle_rel")]
    pub idle_rel: f64,
    /// … for this long, s.
    #[serde(default = "default_settle_s")]
    pub settle_s: f64,
    /// Give up waiting after this long, s (the run then starts flagged `not_settled`).
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
}

fn default_idle_rel() -> f64 {
    0.1
}
fn default_settle_s() -> f64 {
    2.0
}
fn default_timeout_s() -> f64 {
    120.0
}

/// `[cost]`: parsed and validated here; the report computes with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cost {
    /// Electricity price per kWh, in `currency`.
    pub energy_price_per_kwh: f64,
    /// Currency code or symbol, e.g. "EUR".
    pub currency: String,
    /// Board purchase price (amortized over `board_lifetime_h`).
    pub board_price: Option<f64>,
    /// Hours the board is expected to serve.
    pub board_lifetime_h: Option<f64>,
    /// Fraction of the lifetime the board does work (0 < u ≤ 1).
    pub utilization: Option<f64>,
    /// A cloud API's price per million generated tokens, to compare against.
    pub cloud_price_per_mtok: Option<f64>,
}

/// A parsed, validated plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub study: StudySection,
    pub axes: AxisValues,
    #[serde(default)]
    pub include: Vec<AxisValues>,
    #[serde(default)]
    pub exclude: Vec<AxisValues>,
    pub cooldown: Option<Cooldown>,
    pub cost: Option<Cost>,
    /// `[quality]`: each model scored once per board (docs/study.md).
    #[serde(default)]
    pub quality: Option<super::quality::QualitySection>,
}

/// The plan's text, its sha256, and the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedPlan {
    pub text: String,
    pub sha256: String,
    pub plan: Plan,
}

/// Reads and validates a plan file.
pub fn load(path: &std::path::Path) -> Result<LoadedPlan, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|e| PlanError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let plan = parse(&text)?;
    Ok(LoadedPlan {
        sha256: hex(&Sha256::digest(text.as_bytes())),
        text,
        plan,
    })
}

/// Parses and validates a plan's text.
pub fn parse(text: &str) -> Result<Plan, PlanError> {
    let plan: Plan = toml::from_str(text).map_err(|e| PlanError::Syntax {
        // toml's message names the key and shows the offending line; one line here.
        reason: e.to_string().trim().replace('\n', " ").replace("  ", " "),
    })?;
    validate(&plan)?;
    Ok(plan)
}

fn check_name(key: &str, v: &str) -> Result<(), PlanError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(key, v, "1-64 characters of [A-Za-z0-9._-]"))
    }
}

fn check_range(key: &str, v: u32, lo: u32, hi: u32) -> Result<(), PlanError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(invalid(key, v, format!("{lo}..={hi}")))
    }
}

fn check_f(key: &str, v: f64, lo: f64, hi: f64) -> Result<(), PlanError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(invalid(key, v, format!("{lo}..={hi}")))
    }
}

/// Checks one set of axis values (`[axes]`, an include or an exclude) key by key.
fn validate_values(section: &str, a: &AxisValues, empty_ok: bool) -> Result<(), PlanError> {
    let key = |k: &str| format!("{section}.{k}");
    let nonempty = |k: &str, len: Option<usize>| match len {
        Some(0) if !empty_ok => Err(PlanError::EmptyAxis { key: key(k) }),
        _ => Ok(()),
    };
    nonempty("device", a.device.as_ref().map(Vec::len))?;
    nonempty("model", a.model.as_ref().map(Vec::len))?;
    nonempty("threads", a.threads.as_ref().map(Vec::len))?;
    nonempty("prompt_tokens", a.prompt_tokens.as_ref().map(Vec::len))?;
    nonempty("gen_tokens", a.gen_tokens.as_ref().map(Vec::len))?;
    nonempty("depth", a.depth.as_ref().map(Vec::len))?;
    nonempty("n_ctx", a.n_ctx.as_ref().map(Vec::len))?;
    nonempty("batch", a.batch.as_ref().map(Vec::len))?;
    nonempty("n_gpu_layers", a.n_gpu_layers.as_ref().map(Vec::len))?;
    nonempty("power_mode", a.power_mode.as_ref().map(Vec::len))?;
    for d in a.device.iter().flatten() {
        check_name(&key("device"), d)?;
    }
    for m in a.model.iter().flatten() {
        if m.is_empty() || m.contains('/') || m.contains('\\') || m.contains("..") {
            return Err(invalid(
                &key("model"),
                m,
                "a model name (file stem of a .gguf; no '/', '\\' or '..')",
            ));
        }
    }
    for p in a.power_mode.iter().flatten() {
        check_name(&key("power_mode"), p)?;
    }
    for &v in a.threads.iter().flatten() {
        check_range(&key("threads"), v, 1, 1024)?;
    }
    for &v in a.prompt_tokens.iter().flatten() {
        check_range(&key("prompt_tokens"), v, 1, 131_072)?;
    }
    for &v in a.gen_tokens.iter().flatten() {
        check_range(&key("gen_tokens"), v, 1, 131_072)?;
    }
    for &v in a.depth.iter().flatten() {
        check_range(&key("depth"), v, 0, 131_072)?;
    }
    for &v in a.n_ctx.iter().flatten() {
        check_range(&key("n_ctx"), v, 16, 131_072)?;
    }
    for &v in a.batch.iter().flatten() {
        check_range(&key("batch"), v, 1, 8192)?;
    }
    for &v in a.n_gpu_layers.iter().flatten() {
        check_range(&key("n_gpu_layers"), v, 0, 1000)?;
    }
    Ok(())
}

fn validate(p: &Plan) -> Result<(), PlanError> {
    check_name("study.name", &p.study.name)?;
    let r = &p.study.repetitions;
    check_range("study.repetitions.min", r.min, 1, 1000)?;
    check_range("study.repetitions.max", r.max, r.min, 1000).map_err(|_| {
        invalid(
            "study.repetitions.max",
            r.max,
            format!("{}..=1000 (at least repetitions.min)", r.min),
        )
    })?;
    check_f("study.repetitions.target_ci_rel", r.target_ci_rel, 0.0, 1.0)?;
    check_range("study.warmup", p.study.warmup, 0, 100)?;

    validate_values("axes", &p.axes, false)?;
    for (key, hint) in [
        (
            "device",
            "list the boards, e.g. device = [\"local\"] or the daemons' device ids",
        ),
        (
            "model",
            "list the models, e.g. model = [\"SmolLM2-135M-Instruct.Q4_1\"]",
        ),
        (
            "prompt_tokens",
            "list the synthetic prompt lengths, e.g. prompt_tokens = [128]",
        ),
        (
            "gen_tokens",
            "list the generated lengths, e.g. gen_tokens = [64]",
        ),
    ] {
        let present = match key {
            "device" => p.axes.device.is_some(),
            "model" => p.axes.model.is_some(),
            "prompt_tokens" => p.axes.prompt_tokens.is_some(),
            _ => p.axes.gen_tokens.is_some(),
        };
        if !present {
            return Err(PlanError::Missing {
                key: format!("axes.{key}"),
                hint,
            });
        }
    }
    for (i, inc) in p.include.iter().enumerate() {
        validate_values(&format!("include[{i}]"), inc, false)?;
    }
    for (i, exc) in p.exclude.iter().enumerate() {
        validate_values(&format!("exclude[{i}]"), exc, false)?;
        if exc == &AxisValues::default() {
            return Err(invalid(
                &format!("exclude[{i}]"),
                "{}",
                "at least one axis key (an empty exclude would remove everything)",
            ));
        }
    }
    if let Some(c) = &p.cooldown {
        if let Some(t) = c.max_temp_c {
            check_f("cooldown.max_temp_c", t, -40.0, 150.0)?;
        }
        if let Some(d) = c.delta_c {
            check_f("cooldown.delta_c", d, 0.0, 100.0)?;
        }
        check_f("cooldown.idle_rel", c.idle_rel, 0.0, 10.0)?;
        check_f("cooldown.settle_s", c.settle_s, 0.0, 3600.0)?;
        check_f("cooldown.timeout_s", c.timeout_s, 0.0, 86_400.0)?;
    }
    if let Some(c) = &p.cost {
        check_f(
            "cost.energy_price_per_kwh",
            c.energy_price_per_kwh,
            0.0,
            1e6,
        )?;
        if c.currency.trim().is_empty() || c.currency.len() > 8 {
            return Err(invalid(
                "cost.currency",
                &c.currency,
                "1-8 characters, e.g. \"EUR\"",
            ));
        }
        if let Some(v) = c.board_price {
            check_f("cost.board_price", v, 0.0, 1e9)?;
        }
        if let Some(v) = c.board_lifetime_h {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid("cost.board_lifetime_h", v, "hours > 0"));
            }
        }
        if c.board_price.is_some() != c.board_lifetime_h.is_some() {
            let (key, value) = if c.board_price.is_some() {
                ("cost.board_lifetime_h", "missing")
            } else {
                ("cost.board_price", "missing")
            };
            return Err(invalid(
                key,
                value,
                "board_price and board_lifetime_h go together (the board is amortized over its lifetime)",
            ));
        }
        if let Some(u) = c.utilization {
            if !(u.is_finite() && u > 0.0 && u <= 1.0) {
                return Err(invalid("cost.utilization", u, "0 < u <= 1"));
            }
        }
        if let Some(v) = c.cloud_price_per_mtok {
            check_f("cost.cloud_price_per_mtok", v, 0.0, 1e9)?;
        }
    }
    super::quality::validate(p)
}

/// The axis values as strings by axis name (for messages and the dry run).
pub fn describe(a: &AxisValues) -> BTreeMap<&'static str, String> {
    fn list<T: ToString>(v: &Option<Vec<T>>) -> Option<String> {
        v.as_ref()
            .map(|v| v.iter().map(T::to_string).collect::<Vec<_>>().join(", "))
    }
    let mut m = BTreeMap::new();
    let entries = [
        ("device", list(&a.device)),
        ("model", list(&a.model)),
        ("threads", list(&a.threads)),
        ("prompt_tokens", list(&a.prompt_tokens)),
        ("gen_tokens", list(&a.gen_tokens)),
        ("depth", list(&a.depth)),
        ("n_ctx", list(&a.n_ctx)),
        ("batch", list(&a.batch)),
        ("n_gpu_layers", list(&a.n_gpu_layers)),
        ("power_mode", list(&a.power_mode)),
    ];
    for (k, v) in entries {
        if let Some(v) = v {
            m.insert(k, v);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"
[study]
name = "t"
seed = 3
warmup = 1
repetitions = { min = 2, max = 4, target_ci_rel = 0.05 }
order = "interleaved"

[axes]
device = ["a", "b"]
model = ["m1", "m2"]
threads = [1, 2]
prompt_tokens = [32, 128]
gen_tokens = [32]

[[include]]
device = ["b"]
n_gpu_layers = [99]

[[exclude]]
model = ["m2"]
threads = [1]

[cooldown]
max_temp_c = 60
delta_c = 5
idle_rel = 0.1
settle_s = 2
timeout_s = 60

[cost]
energy_price_per_kwh = 0.3
currency = "EUR"
board_price = 80
board_lifetime_h = 26280
utilization = 0.5
cloud_price_per_mtok = 0.6
"#;

    fn err(text: &str) -> PlanError {
        parse(text).unwrap_err()
    }

    fn with(replace: &str, by: &str) -> String {
        assert!(EXAMPLE.contains(replace), "{replace}");
        EXAMPLE.replace(replace, by)
    }

    #[test]
    fn the_example_parses_with_every_section() {
        let p = parse(EXAMPLE).unwrap();
        assert_eq!(p.study.name, "t");
        assert_eq!(p.study.repetitions.max, 4);
        assert_eq!(p.study.order, Order::Interleaved);
        assert_eq!(p.axes.threads, Some(vec![1, 2]));
        assert_eq!(p.include.len(), 1);
        assert_eq!(p.exclude.len(), 1);
        assert_eq!(p.cooldown.unwrap().max_temp_c, Some(60.0));
        assert_eq!(p.cost.unwrap().currency, "EUR");
    }

    #[test]
    fn each_plan_error_names_the_key_and_the_value() {
        let cases = [
            (
                with("threads = [1, 2]", "threads = [1, 0]"),
                "plan_invalid",
                "axes.threads",
                "'0'",
            ),
            (
                with("threads = [1, 2]", "threads = []"),
                "plan_empty_axis",
                "axes.threads",
                "",
            ),
            (
                with("device = [\"a\", \"b\"]\n", ""),
                "plan_missing_key",
                "axes.device",
                "",
            ),
            (
                with("min = 2, max = 4", "min = 5, max = 4"),
                "plan_invalid",
                "study.repetitions.max",
                "'4'",
            ),
            (
                with("order = \"interleaved\"", "order = \"random\""),
                "plan_syntax",
                "random",
                "",
            ),
            (
                with("name = \"t\"", "name = \"a b\""),
                "plan_invalid",
                "study.name",
                "'a b'",
            ),
            (
                with("threads = [1, 2]", "thread = [1, 2]"),
                "plan_syntax",
                "thread",
                "",
            ),
            (
                with("model = [\"m1\", \"m2\"]", "model = [\"../x\"]"),
                "plan_invalid",
                "axes.model",
                "'../x'",
            ),
            (
                with("utilization = 0.5", "utilization = 1.5"),
                "plan_invalid",
                "cost.utilization",
                "'1.5'",
            ),
            (
                with("board_lifetime_h = 26280\n", ""),
                "plan_invalid",
                "cost.board_lifetime_h",
                "",
            ),
            (
                with("settle_s = 2", "settle_s = -1"),
                "plan_invalid",
                "cooldown.settle_s",
                "'-1'",
            ),
            (
                with("currency = \"EUR\"", "currency = \"\""),
                "plan_invalid",
                "cost.currency",
                "",
            ),
            (
                with("n_gpu_layers = [99]", "n_gpu_layers = [\"x\"]"),
                "plan_syntax",
                "n_gpu_layers",
                "",
            ),
        ];
        for (text, code, key, value) in cases {
            let e = err(&text);
            let msg = e.to_string();
            assert_eq!(e.code(), code, "{msg}");
            assert!(msg.contains(key), "{msg} should name {key}");
            assert!(msg.contains(value), "{msg} should name {value}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn an_empty_exclude_is_refused() {
        let e = err(&with("model = [\"m2\"]\nthreads = [1]\n", ""));
        assert!(e.to_string().contains("exclude[0]"), "{e}");
    }
}
