//! GPU offload on a CPU build, with the real model (SmolLM2-135M-Instruct Q4_1): what
//! the result's `offload {…}` says comes from the loaded model, `n_gpu_layers > 0` is
//! refused with its code, and `edgewatt info` says there is no GPU backend.
//! (On a CUDA build, scripts/gpu-check.sh is the proof; these tests skip.)

use std::path::{Path, PathBuf};
use std::process::Command;

use edgewatt::infer::{
    Engine, EngineConfig, EngineError, GenerateOptions, GenerateRequest, PromptInput,
};
use tokio_util::sync::CancellationToken;

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn engine() -> Engine {
    assert!(
        model_dir().join(format!("{MODEL}.gguf")).exists(),
        "the real model is missing: run `make model`"
    );
    let mut cfg = EngineConfig::new(model_dir());
    cfg.memory_budget_bytes = 2 << 30;
    Engine::start(cfg, CancellationToken::new()).expect("engine starts")
}

fn req(n_gpu_layers: u32) -> GenerateRequest {
    GenerateRequest {
        model: MODEL.into(),
        input: PromptInput::Prompt("The capital of France is".into()),
        options: GenerateOptions {
            max_tokens: 4,
            temperature: 0.0,
            n_ctx: 512,
            threads: Some(2),
            n_gpu_layers,
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

fn cpu_build() -> bool {
    edgewatt::infer::gpu_devices().is_empty()
}

#[test]
fn cpu_load_reports_zero_of_all_layers_from_the_loaded_model() {
    if !cpu_build() {
        eprintln!("skipped: this build sees a GPU");
        return;
    }
    let e = engine();
    let r = run(&e, req(0)).unwrap();
    let o = &r.offload;
    // SmolLM2-135M has 30 blocks; llama.cpp counts the output layer too.
    assert_eq!((o.layers, o.layers_total), (0, 31), "{o:?}");
    assert_eq!(o.requested_layers, 0);
    assert_eq!(o.backend, None);
    assert!(o.devices.is_empty());
    assert_eq!(o.gpu_bytes, 0, "{o:?}");
    assert!(!o.unified_memory);
    assert_eq!(r.params.n_gpu_layers, 0);
    // The bytes are llama.cpp's own accounting, per buffer type, all in host memory.
    assert!(!o.buffers.is_empty(), "{o:?}");
    assert!(
        o.buffers.iter().all(|b| b.host && b.device == "CPU"),
        "{o:?}"
    );
    let weights: u64 = o.buffers.iter().map(|b| b.weights_bytes).sum();
    let kv: u64 = o.buffers.iter().map(|b| b.kv_bytes).sum();
    let compute: u64 = o.buffers.iter().map(|b| b.compute_bytes).sum();
    // Weights: the tensors llama_model_size counts, plus per-buffer alignment.
    assert!(
        weights >= r.memory.model_bytes && weights < r.memory.model_bytes + (8 << 20),
        "weights {weights} vs model {}",
        r.memory.model_bytes
    );
    // KV cache: F16 K and V, 30 layers × 512 positions × 192 (3 KV heads × 64).
    assert_eq!(kv, 2 * 30 * 512 * 192 * 2, "{o:?}");
    assert_eq!(
        kv, r.memory.kv_bytes,
        "the estimate matches llama.cpp's KV buffer"
    );
    assert!(compute > 0, "{o:?}");
    assert_eq!(o.host_bytes, weights + kv + compute);
}

#[test]
fn cpu_build_rejects_gpu_layers_with_its_code() {
    if !cpu_build() {
        eprintln!("skipped: this build sees a GPU");
        return;
    }
    let e = engine();
    let err = run(&e, req(99)).unwrap_err();
    assert_eq!(err.code(), "invalid_option");
    assert!(err.is_rejection());
    let msg = err.to_string();
    assert!(msg.contains("'n_gpu_layers'"), "{msg}");
    assert!(
        msg.contains("'99'") && msg.contains("no GPU backend"),
        "{msg}"
    );
    // The engine goes on: the same job on the CPU runs.
    assert_eq!(run(&e, req(0)).unwrap().offload.layers, 0);
}

#[test]
fn info_says_no_gpu_backend_on_a_cpu_build() {
    if !cpu_build() {
        eprintln!("skipped: this build sees a GPU");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_edgewatt"))
        .arg("info")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("gpu") && l.contains("no GPU backend")),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_edgewatt"))
        .args(["info", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gpu_backends"], serde_json::json!([]));
    assert_eq!(v["gpu_devices"], serde_json::json!([]));
}

/// The random-weights model scripts/gpu-check.sh carries to a lent GPU machine loads and
/// generates here on the CPU (needs llama.cpp's `gguf` Python package; CI installs it).
#[test]
fn random_weights_tiny_llama_loads_and_generates() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("tiny-llama-random.gguf");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tiny-llama-gguf.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{} failed (pip install gguf==0.19.0?): {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size < 16 << 20, "small enough to travel: {size} bytes");
    let e = Engine::start(EngineConfig::new(dir.path()), CancellationToken::new()).unwrap();
    let mut r = req(0);
    r.model = "tiny-llama-random".into();
    r.options.max_tokens = 8;
    r.options.ignore_eos = true;
    let rep = run(&e, r).unwrap();
    assert_eq!(rep.tokens.generated, 8, "ignore_eos: all 8 tokens");
    assert_eq!((rep.offload.layers, rep.offload.layers_total), (0, 9));
    assert!(rep.timings.prefill_tps > 0.0 && rep.timings.decode_tps > 0.0);
}
