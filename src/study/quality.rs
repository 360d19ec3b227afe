//! The plan's `[quality]` section (docs/study.md): each model of the plan is scored
//! once per board on a text, as a `kind = "perplexity"` job, or `kind = "kld"` against
//! the reference the plan maps it to. Parsing, validation, the quality runs as
//! configurations (stored and resumed like any run), their job payloads and a rough
//! duration for the dry run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::config::Configuration;
use super::plan::{invalid, Plan, PlanError};
use crate::quality::{DEFAULT_N_CTX, MIN_N_CTX};

/// Largest `n_ctx` a plan may ask for (the axes' bound).
pub const MAX_N_CTX: u32 = 131_072;
/// Token count the dry run assumes for a text it cannot read (about `licenses`).
const UNKNOWN_TEXT_TOKENS: f64 = 60_000.0;

/// `[quality]` as written in the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualitySection {
    /// Text name: `NAME.txt` in the board's `[quality] texts_dir`, or the built-in `licenses`.
    #[serde(default = "default_text")]
    pub text: String,
    /// Tokens per scored chunk (llama-perplexity's `-c`).
    #[serde(default = "default_n_ctx")]
    pub n_ctx: u32,
    /// Score at most this many chunks (default: every whole chunk of the text).
    #[serde(default)]
    pub max_chunks: Option<u32>,
    /// Model → reference model: that model is scored as `kind = "kld"` against its
    /// reference (same vocabulary), every other model as `kind = "perplexity"`.
    #[serde(default)]
    pub reference: BTreeMap<String, String>,
}

fn default_text() -> String {
    crate::quality::text::LICENSES.to_string()
}
fn default_n_ctx() -> u32 {
    DEFAULT_N_CTX
}

/// What a quality run scores: the part of its [`Configuration`] that makes it one
/// (its hash covers it, so a changed `[quality]` is a new run and the old one stays).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QualityRun {
    /// `perplexity` or `kld`.
    pub kind: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chunks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Every model a plan names (`[axes]` and each `[[include]]`).
pub fn plan_models(plan: &Plan) -> BTreeSet<&str> {
    plan.axes
        .model
        .iter()
        .chain(plan.include.iter().filter_map(|i| i.model.as_ref()))
        .flatten()
        .map(String::as_str)
        .collect()
}

/// Checks `[quality]`: a plain text name, `n_ctx` in range, `max_chunks` ≥ 1, and
/// each reference keyed by a model of the plan and naming another model (whether the
/// reference exists on a board is [`check_references`]' part).
pub fn validate(plan: &Plan) -> Result<(), PlanError> {
    let Some(q) = &plan.quality else {
        return Ok(());
    };
    crate::infer::registry::validate_name(&q.text).map_err(|_| {
        invalid(
            "quality.text",
            &q.text,
            "a text name: \"licenses\" or the stem of a .txt in the board's texts_dir (no '/', '\\' or '..')",
        )
    })?;
    if !(MIN_N_CTX..=MAX_N_CTX).contains(&q.n_ctx) {
        return Err(invalid(
            "quality.n_ctx",
            q.n_ctx,
            format!("{MIN_N_CTX}..={MAX_N_CTX}"),
        ));
    }
    if let Some(m) = q.max_chunks {
        if !(1..=1_000_000).contains(&m) {
            return Err(invalid("quality.max_chunks", m, "1..=1000000"));
        }
    }
    let models = plan_models(plan);
    for (model, reference) in &q.reference {
        let key = format!("quality.reference.\"{model}\"");
        if !models.contains(model.as_str()) {
            let have: Vec<&str> = models.iter().copied().collect();
            return Err(invalid(
                "quality.reference",
                model,
                format!("a model of the plan: {}", have.join(", ")),
            ));
        }
        if crate::infer::registry::validate_name(reference).is_err() {
            return Err(invalid(
                &key,
                reference,
                "a model name (file stem of a .gguf; no '/', '\\' or '..')",
            ));
        }
        if reference == model {
            return Err(invalid(
                &key,
                reference,
                "another model (a model against itself has KLD 0)",
            ));
        }
    }
    Ok(())
}

