//! Quality and quantization on the real models: Gemma 3 (gemma3 arch, 262k vocabulary)
//! loads and generates; perplexity and KL divergence on the built-in `licenses` text;
//! `quantize` to Q8_0 and Q4_0 with requantization recorded; each bad input's code;
//! cancel between chunks.
//!
//! `cargo test --release --test quality_real_model` (needs `make models`)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edgewatt::infer::quantize::{self, QuantizeRequest};
use edgewatt::infer::{
    Engine, EngineConfig, EngineError, FinishReason, GenerateOptions, GenerateRequest,
    NoopObserver, PromptInput, RunReport,
};
use edgewatt::quality::{text, QualityKind, QualityRequest, ScoringText};
use tokio_util::sync::CancellationToken;

const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1";
const GEMMA: &str = "gemma-3-270m-q4_k_m";

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn need(dir: &Path, name: &str) {
    assert!(
        dir.join(format!("{name}.gguf")).is_file(),
        "models/{name}.gguf is missing: run `make models`"
    );
}

fn engine(dir: &Path) -> Engine {
    let mut cfg = EngineConfig::new(dir);
    cfg.default_keep_alive_s = -1;
    Engine::start(cfg, CancellationToken::new()).unwrap()
}

fn licenses() -> Arc<ScoringText> {
    Arc::new(text::resolve(Path::new("/nonexistent"), text::LICENSES).unwrap())
}

fn req(model: &str, reference: Option<&str>, n_ctx: u32, max_chunks: u32) -> QualityRequest {
    QualityRequest {
        kind: if reference.is_some() {
            QualityKind::Kld
        } else {
            QualityKind::Perplexity
        },
        model: model.into(),
        reference: reference.map(str::to_string),
        text: licenses(),
        n_ctx,
        max_chunks: Some(max_chunks),
        threads: None,
        keep_alive_s: None,
    }
}

fn score(e: &Engine, r: QualityRequest) -> Result<RunReport, EngineError> {
    e.quality_blocking(r, Box::new(NoopObserver), CancellationToken::new())
}

#[test]
fn gemma3_loads_and_generates() {
    let dir = model_dir();
    need(&dir, GEMMA);
    let e = engine(&dir);
    let r = e
        .generate_blocking(
            GenerateRequest {
                model: GEMMA.into(),
                input: PromptInput::Prompt("The capital of France is".into()),
                options: GenerateOptions {
                    max_tokens: 8,
                    n_ctx: 256,
                    ..GenerateOptions::default()
                },
                keep_alive_s: None,
            },
            Box::new(NoopObserver),
            CancellationToken::new(),
        )
        .unwrap();
    assert_eq!(r.model.arch.as_deref(), Some("gemma3"));
    assert_eq!(r.model.quant.as_deref(), Some("Q4_K_M"));
    assert!(r.tokens.generated > 0 && !r.text.is_empty(), "{r:?}");
    assert!(r.model.requantized_from.is_none());
    let info = edgewatt::infer::gguf::read_info(&dir.join(format!("{GEMMA}.gguf"))).unwrap();
    assert_eq!(info.vocab_size(), Some(262_144));
    let t = e
        .tokenize_blocking(GEMMA, PromptInput::Prompt("hello".into()))
        .unwrap();
    assert_eq!(t.tokens[0], 2, "gemma's BOS first: {:?}", t.tokens);
}

#[test]
fn perplexity_on_both_models() {
    let dir = model_dir();
    need(&dir, SMOL);
    need(&dir, GEMMA);
    let e = engine(&dir);
    for m in [SMOL, GEMMA] {
        let r = score(&e, req(m, None, 64, 2)).unwrap();
        let q = r.quality.expect("quality");
        assert_eq!((q.chunks, q.chunks_planned, q.n_ctx), (2, 2, 64));
        assert_eq!(q.tokens_scored, 2 * 31);
        assert_eq!(q.tokens_evaluated, 128);
        assert!(q.ppl > 1.0 && q.ppl < 1e4, "{m}: {q:?}");
        assert!(q.ppl_stderr > 0.0);
        assert_eq!(q.text, "licenses");
        assert_eq!(q.text_sha256.len(), 64);
        assert_eq!(r.finish_reason, FinishReason::Length);
        assert!(q.kld_mean.is_none());
    }
}

