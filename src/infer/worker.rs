//! The inference thread's side: the worker owns the model cache and runs each
//! command (resolve, admit, load, tokenize, generate) on a loaded model.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use tokio_util::sync::CancellationToken;

use super::admission::{self, MemoryEstimate};
use super::cache::{Entry, ModelCache, ModelKey};
use super::engine::{backend, Command, EngineConfig, Heartbeat, TokenizedPrompt, EXPIRE_TICK};
use super::error::EngineError;
use super::events::{EngineEvent, EventObserver, FinishReason};
use super::generate::{self, run_repetition};
use super::gguf::GgufInfo;
use super::llama_mem;
use super::metrics::{
    latency, mean_sd, ns_to_ms, LlamaPerf, Memory, RepetitionStats, RunReport, Timings, TokenCounts,
};
use super::offload::{self, GpuDevice};
use super::registry;
use super::request::{GenerateRequest, PromptInput};
use super::synthetic::{self, ContextTokens};
use crate::clock::{monotonic_ns, unix_ns};

mod quality;
mod report;

use report::{default_threads, model_facts, offload_report, peak_rss_bytes, reset_peak_rss, shape};

/// State owned by the inference thread.
pub(super) struct Worker {
    cfg: Arc<EngineConfig>,
    cache: ModelCache<LlamaModel>,
    /// Progress beacon shared with the handles.
    heartbeat: Arc<AtomicU64>,
    /// Parsed GGUF headers by path, valid while the file's size and mtime are
    /// unchanged: the header (vocabulary and merges included) is re-read only when
    /// the file changes, not on every job.
    headers: HashMap<PathBuf, (FileStamp, Arc<GgufInfo>)>,
}

/// What identifies a version of a model file.
type FileStamp = (u64, Option<std::time::SystemTime>);

/// A resolved, checked model file.
struct Resolved {
    name: String,
    path: PathBuf,
    info: Arc<GgufInfo>,
}

impl Worker {
    pub(super) fn new(cfg: Arc<EngineConfig>, heartbeat: Arc<AtomicU64>) -> Self {
        Worker {
            cfg,
            cache: ModelCache::default(),
            heartbeat,
            headers: HashMap::new(),
        }
    }

    /// The cache's live byte count, for [`Engine::model_cache_bytes`](super::Engine::model_cache_bytes).
    pub(super) fn cache_bytes(&self) -> Arc<AtomicU64> {
        self.cache.resident_bytes()
    }

