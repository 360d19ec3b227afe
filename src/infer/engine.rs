//! The inference engine: one dedicated thread owns the llama.cpp backend, the model
//! cache and every context. Callers talk to it through a bounded channel and get
//! their answer on a oneshot, so the async runtime never blocks on llama.cpp.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TrySendError};
use llama_cpp_2::llama_backend::LlamaBackend;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::admission::MemoryEstimate;
use super::error::EngineError;
use super::events::{EngineEvent, EventObserver};
use super::metrics::RunReport;
use super::registry::{self, ModelInfo};
use super::request::{GenerateRequest, PromptInput};
use super::worker::Worker;
use crate::clock::monotonic_ns;
use crate::quality::QualityRequest;

/// Requests that may wait for the inference thread (the daemon runs one job at a
/// time and keeps its own queue; this only bounds direct library use).
const COMMAND_QUEUE: usize = 8;
/// How often the idle thread wakes to unload models whose keep-alive ran out.
pub(super) const EXPIRE_TICK: Duration = Duration::from_millis(500);

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Directory holding `<name>.gguf` model files.
    pub model_dir: PathBuf,
    /// Most bytes models + KV caches + compute buffers may take together.
    pub memory_budget_bytes: u64,
    /// Default keep-alive for a loaded model (s; 0 = unload after the job, < 0 = keep).
    pub default_keep_alive_s: i64,
    /// Draw llama.cpp's load progress on stderr (only when stderr is a terminal).
    pub load_progress: bool,
    /// Enable llama.cpp's own perf counters (reported as `llama_perf`, a cross-check).
    pub llama_perf: bool,
}

impl EngineConfig {
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            model_dir: model_dir.into(),
            memory_budget_bytes: 4 << 30,
            default_keep_alive_s: 300,
            load_progress: false,
            llama_perf: false,
        }
    }
}

/// A tokenized prompt (for inspection and tests).
#[derive(Debug, Clone, Serialize)]
pub struct TokenizedPrompt {
    /// The text llama.cpp tokenized (the chat template applied for messages).
    pub text: String,
    /// Token ids.
    pub tokens: Vec<i32>,
    /// Each token's text piece (special tokens rendered).
    pub pieces: Vec<String>,
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

pub(super) enum Command {
    Generate {
        req: GenerateRequest,
        observer: Box<dyn EventObserver>,
        cancel: CancellationToken,
        reply: Reply<RunReport>,
    },
    Tokenize {
        model: String,
        input: PromptInput,
        reply: Reply<TokenizedPrompt>,
    },
    Admit {
        req: GenerateRequest,
        reply: Reply<MemoryEstimate>,
    },
    Quality {
        req: QualityRequest,
        observer: Box<dyn EventObserver>,
        cancel: CancellationToken,
        reply: Reply<RunReport>,
    },
}

/// Handle to the inference thread. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: Sender<Command>,
    cfg: Arc<EngineConfig>,
    /// Monotonic ns of the inference thread's last sign of progress (an idle tick or
    /// an engine event): what the systemd watchdog checks.
    heartbeat: Arc<AtomicU64>,
    /// Bytes of the models the inference thread holds loaded (its cache keeps it current).
    cache_bytes: Arc<AtomicU64>,
}

/// Forwards events and records each as progress.
pub(super) struct Heartbeat<'a> {
    pub(super) inner: &'a mut dyn EventObserver,
    pub(super) beat: &'a AtomicU64,
}

impl EventObserver for Heartbeat<'_> {
    fn on_event(&mut self, event: &EngineEvent) {
        self.beat.store(event.t_ns(), Ordering::Relaxed);
        self.inner.on_event(event);
    }
}

/// The llama.cpp backend can be initialised once per process.
pub(super) fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // Route llama.cpp/ggml logs into tracing (targets llama_cpp_2 / ggml).
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Backend(e.clone()))
}

impl Engine {
    /// Starts the inference thread. It exits when `cancel` fires or every handle is dropped.
    pub fn start(cfg: EngineConfig, cancel: CancellationToken) -> Result<Engine, EngineError> {
        backend()?;
        let (tx, rx) = bounded(COMMAND_QUEUE);
        let cfg = Arc::new(cfg);
        let thread_cfg = cfg.clone();
        let heartbeat = Arc::new(AtomicU64::new(monotonic_ns()));
        let beat = heartbeat.clone();
        let worker = Worker::new(thread_cfg, beat);
        let cache_bytes = worker.cache_bytes();
        std::thread::Builder::new()
            .name("edgewatt-infer".into())
            .spawn(move || worker.run(rx, cancel))
            .map_err(|e| EngineError::Backend(format!("cannot spawn inference thread: {e}")))?;
        Ok(Engine {
            tx,
            cfg,
            heartbeat,
            cache_bytes,
        })
    }

