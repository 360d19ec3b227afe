//! `edgewatt quality -m MODEL [--text NAME] [--n-ctx 512] [--reference MODEL]`: the
//! perplexity of a model on a text (or, with `--reference`, its KL divergence from
//! another model), run locally; `--trace` measures it with the configured sensors
//! through the daemon's measuring path and stores the trace.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::measure::Measure;
use crate::infer::{Engine, EventLog, EventObserver, Tee};
use crate::quality::{self, QualityKind, QualityRequest, DEFAULT_N_CTX};

/// Options for `edgewatt quality`.
#[derive(Debug, clap::Args)]
pub struct QualityArgs {
    /// Model name (file stem of a .gguf in the model directory).
    #[arg(long, short)]
    pub model: String,
    /// Text name: NAME.txt in [quality] texts_dir, or the built-in `licenses`.
    #[arg(long, default_value = "licenses")]
    pub text: String,
    /// Tokens per chunk (the second half of each is scored).
    #[arg(long, default_value_t = DEFAULT_N_CTX)]
    pub n_ctx: u32,
    /// Compare with this model: KL divergence of MODEL from it (same vocabulary).
    #[arg(long)]
    pub reference: Option<String>,
    /// Score at most this many chunks.
    #[arg(long)]
    pub max_chunks: Option<u32>,
    #[arg(long, short)]
    pub threads: Option<u32>,
    /// Print the result JSON (the protocol's result schema, `quality` included).
    #[arg(long)]
    pub json: bool,
    /// Measure energy with the configured sensors and store the trace.
    #[arg(long)]
    pub trace: bool,
}

impl QualityArgs {
    /// The engine request (the text resolved and read).
    pub fn request(&self, cfg: &Config) -> anyhow::Result<QualityRequest> {
        let text = quality::text::resolve(&cfg.quality.texts_dir, &self.text)
            .map_err(|e| anyhow::anyhow!("{e} [{}]", e.code()))?;
        Ok(QualityRequest {
            kind: if self.reference.is_some() {
                QualityKind::Kld
            } else {
                QualityKind::Perplexity
            },
            model: self.model.clone(),
            reference: self.reference.clone(),
            text: Arc::new(text),
            n_ctx: self.n_ctx,
            max_chunks: self.max_chunks,
            threads: self.threads,
            keep_alive_s: Some(0),
        })
    }
}

/// Runs the job; returns the result object.
pub fn run(args: &QualityArgs, cfg: &Config) -> anyhow::Result<Value> {
    let req = args.request(cfg)?;
    let cancel = CancellationToken::new();
    let measure = if args.trace {
        if cfg.power.sensors.is_empty() {
            anyhow::bail!(
                "--trace needs at least one [[power.sensors]] entry in the configuration \
                 (use kind = \"sim\" for a simulated sensor; see docs/sensors.md)"
            );
        }
        let m = Measure::start(&cfg.power, &cfg.store.path, cancel.child_token())?;
        m.set_active(true);
        Some(m)
    } else {
        None
    };
    let mut engine_cfg = super::engine_config(cfg);
    engine_cfg.default_keep_alive_s = 0;
    let engine = Engine::start(engine_cfg, cancel.child_token())?;
    if measure.is_some() {
        // The idle baseline is the sampler's stream before the job: wait it out.
        if !args.json {
            eprintln!(
                "sampling an idle baseline for {} ms…",
                cfg.power.idle_window_ms
            );
        }
        std::thread::sleep(Duration::from_millis(cfg.power.idle_window_ms));
    }
    let recording = measure.as_ref().and_then(|m| m.begin_job());
    let log = Arc::new(Mutex::new(EventLog::default()));
    let observers: Vec<Box<dyn EventObserver>> = vec![Box::new(log.clone())];
    let report = engine
        .quality_blocking(
            req.clone(),
            Box::new(Tee(observers)),
            CancellationToken::new(),
        )
        .map_err(|e| anyhow::anyhow!("{e} [{}]", e.code()))?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut result = serde_json::to_value(&report)?;
    if let Some(obj) = result.as_object_mut() {
        obj.insert("id".into(), json!(id));
        obj.insert("device".into(), json!(cfg.device.id));
        obj.insert("kind".into(), json!(req.kind.as_str()));
        obj.insert("state".into(), json!("succeeded"));
    }
    if let Some(m) = &measure {
        let max_gap_ns = m.energy_options().max_gap_ns;
        std::thread::sleep(Duration::from_nanos(
            max_gap_ns.clamp(20_000_000, 500_000_000),
        ));
        let events = log.lock().map(|l| l.events.clone()).unwrap_or_default();
        let measured = m.job_blocking(
            recording,
            &id,
            &req.model,
            &events,
            report.start_ns,
            report.end_ns,
        );
        result["energy"] = measured.energy;
        result["thermal"] = measured.thermal;
        quality::energy::annotate(&mut result);
        let request = json!({ "id": id, "model": req.model, "kind": req.kind.as_str(),
            "source": "edgewatt quality --trace" });
        let stored = m
            .store_blocking(
                &id,
                "succeeded",
                &request.to_string(),
                &result,
                measured.trace.as_ref(),
            )
            .context("storing the quality result")?;
        if !stored {
            anyhow::bail!(
                "cannot open the store '{}' (see the warning above); the trace was not kept",
                cfg.store.path.display()
            );
        }
    }
    cancel.cancel();
    Ok(result)
}

