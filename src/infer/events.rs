//! The engine's observer interface: timestamped events (CLOCK_MONOTONIC ns) emitted
//! around llama.cpp calls. The decode loop only calls `EventObserver::on_event`; what
//! is done with the events (metrics, energy traces, token streaming) lives elsewhere.

use serde::{Deserialize, Serialize};

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_tokens` reached (or the context filled up).
    Length,
    /// The model produced an end-of-generation token.
    Eog,
    /// A configured stop string appeared in the output.
    Stop,
    /// The job was canceled between tokens.
    Canceled,
}

impl FinishReason {
    /// The protocol's spelling (`length|eog|stop|canceled`).
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Eog => "eog",
            FinishReason::Stop => "stop",
            FinishReason::Canceled => "canceled",
        }
    }
}

/// One engine event. Every variant carries `t_ns`, CLOCK_MONOTONIC nanoseconds taken
/// immediately before (`*_start`) or after (`*_end`, `token`, `done`) the llama.cpp call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EngineEvent {
    /// Model load begins. For a model served from the cache it is immediately followed
    /// by `LoadEnd { cached: true }` (an empty load window).
    LoadStart { t_ns: u64, model: String },
    /// Model load finished; `cached` is true when no load happened.
    LoadEnd { t_ns: u64, cached: bool },
    /// A repetition begins (`warmup` repetitions are excluded from reported figures).
    RepetitionStart { t_ns: u64, index: u32, warmup: bool },
    /// Prompt evaluation begins.
    PrefillStart { t_ns: u64, prompt_tokens: u32 },
    /// Prompt evaluation finished (the first token's logits are ready).
    PrefillEnd { t_ns: u64 },
    /// One generated token: its 0-based index in this repetition, its id and text piece.
    Token {
        t_ns: u64,
        index: u32,
        id: i32,
        piece: String,
    },
    /// Generation of one repetition ended.
    Done {
        t_ns: u64,
        finish_reason: FinishReason,
    },
}

impl EngineEvent {
    /// The event's monotonic timestamp.
    pub fn t_ns(&self) -> u64 {
        match self {
            EngineEvent::LoadStart { t_ns, .. }
            | EngineEvent::LoadEnd { t_ns, .. }
            | EngineEvent::RepetitionStart { t_ns, .. }
            | EngineEvent::PrefillStart { t_ns, .. }
            | EngineEvent::PrefillEnd { t_ns }
            | EngineEvent::Token { t_ns, .. }
            | EngineEvent::Done { t_ns, .. } => *t_ns,
        }
    }
}

/// Receives engine events on the inference thread. Implementations must be cheap
/// (push to a Vec, send on a bounded channel with `try_send`): they run between tokens.
pub trait EventObserver: Send {
    fn on_event(&mut self, event: &EngineEvent);
}

/// Discards events.
pub struct NoopObserver;

impl EventObserver for NoopObserver {
    fn on_event(&mut self, _event: &EngineEvent) {}
}

/// Records every event in memory (used by traces and tests).
#[derive(Default, Debug, Clone)]
pub struct EventLog {
    /// The events in emission order.
    pub events: Vec<EngineEvent>,
}

impl EventObserver for EventLog {
    fn on_event(&mut self, event: &EngineEvent) {
        self.events.push(event.clone());
    }
}

/// Fans one event stream out to several observers.
pub struct Tee(pub Vec<Box<dyn EventObserver>>);

impl EventObserver for Tee {
    fn on_event(&mut self, event: &EngineEvent) {
        for o in &mut self.0 {
            o.on_event(event);
        }
    }
}

impl<T: EventObserver + ?Sized> EventObserver for Box<T> {
    fn on_event(&mut self, event: &EngineEvent) {
        (**self).on_event(event)
    }
}

impl<T: EventObserver> EventObserver for std::sync::Arc<std::sync::Mutex<T>> {
    fn on_event(&mut self, event: &EngineEvent) {
        if let Ok(mut g) = self.lock() {
            g.on_event(event)
        }
    }
}
