//! The worker's quality command: resolve and load the model (and the reference for
//! `kld`), score the text on them ([`crate::quality::score`]), report like a run.

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{
    default_threads, model_facts, offload_report, peak_rss_bytes, reset_peak_rss, Resolved, Worker,
};
use crate::clock::{monotonic_ns, unix_ns};
use crate::infer::admission;
use crate::infer::cache::ModelKey;
use crate::infer::engine::backend;
use crate::infer::error::EngineError;
use crate::infer::events::{EngineEvent, EventObserver};
use crate::infer::metrics::{ns_to_ms, Memory, RunReport, Timings, TokenCounts};
use crate::infer::request::{GenerateOptions, GenerateRequest, PromptInput};
use crate::quality::score::{self, Loaded};
use crate::quality::{QualityError, QualityKind, QualityRequest};

impl Worker {
    pub(super) fn quality(
        &mut self,
        req: &QualityRequest,
        observer: &mut dyn EventObserver,
        cancel: &CancellationToken,
    ) -> Result<RunReport, EngineError> {
        if cancel.is_cancelled() {
            return Err(EngineError::Canceled);
        }
        match (req.kind, &req.reference) {
            (QualityKind::Kld, None) => return Err(QualityError::MissingReference.into()),
            (QualityKind::Perplexity, Some(_)) => {
                return Err(QualityError::UnexpectedReference.into())
            }
            _ => {}
        }
        let started_unix_ns = unix_ns();
        let threads = req.threads.unwrap_or_else(default_threads).max(1);
        let options = GenerateOptions {
            n_ctx: req.n_ctx,
            batch: req.n_ctx,
            threads: Some(threads),
            threads_batch: Some(threads),
            max_tokens: 1,
            ..GenerateOptions::default()
        };
        let gen_req = |model: &str| GenerateRequest {
            model: model.to_string(),
            input: PromptInput::Prompt(String::new()),
            options: options.clone(),
            keep_alive_s: req.keep_alive_s,
        };
        let m = self.resolve(&req.model)?;
        if let Some(t) = m.info.context_length() {
            score::check_n_ctx(req.n_ctx, t.min(u32::MAX as u64) as u32)?;
        }
        let r = match &req.reference {
            Some(name) => Some(self.resolve(name)?),
            None => None,
        };
        let mem_available_bytes = admission::mem_available_bytes();
        let estimate = self.admission(&m, &gen_req(&req.model), mem_available_bytes)?;
        let ref_estimate = match (&r, &req.reference) {
            (Some(r), Some(name)) => {
                Some(self.admission(r, &gen_req(name), mem_available_bytes)?)
            }
            _ => None,
        };
        reset_peak_rss();

        let start_ns = monotonic_ns();
        observer.on_event(&EngineEvent::LoadStart {
            t_ns: start_ns,
            model: m.name.clone(),
        });
        let mut load_ms = 0.0;
        let mut cached = true;
        if let (Some(r), Some(e)) = (&r, ref_estimate) {
            let (ms, c) = self.ensure_loaded(r, &cpu_key(r), e.total_bytes())?;
            load_ms += ms;
            cached &= c;
        }
        let (ms, c) = self.ensure_loaded(&m, &cpu_key(&m), estimate.total_bytes())?;
        load_ms += ms;
        cached &= c;
        observer.on_event(&EngineEvent::LoadEnd {
            t_ns: monotonic_ns(),
            cached,
        });
        if let Some(r) = &r {
            if !self.cache.contains(&cpu_key(r)) {
                return Err(EngineError::InvalidOption {
                    field: "reference",
                    reason: format!(
                        "model '{}' and reference '{}' do not fit in the memory budget together",
                        m.name, r.name
                    ),
                });
            }
        }
        if cancel.is_cancelled() {
            return Err(EngineError::Canceled);
        }

        let model = &self
            .cache
            .get(&cpu_key(&m))
            .expect("model was loaded")
            .model;
        let reference = r.as_ref().map(|r| Loaded {
            name: &r.name,
            model: &self
                .cache
                .get(&cpu_key(r))
                .expect("reference was loaded")
                .model,
        });
        let out = score::score(
            backend()?,
            Loaded {
                name: &m.name,
                model,
            },
            reference,
            req,
            threads,
            self.cfg.llama_perf,
            observer,
            cancel,
        );
        let facts = model_facts(&m.name, &m.path, &m.info, Some(model));
        // Quality jobs score on the CPU (loaded with 0 GPU layers); their contexts live
        // inside the scorer, so the report has the model's placement but no per-buffer bytes.
        let offload = offload_report(model, None, 0, 0);
        let model_bytes = model.size();
        let keep_alive = req.keep_alive_s.unwrap_or(self.cfg.default_keep_alive_s);
        self.cache.touch(&cpu_key(&m), keep_alive, Instant::now());
        if let Some(r) = &r {
            self.cache.touch(&cpu_key(r), keep_alive, Instant::now());
        }
        let out = out?;
        let end_ns = out.eval_end_ns;
        let q = &out.result;
        let mut params = options;
        params.max_tokens = 0;
        Ok(RunReport {
            offload,
            model: facts,
            params,
            text: String::new(),
            finish_reason: out.finish_reason,
            tokens: TokenCounts {
                prompt: q.tokens_evaluated.min(u32::MAX as u64) as u32,
                generated: 0,
            },
            timings: Timings {
                queue_ms: 0.0,
                load_ms,
                load_cached: cached,
                prefill_ms: q.eval_ms,
                ttft_ms: 0.0,
                decode_ms: 0.0,
                total_ms: ns_to_ms(end_ns - start_ns),
                prefill_tps: q.tokens_evaluated_per_s,
                decode_tps: 0.0,
                token_latency_ms: Default::default(),
            },
            memory: Memory {
                model_bytes,
                kv_bytes: estimate.kv_bytes + ref_estimate.map_or(0, |e| e.kv_bytes),
                rss_peak_bytes: peak_rss_bytes(),
                mem_available_bytes,
            },
            repetitions: Vec::new(),
            repetition_stats: None,
            llama_perf: None,
            quality: Some(out.result),
            started_unix_ns,
            finished_unix_ns: unix_ns(),
            start_ns,
            end_ns,
        })
    }
}

/// The cache key of a model scored by a quality job: its file, nothing offloaded.
fn cpu_key(m: &Resolved) -> ModelKey {
    ModelKey::new(m.path.clone(), 0)
}