/// The quality runs of a plan: one per board × model of its configurations, in the
/// order they first appear. Board defaults for threads, batch, offload and power mode.
pub fn quality_runs(plan: &Plan, cfgs: &[Configuration]) -> Vec<Configuration> {
    let Some(q) = &plan.quality else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for c in cfgs.iter().filter(|c| c.quality.is_none()) {
        if !seen.insert((c.device.clone(), c.model.clone())) {
            continue;
        }
        let reference = q.reference.get(&c.model).cloned();
        out.push(Configuration {
            device: c.device.clone(),
            model: c.model.clone(),
            threads: None,
            prompt_tokens: 0,
            gen_tokens: 0,
            depth: 0,
            n_ctx: q.n_ctx,
            batch: None,
            n_gpu_layers: 0,
            power_mode: None,
            quality: Some(QualityRun {
                kind: if reference.is_some() {
                    "kld"
                } else {
                    "perplexity"
                }
                .into(),
                text: q.text.clone(),
                max_chunks: q.max_chunks,
                reference,
            }),
        });
    }
    out
}

/// The job of a quality run (docs/protocol.md, quality jobs).
pub fn payload(id: &str, c: &Configuration, q: &QualityRun) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    m.insert("kind".into(), json!(q.kind));
    m.insert("model".into(), json!(c.model));
    m.insert("text".into(), json!(q.text));
    m.insert("n_ctx".into(), json!(c.n_ctx));
    m.insert("keep_alive_s".into(), json!(super::job::KEEP_ALIVE_S));
    if let Some(n) = q.max_chunks {
        m.insert("max_chunks".into(), json!(n));
    }
    if let Some(r) = &q.reference {
        m.insert("reference".into(), json!(r));
    }
    if let Some(t) = c.threads {
        m.insert("threads".into(), json!(t));
    }
    Value::Object(m)
}

