//! Inference on llama.cpp.
//!
//! - [`engine`]    — the dedicated inference thread and its channel API
//! - `worker`      — what runs on that thread: model cache, admission, load, the run
//! - [`generate`]  — one request on a loaded model: tokenize, prefill, decode
//! - [`cache`]     — loaded models, LRU within a memory budget, keep-alive
//! - [`admission`] — memory estimate vs MemAvailable and the budget
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
pub mod metrics;
pub mod registry;
pub mod request;
pub mod synthetic;
mod worker;

pub use engine::{Engine, EngineConfig, TokenizedPrompt};
pub use error::EngineError;
pub use events::{EngineEvent, EventLog, EventObserver, FinishReason, NoopObserver, Tee};
pub use metrics::RunReport;
pub use registry::ModelInfo;
pub use request::{ChatMessage, GenerateOptions, GenerateRequest, PromptInput};
