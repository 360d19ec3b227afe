//! Inference on llama.cpp.
//!
//! - [`engine`]    — the dedicated inference thread and its channel API
//! - `worker`      — what runs on that thread: model cache, admission, load, the run
//!   (`worker/quality.rs` the quality command, `worker/report.rs` model facts, peak RSS, offload record)
//! - [`generate`]  — one request on a loaded model: tokenize, prefill, decode
//! - [`cache`]     — loaded models, LRU within a memory budget, keep-alive
//! - [`admission`] — memory estimate vs MemAvailable and the budget
//! - [`offload`]   — GPU offload: devices, layers used, the result's `offload {…}`
//! - `llama_mem`   — llama.cpp's device list and memory per buffer (the FFI for offload)
//! - [`quantize`]  — `llama_model_quantize` behind checks (type, names, space, provenance)
//! - [`registry`]  — model names → files in the model directory, listing
//! - [`gguf`]      — GGUF header reader (metadata, truncation check)
//! - [`events`]    — the observer interface (timestamped engine events)
//! - [`metrics`]   — timings, percentiles, mean ± sd, the run report
//! - [`request`]   — request and option types
//! - [`synthetic`] — seeded synthetic tokens: `prompt_tokens` prompts, `depth` blocks
//! - [`error`]     — typed engine errors with stable codes
pub mod admission;
pub mod cache;
pub mod engine;
pub mod error;
pub mod events;
pub mod generate;
pub mod gguf;
mod llama_mem;
pub mod metrics;
pub mod offload;
pub mod quantize;
pub mod registry;
pub mod request;
pub mod synthetic;
mod worker;

pub use engine::{Engine, EngineConfig, TokenizedPrompt};
pub use error::EngineError;
pub use events::{EngineEvent, EventLog, EventObserver, FinishReason, NoopObserver, Tee};
pub use metrics::RunReport;
pub use offload::{GpuDevice, OffloadReport};
pub use registry::ModelInfo;
pub use request::{ChatMessage, GenerateOptions, GenerateRequest, PromptInput};

/// The GPU devices ggml's registry holds in this build (empty on a CPU build).
pub fn gpu_devices() -> Vec<GpuDevice> {
    llama_mem::gpu_devices()
}
