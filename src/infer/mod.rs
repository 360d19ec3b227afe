//! Inference on llama.cpp.
pub mod events;
pub mod request;

pub use events::{EngineEvent, EventLog, EventObserver, FinishReason, NoopObserver};
pub use request::{ChatMessage, GenerateOptions, GenerateRequest, PromptInput};