/// Checks each quality run's reference against its board's model list (the plan's
/// models are checked as any configuration's); with `model_dir` (this machine), also
/// that model and reference share a vocabulary (GGUF `tokenizer.ggml.tokens` length).
pub fn check_references(
    runs: &[Configuration],
    boards: &[(String, Value)],
    model_dir: Option<&Path>,
) -> Result<(), PlanError> {
    for c in runs {
        let Some(reference) = c.quality.as_ref().and_then(|q| q.reference.as_ref()) else {
            continue;
        };
        let key = format!("quality.reference.\"{}\"", c.model);
        let status = boards.iter().find(|(d, _)| *d == c.device).map(|b| &b.1);
        if let Some(models) = status.and_then(|s| s["models"].as_array()) {
            if !models
                .iter()
                .any(|m| m.as_str() == Some(reference.as_str()))
            {
                let have: Vec<&str> = models.iter().filter_map(Value::as_str).collect();
                return Err(invalid(
                    &key,
                    reference,
                    format!("a model board '{}' has: {}", c.device, have.join(", ")),
                ));
            }
        }
        let Some(dir) = model_dir else { continue };
        let vocab = |m: &str| {
            crate::infer::gguf::read_info(&dir.join(format!("{m}.gguf")))
                .ok()
                .and_then(|i| i.vocab_size())
        };
        if let (Some(a), Some(b)) = (vocab(&c.model), vocab(reference)) {
            if a != b {
                return Err(invalid(
                    &key,
                    reference,
                    format!(
                        "a model with the same vocabulary as '{}' ({a} tokens; '{reference}' has {b})",
                        c.model
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// With `--local`: the plan's text resolves in this machine's `texts_dir` (or is the
/// built-in one and its files are there).
pub fn check_text(plan: &Plan, texts_dir: &Path) -> Result<(), PlanError> {
    let Some(q) = &plan.quality else {
        return Ok(());
    };
    crate::quality::text::resolve(texts_dir, &q.text)
        .map(|_| ())
        .map_err(|e| {
            invalid(
                "quality.text",
                &q.text,
                format!("a text this machine has: {e}"),
            )
        })
}

/// A rough duration of a quality run for the dry run, s: its tokens (`max_chunks` ×
/// `n_ctx`, else the text's bytes ÷ 4 when this machine has it) at scoring speed
/// (every weight read once per ~5 tokens at ~5 GB/s: ~250 tokens/s for SmolLM2 on two
/// x86 cores, as measured), twice for a KLD (both models score), plus a load.
pub fn eta_s(c: &Configuration, q: &QualityRun, model_dir: &Path, texts_dir: &Path) -> f64 {
    let tokens = match q.max_chunks {
        Some(n) => f64::from(n) * f64::from(c.n_ctx),
        None => crate::quality::text::resolve(texts_dir, &q.text)
            .map(|t| t.bytes.len() as f64 / 4.0)
            .unwrap_or(UNKNOWN_TEXT_TOKENS),
    };
    let size = |m: &str| {
        std::fs::metadata(model_dir.join(format!("{m}.gguf")))
            .map(|m| m.len() as f64)
            .unwrap_or(500e6)
    };
    let mut bytes = size(&c.model);
    if let Some(r) = &q.reference {
        bytes += size(r);
    }
    tokens * bytes / 5e9 / 5.0 + 0.5
}

#[cfg(test)]
mod tests {
    use super::super::plan::parse;
    use super::*;

    const BASE: &str = "[study]\nname = \"q\"\n[axes]\ndevice = [\"a\", \"b\"]\n\
        model = [\"m1\", \"m2\"]\nthreads = [1, 2]\nprompt_tokens = [32]\ngen_tokens = [16]\nn_ctx = [128]\n";

    fn with(quality: &str) -> String {
        format!("{BASE}[quality]\n{quality}")
    }

    #[test]
    fn defaults_and_one_run_per_board_and_model() {
        let p = parse(&with("")).unwrap();
        let q = p.quality.as_ref().unwrap();
        assert_eq!(
            (q.text.as_str(), q.n_ctx, q.max_chunks),
            ("licenses", 512, None)
        );
        let cfgs = super::super::expand::expand(&p).unwrap();
        let runs = quality_runs(&p, &cfgs);
        assert_eq!(runs.len(), 4, "2 boards × 2 models");
        assert!(runs
            .iter()
            .all(|r| r.quality.as_ref().unwrap().kind == "perplexity"));
        let hashes: BTreeSet<_> = runs.iter().chain(&cfgs).map(Configuration::hash).collect();
        assert_eq!(hashes.len(), runs.len() + cfgs.len());
        // Without [quality] there is none, and the plan's other hashes do not change.
        let plain = parse(BASE).unwrap();
        assert!(quality_runs(&plain, &cfgs).is_empty());
        assert_eq!(
            super::super::expand::expand(&plain).unwrap()[0].hash(),
            cfgs[0].hash()
        );
    }

    #[test]
    fn a_reference_makes_a_kld_run_and_the_payload_is_a_valid_quality_job() {
        let p = parse(&with(
            "text = \"wiki\"\nn_ctx = 256\nmax_chunks = 3\nreference = { m2 = \"m1\" }\n",
        ))
        .unwrap();
        let cfgs = super::super::expand::expand(&p).unwrap();
        let runs = quality_runs(&p, &cfgs);
        let m2 = runs.iter().find(|r| r.model == "m2").unwrap();
        let q = m2.quality.as_ref().unwrap();
        assert_eq!(
            (q.kind.as_str(), q.reference.as_deref()),
            ("kld", Some("m1"))
        );
        let p1 = payload("st-x-r0", m2, q);
        let job = crate::jobs::protocol::parse_job(
            p1.to_string().as_bytes(),
            &crate::jobs::protocol::Limits::default(),
            &crate::infer::GenerateOptions::default(),
        )
        .unwrap();
        let spec = job.quality.unwrap();
        assert_eq!(
            (
                spec.text.as_str(),
                spec.n_ctx,
                spec.max_chunks,
                spec.reference.as_deref()
            ),
            ("wiki", 256, Some(3), Some("m1"))
        );
        let m1 = runs.iter().find(|r| r.model == "m1").unwrap();
        assert_eq!(m1.quality.as_ref().unwrap().kind, "perplexity");
    }

    #[test]
    fn each_quality_error_names_the_key_and_the_value() {
        let cases = [
            (
                "text = \"../etc/passwd\"\n",
                "quality.text",
                "'../etc/passwd'",
            ),
            ("text = \"\"\n", "quality.text", "''"),
            ("n_ctx = 8\n", "quality.n_ctx", "'8'"),
            ("n_ctx = 200000\n", "quality.n_ctx", "'200000'"),
            ("max_chunks = 0\n", "quality.max_chunks", "'0'"),
            ("reference = { m9 = \"m1\" }\n", "quality.reference", "'m9'"),
            (
                "reference = { m2 = \"m2\" }\n",
                "quality.reference.\"m2\"",
                "'m2'",
            ),
            (
                "reference = { m2 = \"a/b\" }\n",
                "quality.reference.\"m2\"",
                "'a/b'",
            ),
        ];
        for (q, key, value) in cases {
            let e = parse(&with(q)).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.code(), "plan_invalid", "{msg}");
            assert!(msg.contains(key), "{msg} should name {key}");
            assert!(msg.contains(value), "{msg} should name {value}");
        }
        let e = parse(&with("texts = \"x\"\n")).unwrap_err();
        assert_eq!(e.code(), "plan_syntax");
        assert!(e.to_string().contains("texts"), "{e}");
    }

    #[test]
    fn a_local_text_must_resolve() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wiki.txt"), "some text").unwrap();
        check_text(&parse(&with("text = \"wiki\"\n")).unwrap(), dir.path()).unwrap();
        let e = check_text(&parse(&with("text = \"nope\"\n")).unwrap(), dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("quality.text") && msg.contains("'nope'"),
            "{msg}"
        );
        check_text(&parse(BASE).unwrap(), dir.path()).unwrap();
    }

    #[test]
    fn an_unknown_reference_or_another_vocabulary_is_refused() {
        let p = parse(&with("reference = { m2 = \"base\" }\n")).unwrap();
        let runs = quality_runs(&p, &super::super::expand::expand(&p).unwrap());
        let board = |models: Value| vec![("a".to_string(), json!({"models": models}))];
        let e = check_references(&runs, &board(json!(["m1", "m2"])), None).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("quality.reference.\"m2\"") && msg.contains("'base'"),
            "{msg}"
        );
        check_references(&runs, &board(json!(["m1", "m2", "base"])), None).unwrap();

        // This machine's real models: SmolLM2 (49152 tokens) against Gemma (262144).
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let (smol, gemma) = ("SmolLM2-135M-Instruct.Q4_1", "gemma-3-270m-q4_k_m");
        if !dir.join(format!("{gemma}.gguf")).exists() {
            eprintln!("{gemma}.gguf not in models/: vocabulary check skipped");
            return;
        }
        let text = format!(
            "[study]\nname = \"q\"\n[axes]\ndevice = [\"local\"]\nmodel = [\"{smol}\", \"{gemma}\"]\n\
             prompt_tokens = [8]\ngen_tokens = [8]\n[quality]\nreference = {{ \"{gemma}\" = \"{smol}\" }}\n"
        );
        let p = parse(&text).unwrap();
        let runs = quality_runs(&p, &super::super::expand::expand(&p).unwrap());
        let e = check_references(&runs, &[], Some(&dir)).unwrap_err();
        assert!(e.to_string().contains("same vocabulary"), "{e}");
        assert!(e.to_string().contains(&format!("'{smol}'")), "{e}");
    }
}
