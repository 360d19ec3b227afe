//! The engine on the real model (SmolLM2-135M-Instruct Q4_1, `make model`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use edgewatt::infer::{
    ChatMessage, Engine, EngineConfig, EngineError, EngineEvent, EventLog, EventObserver,
    FinishReason, GenerateOptions, GenerateRequest, PromptInput,
};
use tokio_util::sync::CancellationToken;

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn engine_in(dir: &Path, budget: u64) -> Engine {
    assert!(
        dir.join(format!("{MODEL}.gguf")).exists() || dir != model_dir(),
        "the real model is missing: run `make model`"
    );
    let mut cfg = EngineConfig::new(dir);
    cfg.memory_budget_bytes = budget;
    Engine::start(cfg, CancellationToken::new()).expect("engine starts")
}

fn engine() -> Engine {
    engine_in(&model_dir(), 2 << 30)
}

fn req(prompt: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        model: MODEL.into(),
        input: PromptInput::Prompt(prompt.into()),
        options: GenerateOptions {
            max_tokens,
            temperature: 0.0,
            n_ctx: 512,
            threads: Some(2),
            ..GenerateOptions::default()
        },
        keep_alive_s: None,
    }
}

fn run(e: &Engine, r: GenerateRequest) -> Result<edgewatt::infer::RunReport, EngineError> {
    e.generate_blocking(
        r,
        Box::new(edgewatt::infer::NoopObserver),
        CancellationToken::new(),
    )
}

/// A scratch model directory on the same file system as the checkout, holding a
/// hard link to the real model plus whatever bad files a test adds.
fn scratch_dir() -> tempfile::TempDir {
    // Cargo's scratch dir for integration tests (inside CARGO_TARGET_DIR, wherever
    // that is); the link falls back to a copy when it is on another file system.
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).unwrap();
    let d = tempfile::tempdir_in(base).unwrap();
    let src = model_dir().join(format!("{MODEL}.gguf"));
    let dst = d.path().join(format!("{MODEL}.gguf"));
    if std::fs::hard_link(&src, &dst).is_err() {
        std::fs::copy(&src, &dst).unwrap();
    }
    d
}

#[test]
fn greedy_output_is_identical_across_runs_and_cache_is_used() {
    let e = engine();
    let a = run(&e, req("The capital of France is", 24)).unwrap();
    let b = run(&e, req("The capital of France is", 24)).unwrap();
    assert!(!a.text.is_empty());
    assert_eq!(a.text, b.text);
    assert!(!a.timings.load_cached && a.timings.load_ms > 0.0);
    assert!(
        b.timings.load_cached,
        "second run should hit the model cache"
    );
    assert_eq!(b.timings.load_ms, 0.0);
    assert_eq!(a.model.quant.as_deref(), Some("Q4_1"));
    assert_eq!(a.model.arch.as_deref(), Some("llama"));
    assert!(a.memory.model_bytes > 50 << 20);
    assert_eq!(a.memory.kv_bytes, 2 * 30 * 512 * 192 * 2);
    assert!(a.memory.rss_peak_bytes > a.memory.model_bytes / 2);
    assert!(a.timings.prefill_tps > 0.0 && a.timings.decode_tps > 0.0);
}

#[test]
fn max_tokens_is_honoured() {
    let e = engine();
    let mut r = req("Count: one, two, three,", 5);
    r.options.ignore_eos = true;
    let out = run(&e, r).unwrap();
    assert_eq!(out.tokens.generated, 5);
    assert_eq!(out.finish_reason, FinishReason::Length);
}

#[test]
fn stop_string_ends_generation() {
    let e = engine();
    let mut r = req("List three colors:", 40);
    r.options.ignore_eos = true;
    let full = run(&e, r.clone()).unwrap();
    // Use a piece of the greedy output (after its first few chars) as the stop string.
    let chars: Vec<char> = full.text.chars().collect();
    assert!(chars.len() > 12, "output too short: {:?}", full.text);
    let stop: String = chars[8..12].iter().collect();
    let expected_prefix = &full.text[..full.text.find(&stop).unwrap()];
    r.options.stop = vec![stop.clone()];
    let stopped = run(&e, r).unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert_eq!(stopped.text, expected_prefix);
    assert!(!stopped.text.contains(&stop));
}

/// Cancels after N tokens from inside the observer.
struct CancelAfter {
    n: u32,
    seen: u32,
    cancel: CancellationToken,
}

impl EventObserver for CancelAfter {
    fn on_event(&mut self, ev: &EngineEvent) {
        if let EngineEvent::Token { .. } = ev {
            self.seen += 1;
            if self.seen == self.n {
                self.cancel.cancel();
            }
        }
    }
}

#[test]
fn cancel_mid_generation_returns_tokens_so_far() {
    let e = engine();
    let cancel = CancellationToken::new();
    let mut r = req("Write a long story about a robot:", 200);
    r.options.ignore_eos = true;
    let obs = CancelAfter {
        n: 6,
        seen: 0,
        cancel: cancel.clone(),
    };
    let out = e.generate_blocking(r, Box::new(obs), cancel).unwrap();
    assert_eq!(out.finish_reason, FinishReason::Canceled);
    assert_eq!(out.tokens.generated, 6);
    assert!(!out.text.is_empty());
}