    /// Monotonic ns of the inference thread's last progress: it beats every
    /// 500 ms when idle and on every event (load, prefill, each token) when busy.
    /// A wedged llama.cpp call stops it.
    pub fn last_progress_ns(&self) -> u64 {
        self.heartbeat.load(Ordering::Relaxed)
    }

    /// Bytes of the models loaded in the engine's cache now.
    pub fn model_cache_bytes(&self) -> u64 {
        self.cache_bytes.load(Ordering::Relaxed)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    fn send(&self, cmd: Command) -> Result<(), EngineError> {
        self.tx.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(_) => EngineError::Busy {
                queued: COMMAND_QUEUE,
            },
            TrySendError::Disconnected(_) => EngineError::ShutDown,
        })
    }

    /// Runs a request; events go to `observer` (on the inference thread); `cancel`
    /// stops generation between tokens (the report then says `canceled`).
    pub async fn generate(
        &self,
        req: GenerateRequest,
        observer: Box<dyn EventObserver>,
        cancel: CancellationToken,
    ) -> Result<RunReport, EngineError> {
        let rx = self.enqueue(req, observer, cancel)?;
        rx.await.map_err(|_| EngineError::ShutDown)?
    }

    /// Blocking form of [`Engine::generate`] for threads outside the runtime.
    pub fn generate_blocking(
        &self,
        req: GenerateRequest,
        observer: Box<dyn EventObserver>,
        cancel: CancellationToken,
    ) -> Result<RunReport, EngineError> {
        let rx = self.enqueue(req, observer, cancel)?;
        rx.blocking_recv().map_err(|_| EngineError::ShutDown)?
    }

    /// Sends the command `make` builds around a fresh reply channel; the answer arrives
    /// on the returned oneshot (every request to the inference thread goes through here).
    fn request<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<oneshot::Receiver<Result<T, EngineError>>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        Ok(rx)
    }

    /// Queues a generation; the answer arrives on the returned oneshot.
    fn enqueue(
        &self,
        req: GenerateRequest,
        observer: Box<dyn EventObserver>,
        cancel: CancellationToken,
    ) -> Result<oneshot::Receiver<Result<RunReport, EngineError>>, EngineError> {
        self.request(|reply| Command::Generate {
            req,
            observer,
            cancel,
            reply,
        })
    }

    /// Runs a quality job (perplexity or KL divergence); the report's `quality` holds
    /// the scores, `timings.prefill_*` the eval phase. `cancel` stops between chunks
    /// (the report then says `canceled`, with the chunks done).
    pub async fn quality(
        &self,
        req: QualityRequest,
        observer: Box<dyn EventObserver>,
        cancel: CancellationToken,
    ) -> Result<RunReport, EngineError> {
        let rx = self.request(|reply| Command::Quality {
            req,
            observer,
            cancel,
            reply,
        })?;
        rx.await.map_err(|_| EngineError::ShutDown)?
    }

    /// Blocking form of [`Engine::quality`].
    pub fn quality_blocking(
        &self,
        req: QualityRequest,
        observer: Box<dyn EventObserver>,
        cancel: CancellationToken,
    ) -> Result<RunReport, EngineError> {
        let rx = self.request(|reply| Command::Quality {
            req,
            observer,
            cancel,
            reply,
        })?;
        rx.blocking_recv().map_err(|_| EngineError::ShutDown)?
    }

    /// Tokenizes `input` with `model`'s vocabulary (loading the model if needed).
    pub fn tokenize_blocking(
        &self,
        model: &str,
        input: PromptInput,
    ) -> Result<TokenizedPrompt, EngineError> {
        let rx = self.request(|reply| Command::Tokenize {
            model: model.to_string(),
            input,
            reply,
        })?;
        rx.blocking_recv().map_err(|_| EngineError::ShutDown)?
    }

    /// Checks the model name and file and the memory admission rule without running.
    pub async fn admit(&self, req: &GenerateRequest) -> Result<MemoryEstimate, EngineError> {
        let rx = self.request(|reply| Command::Admit {
            req: req.clone(),
            reply,
        })?;
        rx.await.map_err(|_| EngineError::ShutDown)?
    }

    /// Resolves a model name to its file (name rules + existence; no loading).
    pub fn resolve_model(&self, name: &str) -> Result<PathBuf, EngineError> {
        Ok(registry::resolve(&self.cfg.model_dir, name)?)
    }

    /// Lists the model directory with GGUF metadata.
    pub fn list_models(&self) -> Vec<ModelInfo> {
        registry::list(&self.cfg.model_dir).unwrap_or_default()
    }
}
