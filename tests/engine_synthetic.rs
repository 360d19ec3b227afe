//! Synthetic benchmark prompts on the real models: `prompt_tokens` gives exactly N
//! measured prompt tokens (BOS first when the model adds one), `depth` fills the
//! context first without counting, `ignore_eos` + `max_tokens` gives exactly that many
//! generated tokens. Runs on SmolLM2 and, when `models/` has it, Gemma 3 270M.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use edgewatt::infer::{
    Engine, EngineConfig, EngineEvent, EventLog, GenerateOptions, GenerateRequest, PromptInput,
};
use tokio_util::sync::CancellationToken;

const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1";
const GEMMA: &str = "gemma-3-270m-q4_k_m";

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn models() -> Vec<&'static str> {
    assert!(
        model_dir().join(format!("{SMOL}.gguf")).exists(),
        "the real model is missing: run `make model`"
    );
    let mut m = vec![SMOL];
    if model_dir().join(format!("{GEMMA}.gguf")).exists() {
        m.push(GEMMA);
    } else {
        eprintln!("{GEMMA}.gguf is not in models/: testing {SMOL} only");
    }
    m
}

fn engine() -> Engine {
    let mut cfg = EngineConfig::new(model_dir());
    cfg.memory_budget_bytes = 2 << 30;
    Engine::start(cfg, CancellationToken::new()).expect("engine starts")
}

fn bench_req(model: &str, prompt_tokens: u32, gen: u32, depth: u32, seed: u32) -> GenerateRequest {
    GenerateRequest {
        model: model.into(),
        input: PromptInput::PromptTokens(prompt_tokens),
        options: GenerateOptions {
            max_tokens: gen,
            ignore_eos: true,
            depth,
            seed: Some(seed),
            n_ctx: 512,
            threads: Some(2),
            ..GenerateOptions::default()
        },
        keep_alive_s: Some(-1),
    }
}

#[test]
fn prompt_tokens_depth_and_gen_tokens_are_exact_on_the_real_models() {
    let e = engine();
    for model in models() {
        for (pp, depth) in [(1, 0), (32, 0), (128, 0), (32, 100)] {
            let log = Arc::new(Mutex::new(EventLog::default()));
            let r = e
                .generate_blocking(
                    bench_req(model, pp, 32, depth, 7),
                    Box::new(log.clone()),
                    CancellationToken::new(),
                )
                .unwrap_or_else(|err| panic!("{model} pp {pp} depth {depth}: {err}"));
            assert_eq!(r.tokens.prompt, pp, "{model} pp {pp} depth {depth}");
            assert_eq!(r.tokens.generated, 32, "{model} pp {pp} depth {depth}");
            assert_eq!(r.params.depth, depth);
            let prefill: Vec<u32> = log
                .lock()
                .unwrap()
                .events
                .iter()
                .filter_map(|ev| match ev {
                    EngineEvent::PrefillStart { prompt_tokens, .. } => Some(*prompt_tokens),
                    _ => None,
                })
                .collect();
            assert_eq!(
                prefill,
                [pp],
                "{model}: one measured prefill of exactly {pp}"
            );
        }
    }
}

#[test]
fn synthetic_prompts_start_with_bos_and_follow_the_seed() {
    let e = engine();
    for model in models() {
        let probe = e
            .tokenize_blocking(model, PromptInput::Prompt("a".into()))
            .unwrap();
        let bos = (probe.tokens.len() > 1).then(|| probe.tokens[0]);
        let t = e
            .tokenize_blocking(model, PromptInput::PromptTokens(64))
            .unwrap();
        assert_eq!(t.tokens.len(), 64, "{model}");
        if let Some(b) = bos {
            assert_eq!(t.tokens[0], b, "{model}: BOS first");
            assert!(!t.tokens[1..].contains(&b), "{model}: BOS only once");
        }
        // Greedy decoding: the same seed gives the same prompt, hence the same text.
        let run = |seed| {
            e.generate_blocking(
                bench_req(model, 16, 8, 0, seed),
                Box::new(edgewatt::infer::NoopObserver),
                CancellationToken::new(),
            )
            .unwrap()
            .text
        };
        let a = run(1);
        assert_eq!(a, run(1), "{model}");
        assert!(
            [2, 3, 4].into_iter().any(|s| run(s) != a),
            "{model}: the prompt follows the seed"
        );
    }
}

#[test]
fn depth_and_prompt_beyond_the_context_is_a_context_overflow() {
    let e = engine();
    let mut r = bench_req(SMOL, 300, 8, 300, 1);
    r.options.n_ctx = 512;
    let err = e
        .generate_blocking(
            r,
            Box::new(edgewatt::infer::NoopObserver),
            CancellationToken::new(),
        )
        .unwrap_err();
    assert_eq!(err.code(), "context_overflow", "{err}");
}