#[test]
fn bad_requests_get_their_own_errors_and_the_engine_goes_on() {
    let dir = scratch_dir();
    std::fs::write(
        dir.path().join("notgguf.gguf"),
        b"this is not a model at all",
    )
    .unwrap();
    let real = std::fs::read(model_dir().join(format!("{MODEL}.gguf"))).unwrap();
    std::fs::write(dir.path().join("trunc.gguf"), &real[..real.len() / 3]).unwrap();
    let e = engine_in(dir.path(), 2 << 30);

    let named = |m: &str| GenerateRequest {
        model: m.into(),
        ..req("hi", 4)
    };
    let err = run(&e, named("trunc")).unwrap_err();
    assert_eq!(err.code(), "model_truncated", "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");

    let err = run(&e, named("notgguf")).unwrap_err();
    assert_eq!(err.code(), "model_not_gguf", "{err}");

    let err = run(&e, named("missing")).unwrap_err();
    assert_eq!(err.code(), "model_not_found", "{err}");
    assert!(err.to_string().contains("'missing'"), "{err}");

    let err = run(&e, named("../models/x")).unwrap_err();
    assert_eq!(err.code(), "invalid_model_name", "{err}");

    let mut long = req(&"word ".repeat(400), 4);
    long.options.n_ctx = 64;
    let err = run(&e, long).unwrap_err();
    assert_eq!(err.code(), "context_overflow", "{err}");
    assert!(err.to_string().contains("n_ctx"), "{err}");

    // ... and a valid job still runs afterwards on the same engine.
    let ok = run(&e, req("Hello", 3)).unwrap();
    assert!(ok.tokens.generated >= 1);
}

#[test]
fn admission_refuses_with_both_numbers() {
    let e = engine_in(&model_dir(), 16 << 20);
    let err = run(&e, req("Hello", 4)).unwrap_err();
    assert_eq!(err.code(), "admission_refused");
    let msg = err.to_string();
    assert!(msg.contains("MemAvailable"), "{msg}");
    assert!(msg.contains("memory budget 16 MiB"), "{msg}");
    assert!(msg.contains("needs an estimated"), "{msg}");
}

#[test]
fn chat_template_is_applied() {
    let e = engine();
    let msgs = vec![
        ChatMessage {
            role: "system".into(),
            content: "You are terse.".into(),
        },
        ChatMessage {
            role: "user".into(),
            content: "Say hi.".into(),
        },
    ];
    let t = e
        .tokenize_blocking(MODEL, PromptInput::Messages(msgs.clone()))
        .unwrap();
    assert!(t.text.contains("<|im_start|>user"), "{}", t.text);
    // The markers are single special tokens, not text split into pieces.
    assert!(
        t.pieces.iter().any(|p| p == "<|im_start|>"),
        "{:?}",
        t.pieces
    );
    assert!(t.pieces.iter().any(|p| p == "<|im_end|>"));
    // A raw prompt with the same marker text must not become a special token.
    let raw = e
        .tokenize_blocking(MODEL, PromptInput::Prompt("<|im_start|>user".into()))
        .unwrap();
    assert!(!raw.pieces.iter().any(|p| p == "<|im_start|>"));

    let mut r = req("", 16);
    r.input = PromptInput::Messages(msgs);
    let out = run(&e, r).unwrap();
    assert!(out.tokens.prompt as usize == t.tokens.len());
    assert!(out.tokens.generated >= 1);
}

#[test]
fn events_are_ordered_monotonic_one_per_token() {
    let e = engine();
    let log = Arc::new(Mutex::new(EventLog::default()));
    let mut r = req("Once upon a time", 12);
    r.options.ignore_eos = true;
    r.options.repeat = 2;
    r.options.warmup = 1;
    let out = e
        .generate_blocking(r, Box::new(log.clone()), CancellationToken::new())
        .unwrap();
    let events = log.lock().unwrap().events.clone();
    assert!(matches!(events[0], EngineEvent::LoadStart { .. }));
    assert!(matches!(events[1], EngineEvent::LoadEnd { .. }));
    for w in events.windows(2) {
        assert!(w[0].t_ns() <= w[1].t_ns(), "{:?} then {:?}", w[0], w[1]);
    }
    // Per repetition: start, prefill start/end, tokens 0..n, done.
    let reps: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, EngineEvent::RepetitionStart { .. }))
        .collect();
    assert_eq!(reps.len(), 3);
    let tokens = events
        .iter()
        .filter(|e| matches!(e, EngineEvent::Token { .. }))
        .count();
    assert_eq!(tokens, 3 * 12);
    let mut expect_index = 0;
    for ev in &events {
        match ev {
            EngineEvent::PrefillStart { .. } => expect_index = 0,
            EngineEvent::Token { index, .. } => {
                assert_eq!(*index, expect_index);
                expect_index += 1;
            }
            _ => {}
        }
    }
    assert_eq!(out.tokens.generated, 12);
    assert_eq!(out.repetitions.len(), 2);
    let st = out.repetition_stats.unwrap();
    assert_eq!(st.decode_tps.n, 2);
    assert!(st.decode_tps.mean > 0.0);
    assert_eq!(out.start_ns, events[0].t_ns());
    assert_eq!(out.end_ns, events.last().unwrap().t_ns());
    // The watchdog's progress beacon saw the events.
    assert!(e.last_progress_ns() >= out.end_ns);
}