    pub(super) fn run(mut self, rx: Receiver<Command>, cancel: CancellationToken) {
        loop {
            if cancel.is_cancelled() {
                break;
            }
            self.heartbeat.store(monotonic_ns(), Ordering::Relaxed);
            match rx.recv_timeout(EXPIRE_TICK) {
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            for k in self.cache.expire(Instant::now()) {
                tracing::info!(model = %k, "keep-alive ran out; model unloaded");
            }
        }
        tracing::debug!("inference thread exits");
    }

    fn handle(&mut self, cmd: Command) {
        // A panic inside a job must not take the thread (and every later job) down.
        match cmd {
            Command::Generate {
                req,
                mut observer,
                cancel,
                reply,
            } => {
                let beat = self.heartbeat.clone();
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let mut hb = Heartbeat {
                        inner: &mut *observer,
                        beat: &beat,
                    };
                    self.generate(&req, &mut hb, &cancel)
                }))
                .unwrap_or_else(|p| Err(EngineError::Panicked(panic_text(&p))));
                let _ = reply.send(r);
            }
            Command::Tokenize {
                model,
                input,
                reply,
            } => {
                let r =
                    std::panic::catch_unwind(AssertUnwindSafe(|| self.tokenize(&model, &input)))
                        .unwrap_or_else(|p| Err(EngineError::Panicked(panic_text(&p))));
                let _ = reply.send(r);
            }
            Command::Quality {
                req,
                mut observer,
                cancel,
                reply,
            } => {
                let beat = self.heartbeat.clone();
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let mut hb = Heartbeat {
                        inner: &mut *observer,
                        beat: &beat,
                    };
                    self.quality(&req, &mut hb, &cancel)
                }))
                .unwrap_or_else(|p| Err(EngineError::Panicked(panic_text(&p))));
                let _ = reply.send(r);
            }
            Command::Admit { req, reply } => {
                let r = self
                    .resolve(&req.model)
                    .and_then(|m| self.admission(&m, &req, admission::mem_available_bytes()));
                let _ = reply.send(r);
            }
        }
    }

    fn resolve(&mut self, name: &str) -> Result<Resolved, EngineError> {
        let path = registry::resolve(&self.cfg.model_dir, name)?;
        let stamp: FileStamp = std::fs::metadata(&path)
            .map(|m| (m.len(), m.modified().ok()))
            .unwrap_or((0, None));
        let info = match self.headers.get(&path) {
            Some((s, info)) if *s == stamp => info.clone(),
            _ => {
                let info = Arc::new(registry::inspect(&path).map_err(|source| {
                    EngineError::BadModelFile {
                        name: name.to_string(),
                        source,
                    }
                })?);
                self.headers.insert(path.clone(), (stamp, info.clone()));
                info
            }
        };
        Ok(Resolved {
            name: name.to_string(),
            path,
            info,
        })
    }

    fn n_ctx_for(&self, m: &Resolved, req: &GenerateRequest) -> u32 {
        if req.options.n_ctx == 0 {
            m.info.context_length().unwrap_or(2048) as u32
        } else {
            req.options.n_ctx
        }
    }

    /// Estimates the job's memory and applies the admission rule; models that would
    /// have to be evicted anyway are not counted against the budget. With layers on a
    /// discrete GPU, their share is checked against the device's free memory and the
    /// rest against MemAvailable; an integrated GPU's share is system RAM, so there
    /// (and on the CPU) the whole estimate counts against MemAvailable.
    fn admission(
        &self,
        m: &Resolved,
        req: &GenerateRequest,
        available_bytes: u64,
    ) -> Result<MemoryEstimate, EngineError> {
        let sh = shape(&m.info);
        let n_ctx = self.n_ctx_for(m, req) as u64;
        let gpus = llama_mem::gpu_devices();
        let key = self.key_for(m, req.options.n_gpu_layers, &gpus);
        let cached = self.cache.contains(&key);
        let model_bytes = m.info.data_end_bytes;
        let estimate = MemoryEstimate {
            model_bytes: if cached { 0 } else { model_bytes },
            kv_bytes: admission::kv_cache_bytes(&sh, n_ctx),
            compute_bytes: admission::compute_bytes(&sh, req.options.batch.clamp(1, 512) as u64),
        };
        let held = if cached { model_bytes } else { 0 };
        let layers_total = sh.n_layer as u32 + 1;
        let mut host_estimate = estimate;
        if let Some(gpu) = gpus.first().filter(|_| key.n_gpu_layers > 0) {
            let on_gpu = offload::admit_gpu(&estimate, key.n_gpu_layers, layers_total, gpu)?;
            if !gpu.unified_memory() {
                let share =
                    |b: u64| (b as u128 * key.n_gpu_layers as u128 / layers_total as u128) as u64;
                host_estimate.model_bytes -= share(estimate.model_bytes);
                host_estimate.kv_bytes -= share(estimate.kv_bytes);
                tracing::debug!(on_gpu, device = %gpu.label(), "GPU share admitted");
            }
        }
        admission::admit(
            host_estimate,
            available_bytes,
            self.cfg.memory_budget_bytes,
            held,
        )?;
        Ok(estimate)
    }

    /// The cache key of a job: its file and the layers llama.cpp will put on the GPU
    /// (`n_gpu_layers` clamped to the model's layers; 0 without a GPU device).
    fn key_for(&self, m: &Resolved, n_gpu_layers: u32, gpus: &[GpuDevice]) -> ModelKey {
        let n_layer = shape(&m.info).n_layer as u32;
        ModelKey::new(
            m.path.clone(),
            offload::layers_used(n_gpu_layers, n_layer, gpus.len()),
        )
    }

    /// Loads (or finds in the cache) a model with `key`'s offload; returns (load_ms, cached).
    fn ensure_loaded(
        &mut self,
        m: &Resolved,
        key: &ModelKey,
        need_bytes: u64,
    ) -> Result<(f64, bool), EngineError> {
        if self.cache.contains(key) {
            return Ok((0.0, true));
        }
        for k in self
            .cache
            .make_room(need_bytes, self.cfg.memory_budget_bytes, key)
        {
            tracing::info!(model = %k, "evicted to make room");
        }
        let mut params = LlamaModelParams::default().with_n_gpu_layers(key.n_gpu_layers);
        if self.cfg.load_progress && std::io::stderr().is_terminal() {
            let name = m.name.clone();
            params = params.with_progress_callback(move |p| {
                eprint!("\rloading {name}: {:>3.0}%", p * 100.0);
                if p >= 1.0 {
                    eprintln!();
                }
                true
            });
        }
        let t0 = monotonic_ns();
        let model = LlamaModel::load_from_file(backend()?, &m.path, &params).map_err(|e| {
            tracing::warn!(error = %e, "llama.cpp model load failed");
            EngineError::Load {
                name: m.name.clone(),
                path: m.path.clone(),
            }
        })?;
        let load_ms = ns_to_ms(monotonic_ns() - t0);
        let bytes = model.size();
        self.cache.insert(Entry {
            key: key.clone(),
            model,
            bytes,
            last_used: Instant::now(),
            keep_alive_s: self.cfg.default_keep_alive_s,
        });
        Ok((load_ms, false))
    }

    fn tokenize(
        &mut self,
        name: &str,
        input: &PromptInput,
    ) -> Result<TokenizedPrompt, EngineError> {
        let m = self.resolve(name)?;
        // Any loaded variant tokenizes the same; load on the CPU if none is.
        let key = self
            .cache
            .keys()
            .into_iter()
            .find(|k| k.path == m.path)
            .unwrap_or_else(|| ModelKey::new(m.path.clone(), 0));
        self.ensure_loaded(&m, &key, m.info.data_end_bytes)?;
        let model = &self.cache.get(&key).expect("just loaded").model;
        let (text, _) = generate::render_prompt(model, name, input)?;
        let tokens = generate::tokenize(model, name, input)?;
        let vocab = model.vocab();
        let pieces = tokens
            .iter()
            .map(|t| String::from_utf8_lossy(&vocab.token_to_piece(*t, true, None)).into_owned())
            .collect();
        Ok(TokenizedPrompt {
            text,
            tokens: tokens.iter().map(|t| t.0).collect(),
            pieces,
        })
    }

    fn generate(
        &mut self,
        req: &GenerateRequest,
        observer: &mut dyn EventObserver,
        cancel: &CancellationToken,
    ) -> Result<RunReport, EngineError> {
        if cancel.is_cancelled() {
            return Err(EngineError::Canceled);
        }
        let started_unix_ns = unix_ns();
        let o = &req.options;
        if o.max_tokens == 0 {
            return Err(EngineError::InvalidOption {
                field: "max_tokens",
                reason: "must be at least 1".into(),
            });
        }
        // What ggml's device registry holds at run time, not only what was compiled in.
        backend()?;
        let gpus = llama_mem::gpu_devices();
        if o.n_gpu_layers > 0 && gpus.is_empty() {
            return Err(EngineError::InvalidOption {
                field: "n_gpu_layers",
                reason: format!(
                    "'{}' requested but this build has no GPU backend (ggml sees only the CPU); use 0",
                    o.n_gpu_layers
                ),
            });
        }
        let m = self.resolve(&req.model)?;
        let key = self.key_for(&m, o.n_gpu_layers, &gpus);
        let mem_available_bytes = admission::mem_available_bytes();
        let estimate = self.admission(&m, req, mem_available_bytes)?;
        reset_peak_rss();

        // Load phase.
        let start_ns = monotonic_ns();
        observer.on_event(&EngineEvent::LoadStart {
            t_ns: start_ns,
            model: m.name.clone(),
        });
        let (load_ms, cached) = self.ensure_loaded(&m, &key, estimate.total_bytes())?;
        observer.on_event(&EngineEvent::LoadEnd {
            t_ns: monotonic_ns(),
            cached,
        });
        if cancel.is_cancelled() {
            return Err(EngineError::Canceled);
        }

        let keep_alive = req.keep_alive_s.unwrap_or(self.cfg.default_keep_alive_s);
        let result = self.run_loaded(&m, &key, req, observer, cancel, load_ms, cached);
        self.cache.touch(&key, keep_alive, Instant::now());
        let (mut report, end_ns) = result?;
        report.memory.mem_available_bytes = mem_available_bytes;
        report.memory.kv_bytes = estimate.kv_bytes;
        report.memory.rss_peak_bytes = peak_rss_bytes();
        report.started_unix_ns = started_unix_ns;
        report.finished_unix_ns = unix_ns();
        report.start_ns = start_ns;
        report.end_ns = end_ns;
        report.timings.total_ms = ns_to_ms(end_ns - start_ns);
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_loaded(
        &self,
        m: &Resolved,
        key: &ModelKey,
        req: &GenerateRequest,
        observer: &mut dyn EventObserver,
        cancel: &CancellationToken,
        load_ms: f64,
        cached: bool,
    ) -> Result<(RunReport, u64), EngineError> {
        let model = &self.cache.get(key).expect("model was loaded").model;
        let mut o = req.options.clone();
        o.n_ctx = self.n_ctx_for(m, req);
        // The layers llama.cpp uses ("all" is the model's count), as the run reports them.
        o.n_gpu_layers = key.n_gpu_layers;
        let threads = o.threads.unwrap_or_else(default_threads).max(1);
        let threads_batch = o.threads_batch.unwrap_or(threads).max(1);
        o.threads = Some(threads);
        o.threads_batch = Some(threads_batch);
        let seed = o.seed.unwrap_or_else(rand::random);
        o.seed = Some(seed);

        let prompt_tokens = match req.input {
            PromptInput::PromptTokens(n) => Some(n),
            _ => None,
        };
        let tokenized = || generate::tokenize(model, &m.name, &req.input);
        let ContextTokens {
            depth,
            prompt: tokens,
        } = synthetic::context_tokens(model, prompt_tokens, tokenized, o.depth, seed)?;
        if (depth.len() + tokens.len()) as u32 >= o.n_ctx {
            return Err(EngineError::ContextOverflow {
                prompt_tokens: (depth.len() + tokens.len()) as u32,
                n_ctx: o.n_ctx,
                trained_ctx: model.n_ctx_train(),
            });
        }
        let mut ctx = generate::new_context(
            backend()?,
            model,
            &o,
            o.n_ctx,
            threads,
            threads_batch,
            self.cfg.llama_perf,
        )?;

        let total_reps = o.warmup + o.repeat.max(1);
        let mut measured = Vec::new();
        let mut gaps = Vec::new();
        let mut last = None;
        let mut end_ns = monotonic_ns();
        for i in 0..total_reps {
            // Warm-up repetitions still emit events (flagged), but are not measured.
            let warmup = i < o.warmup;
            let out = run_repetition(
                &mut ctx, model, &depth, &tokens, &o, seed, i, warmup, observer, cancel,
            )?;
            end_ns = out.end_ns;
            let canceled = out.report.finish_reason == Some(FinishReason::Canceled);
            if !warmup {
                gaps.extend_from_slice(&out.token_gaps_ms);
                measured.push(out.report.clone());
            }
            last = Some(out);
            if canceled {
                break;
            }
        }
        let last = last.expect("at least one repetition");
        let n = measured.len().max(1) as f64;
        let avg = |f: fn(&super::metrics::RepetitionReport) -> f64| {
            measured.iter().map(f).sum::<f64>() / n
        };
        let llama_perf = self.cfg.llama_perf.then(|| {
            let t = ctx.timings();
            LlamaPerf {
                prompt_eval_ms: t.t_p_eval_ms(),
                prompt_tokens: t.n_p_eval(),
                eval_ms: t.t_eval_ms(),
                eval_tokens: t.n_eval(),
            }
        });
        let offload = offload_report(
            model,
            Some(&ctx),
            req.options.n_gpu_layers,
            key.n_gpu_layers,
        );
        let several = measured.len() > 1 || o.warmup > 0;
        let timings = Timings {
            queue_ms: 0.0,
            load_ms,
            load_cached: cached,
            prefill_ms: avg(|r| r.prefill_ms),
            ttft_ms: avg(|r| r.ttft_ms),
            decode_ms: avg(|r| r.decode_ms),
            total_ms: 0.0,
            prefill_tps: mean_sd(&measured.iter().map(|r| r.prefill_tps).collect::<Vec<_>>()).mean,
            decode_tps: mean_sd(&measured.iter().map(|r| r.decode_tps).collect::<Vec<_>>()).mean,
            token_latency_ms: latency(&gaps),
        };
        let report = RunReport {
            model: model_facts(&m.name, &m.path, &m.info, Some(model)),
            params: o,
            text: last.text,
            finish_reason: last.report.finish_reason.unwrap_or(FinishReason::Length),
            tokens: TokenCounts {
                prompt: tokens.len() as u32,
                generated: last.report.generated,
            },
            timings,
            memory: Memory {
                model_bytes: model.size(),
                ..Memory::default()
            },
            repetition_stats: several.then(|| RepetitionStats::from_reps(&measured)),
            repetitions: if several { measured } else { Vec::new() },
            llama_perf,
            offload,
            quality: None,
            started_unix_ns: 0,
            finished_unix_ns: 0,
            start_ns: 0,
            end_ns: 0,
        };
        Ok((report, end_ns))
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
