//! `edgewatt bench`: edgewatt's equivalent of llama-bench's pp/tg tests, through the
//! same engine path jobs use, so `make bench` can compare the two in one run.
//!
//! - pp N: N random token ids (BOS first when the model adds one), prefilled in
//!   one batch; speed = N ÷ prefill time (llama-bench `-p N`).
//! - tg N: one-token prompt, then N decode steps with greedy sampling and
//!   `ignore_eos`; speed = N ÷ decode time (llama-bench `-n N`, which feeds random
//!   tokens without sampling; our figure includes the greedy sampler's cost).

use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::infer::metrics::{mean_sd, MeanSd};
use crate::infer::OffloadReport;
use crate::infer::{
    Engine, EngineConfig, GenerateOptions, GenerateRequest, NoopObserver, PromptInput,
};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Model name.
    #[arg(long, short)]
    pub model: String,
    /// Prompt-processing test size (0 skips it).
    #[arg(long, default_value_t = 512)]
    pub pp: u32,
    /// Text-generation test size (0 skips it).
    #[arg(long, default_value_t = 128)]
    pub tg: u32,
    /// Threads (default: all cores, like llama-bench).
    #[arg(long, short)]
    pub threads: Option<u32>,
    /// Measured repetitions per test.
    #[arg(long, short, default_value_t = 5)]
    pub repeat: u32,
    /// Warm-up runs per test (not measured).
    #[arg(long, default_value_t = 1)]
    pub warmup: u32,
    /// Layers to offload to the GPU (llama-bench `-ngl`; more than the model has = all).
    #[arg(long, default_value_t = 0)]
    pub n_gpu_layers: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct TestResult {
    pub n_tokens: u32,
    pub tps: Vec<f64>,
    pub mean_tps: f64,
    pub sd_tps: f64,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub threads: u32,
    pub pp: Option<TestResult>,
    pub tg: Option<TestResult>,
    /// What llama.cpp did with `n_gpu_layers` (from the last test's run).
    pub offload: Option<OffloadReport>,
    pub build: super::info::BuildInfo,
}

fn result(n: u32, tps: Vec<f64>) -> TestResult {
    let MeanSd { mean, sd, .. } = mean_sd(&tps);
    TestResult {
        n_tokens: n,
        tps,
        mean_tps: mean,
        sd_tps: sd,
    }
}

pub fn run(args: &BenchArgs, mut engine_cfg: EngineConfig) -> anyhow::Result<()> {
    engine_cfg.default_keep_alive_s = -1;
    let cancel = CancellationToken::new();
    let engine = Engine::start(engine_cfg, cancel.child_token())?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    // Learn the vocabulary size and BOS from a one-token tokenization.
    let probe = engine.tokenize_blocking(&args.model, PromptInput::Prompt("a".into()))?;
    let bos = (probe.tokens.len() > 1).then(|| probe.tokens[0]);
    let n_vocab = crate::infer::gguf::read_info(&engine.resolve_model(&args.model)?)?
        .vocab_size()
        .unwrap_or(32000) as i32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let base = GenerateOptions {
        threads: Some(threads),
        threads_batch: Some(threads),
        temperature: 0.0,
        repeat_penalty: 1.0,
        ignore_eos: true,
        batch: 2048,
        n_gpu_layers: args.n_gpu_layers,
        n_ctx: (args.pp.max(args.tg + 2) + 16).max(512),
        ..GenerateOptions::default()
    };
    let run = |tokens: Vec<i32>, max_tokens: u32| -> anyhow::Result<crate::infer::RunReport> {
        let req = GenerateRequest {
            model: args.model.clone(),
            input: PromptInput::Tokens(tokens),
            options: GenerateOptions {
                max_tokens,
                repeat: args.repeat.max(1),
                // At least one warm-up so `repetitions` is always reported.
                warmup: args.warmup.max(1),
                ..base.clone()
            },
            keep_alive_s: Some(-1),
        };
        Ok(engine.generate_blocking(req, Box::new(NoopObserver), CancellationToken::new())?)
    };
    let pp_tokens = |n: u32, rng: &mut rand::rngs::StdRng| -> Vec<i32> {
        let mut v: Vec<i32> = (0..n).map(|_| rng.gen_range(0..n_vocab)).collect();
        if let (Some(b), Some(first)) = (bos, v.first_mut()) {
            *first = b;
        }
        v
    };
    // Like llama-bench, each test runs its warm-up and measured repetitions in one
    // context (the KV cache cleared between them), so every measured run is warm.
    let reps = |r: &crate::infer::RunReport,
                f: fn(&crate::infer::metrics::RepetitionReport) -> f64|
     -> Vec<f64> { r.repetitions.iter().map(f).collect() };
    let mut pp = None;
    let mut offload = None;
    if args.pp > 0 {
        let r = run(pp_tokens(args.pp, &mut rng), 1)?;
        pp = Some(result(args.pp, reps(&r, |x| x.prefill_tps)));
        offload = Some(r.offload);
    }
    let mut tg = None;
    if args.tg > 0 {
        let r = run(vec![bos.unwrap_or(0)], args.tg + 1)?;
        tg = Some(result(args.tg, reps(&r, |x| x.decode_tps)));
        offload = Some(r.offload);
    }
    cancel.cancel();
    let report = BenchReport {
        model: args.model.clone(),
        threads,
        pp,
        tg,
        offload,
        build: super::info::build_info(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let ngl = report
            .offload
            .as_ref()
            .map(|o| format!("{}/{}", o.layers, o.layers_total))
            .unwrap_or_default();
        println!("| model | threads | ngl | test | t/s |");
        println!("|---|---|---|---|---|");
        for (name, t) in [("pp", &report.pp), ("tg", &report.tg)] {
            if let Some(t) = t {
                println!(
                    "| {} | {} | {} | {}{} | {:.2} ± {:.2} |",
                    report.model, threads, ngl, name, t.n_tokens, t.mean_tps, t.sd_tps
                );
            }
        }
    }
    Ok(())
}