#[test]
fn quantize_requantized_models_and_kld() {
    let src = model_dir();
    need(&src, SMOL);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::copy(
        src.join(format!("{SMOL}.gguf")),
        dir.path().join(format!("{SMOL}.gguf")),
    )
    .unwrap();
    let q = |to: &str, allow: bool, force: bool| QuantizeRequest {
        model: SMOL.into(),
        to: to.into(),
        out: None,
        threads: Some(2),
        force,
        allow_requantize: allow,
    };
    let none = |_: u64, _: u64| {};
    let e = quantize::quantize(dir.path(), &q("Q8_0", false, false), &none).unwrap_err();
    assert_eq!(e.code(), "requantize_refused");
    assert_eq!(
        quantize::quantize(dir.path(), &q("Q7_7", true, false), &none)
            .unwrap_err()
            .code(),
        "unknown_quant_type"
    );
    let mut bad_src = q("Q8_0", true, false);
    bad_src.model = "../x".into();
    assert_eq!(
        quantize::quantize(dir.path(), &bad_src, &none)
            .unwrap_err()
            .code(),
        "invalid_model_name"
    );
    for t in ["Q8_0", "Q4_0"] {
        let o = quantize::quantize(dir.path(), &q(t, true, false), &none).unwrap();
        assert_eq!(o.quant, t);
        assert_eq!(o.name, format!("{SMOL}.{t}"));
        assert_eq!(
            o.requantized_from.as_deref(),
            Some("SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1)")
        );
        assert!(!dir
            .path()
            .join(format!(".{SMOL}.{t}.gguf.partial"))
            .exists());
    }
    assert_eq!(
        quantize::quantize(dir.path(), &q("Q8_0", true, false), &none)
            .unwrap_err()
            .code(),
        "output_exists"
    );
    let listed = edgewatt::infer::registry::list(dir.path()).unwrap();
    let q8 = listed.iter().find(|m| m.name.ends_with(".Q8_0")).unwrap();
    assert!(q8.requantized_from.is_some());
    assert!((8.0..9.0).contains(&q8.bits_per_weight.unwrap()), "{q8:?}");

    let e = engine(dir.path());
    for t in ["Q8_0", "Q4_0"] {
        let name = format!("{SMOL}.{t}");
        let r = score(&e, req(&name, Some(SMOL), 64, 2)).unwrap();
        assert_eq!(
            r.model.requantized_from.as_deref(),
            Some("SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1)"),
            "the result says requantized"
        );
        let k = r.quality.unwrap();
        let kld = k.kld_mean.unwrap();
        let top1 = k.top1_agreement.unwrap();
        assert!(kld >= 0.0, "{t}: {k:?}");
        assert!(top1 > 0.0 && top1 <= 1.0, "{t}: {k:?}");
        assert!(k.kld_p99.unwrap() >= 0.0);
        assert_eq!(k.reference.as_deref(), Some(SMOL));
        assert!(k.reference_ppl.unwrap() > 1.0);
    }
    // A model against itself: KLD 0 within float error, every top token the same.
    let r = score(&e, req(SMOL, Some(SMOL), 64, 2)).unwrap();
    let k = r.quality.unwrap();
    assert!(k.kld_mean.unwrap().abs() < 1e-6, "{k:?}");
    assert_eq!(k.top1_agreement, Some(1.0));
    assert!(k.delta_p_mean.unwrap().abs() < 1e-6);
}

#[test]
fn bad_inputs_get_their_own_codes() {
    let dir = model_dir();
    need(&dir, SMOL);
    need(&dir, GEMMA);
    let e = engine(&dir);
    let code = |r: QualityRequest| score(&e, r).unwrap_err().code();
    let mut r = req(SMOL, None, 8, 1);
    assert_eq!(code(r.clone()), "invalid_n_ctx");
    r.n_ctx = 9000; // SmolLM2 was trained on 8192
    assert_eq!(code(r.clone()), "invalid_n_ctx");
    r.n_ctx = 64;
    r.text = Arc::new(ScoringText::new("tiny", b"just a few words".to_vec()));
    assert_eq!(code(r.clone()), "text_too_short");
    assert_eq!(code(req(GEMMA, Some(SMOL), 64, 1)), "vocab_mismatch");
    let mut r = req(SMOL, None, 64, 1);
    r.kind = QualityKind::Kld;
    assert_eq!(code(r), "missing_reference");
    let mut r = req(SMOL, None, 64, 1);
    r.max_chunks = Some(0);
    assert_eq!(code(r), "invalid_max_chunks");
    assert_eq!(code(req("nope", None, 64, 1)), "model_not_found");
    assert!(score(&e, req(SMOL, None, 8, 1)).unwrap_err().is_rejection());
    let texts = tempfile::tempdir().unwrap();
    assert_eq!(
        text::resolve(texts.path(), "wiki").unwrap_err().code(),
        "text_not_found"
    );
}

#[test]
fn cancel_between_chunks_keeps_the_chunks_done() {
    let dir = model_dir();
    need(&dir, SMOL);
    let e = engine(&dir);
    // Warm the model so the timer runs against eval, not load.
    score(&e, req(SMOL, None, 64, 1)).unwrap();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let timer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(4));
        c.cancel();
    });
    let r = e
        .quality_blocking(req(SMOL, None, 64, 400), Box::new(NoopObserver), cancel)
        .unwrap();
    timer.join().unwrap();
    let q = r.quality.unwrap();
    assert_eq!(r.finish_reason, FinishReason::Canceled);
    assert!((1..q.chunks_planned).contains(&q.chunks), "{q:?}");
    assert_eq!(q.tokens_scored, q.chunks as u64 * 31);
    assert!(q.ppl > 1.0);
}