/// The human-readable summary.
pub fn table(result: &Value) -> String {
    let q = &result["quality"];
    let f = |k: &str| q[k].as_f64().unwrap_or(f64::NAN);
    let mut s = String::new();
    let model = result["model"]["name"].as_str().unwrap_or("?");
    let requant = result["model"]["requantized_from"]
        .as_str()
        .map(|r| format!("  (REQUANTIZED from {r})"))
        .unwrap_or_default();
    s += &format!("model        {model}{requant}\n");
    s += &format!(
        "text         {} (sha256 {}…)\n",
        q["text"].as_str().unwrap_or("?"),
        &q["text_sha256"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(12)
            .collect::<String>()
    );
    s += &format!(
        "chunks       {} of {} × n_ctx {} ({} tokens scored)\n",
        q["chunks"], q["chunks_planned"], q["n_ctx"], q["tokens_scored"]
    );
    s += &format!("PPL          {:.4} ± {:.5}\n", f("ppl"), f("ppl_stderr"));
    if let Some(r) = q["reference"].as_str() {
        s += &format!("reference    {r} (PPL {:.4})\n", f("reference_ppl"));
        s += &format!(
            "KLD          {:.6} ± {:.6}   p99 {:.6}\n",
            f("kld_mean"),
            f("kld_stderr"),
            f("kld_p99")
        );
        s += &format!(
            "Δp           {:.3} ± {:.3} %\n",
            100.0 * f("delta_p_mean"),
            100.0 * f("delta_p_stderr")
        );
        s += &format!(
            "same top     {:.3} ± {:.3} %\n",
            100.0 * f("top1_agreement"),
            100.0 * f("top1_stderr")
        );
    }
    s += &format!(
        "eval         {:.1} ms, {:.1} tokens/s evaluated, {:.1} scored/s; load {:.1} ms\n",
        f("eval_ms"),
        f("tokens_evaluated_per_s"),
        f("tokens_scored_per_s"),
        result["timings"]["load_ms"].as_f64().unwrap_or(0.0)
    );
    if let Some(t) = q["energy_j_per_scored_token"]["total"].as_f64() {
        s += &format!("energy       {:.6} J per scored token", t);
        if let Some(rails) = q["energy_j_per_scored_token"]["rails"].as_object() {
            for (name, v) in rails {
                s += &format!("; {name} {:.6}", v.as_f64().unwrap_or(0.0));
            }
        }
        s += "\n";
    }
    if result["finish_reason"] == "canceled" {
        s += "CANCELED: the figures cover the chunks done\n";
    }
    s
}
