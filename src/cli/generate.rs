//! `edgewatt generate`: one local run; streams text, then prints the metrics table
//! (or one JSON object with `--json`, in the protocol's result schema).

use std::io::Write;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::infer::metrics::RunReport;
use crate::infer::{
    ChatMessage, Engine, EngineConfig, EngineEvent, EventObserver, GenerateOptions,
    GenerateRequest, PromptInput,
};

/// Options for `edgewatt generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Model name (file stem of a .gguf in the model directory).
    #[arg(long, short)]
    pub model: String,
    /// Prompt text (with --chat: the user message).
    #[arg(long, short, required_unless_present = "messages")]
    pub prompt: Option<String>,
    /// Treat --prompt as a chat user message and apply the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Chat messages as a JSON array of {role, content} (implies --chat).
    #[arg(long, conflicts_with_all = ["prompt", "system"])]
    pub messages: Option<String>,
    /// Most tokens to generate.
    #[arg(long, short = 'n')]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_k: Option<u32>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long)]
    pub min_p: Option<f32>,
    #[arg(long)]
    pub repeat_penalty: Option<f32>,
    #[arg(long)]
    pub seed: Option<u32>,
    /// Stop string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Context size (0 = the model's trained context).
    #[arg(long)]
    pub n_ctx: Option<u32>,
    #[arg(long, short)]
    pub threads: Option<u32>,
    #[arg(long)]
    pub threads_batch: Option<u32>,
    #[arg(long)]
    pub batch: Option<u32>,
    #[arg(long)]
    pub n_gpu_layers: Option<u32>,
    /// Measured repetitions.
    #[arg(long, short)]
    pub repeat: Option<u32>,
    /// Unmeasured warm-up repetitions.
    #[arg(long)]
    pub warmup: Option<u32>,
    /// Print one JSON object (the protocol's result schema) instead of text + table.
    #[arg(long)]
    pub json: bool,
    /// Record an energy trace with the configured sensors, store it, print the energy summary.
    #[arg(long)]
    pub trace: bool,
}

impl GenerateArgs {
    /// The request, with options layered over the configured defaults.
    pub fn request(&self, defaults: &GenerateOptions) -> anyhow::Result<GenerateRequest> {
        let mut o = defaults.clone();
        macro_rules! set {
            ($($f:ident),*) => {$( if let Some(v) = self.$f { o.$f = v; } )*};
        }
        set!(
            max_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            n_ctx,
            batch,
            n_gpu_layers,
            repeat,
            warmup
        );
        if self.seed.is_some() {
            o.seed = self.seed;
        }
        if self.threads.is_some() {
            o.threads = self.threads;
        }
        if self.threads_batch.is_some() {
            o.threads_batch = self.threads_batch;
        }
        if !self.stop.is_empty() {
            o.stop = self.stop.clone();
        }
        let input = if let Some(m) = &self.messages {
            let msgs: Vec<ChatMessage> = serde_json::from_str(m)
                .context("--messages must be a JSON array of {\"role\", \"content\"} objects")?;
            PromptInput::Messages(msgs)
        } else {
            let prompt = self.prompt.clone().unwrap_or_default();
            if self.chat {
                let mut msgs = Vec::new();
                if let Some(s) = &self.system {
                    msgs.push(ChatMessage {
                        role: "system".into(),
                        content: s.clone(),
                    });
                }
                msgs.push(ChatMessage {
                    role: "user".into(),
                    content: prompt,
                });
                PromptInput::Messages(msgs)
            } else {
                PromptInput::Prompt(prompt)
            }
        };
        Ok(GenerateRequest {
            model: self.model.clone(),
            input,
            options: o,
            keep_alive_s: Some(0),
        })
    }
}

/// Streams token pieces to stdout as they arrive (measured repetitions only).
#[derive(Default)]
pub(crate) struct StdoutStream {
    warmup: bool,
}

impl EventObserver for StdoutStream {
    fn on_event(&mut self, ev: &EngineEvent) {
        match ev {
            EngineEvent::RepetitionStart { warmup, index, .. } => {
                self.warmup = *warmup;
                if *index > 0 && !*warmup {
                    println!();
                }
            }
            EngineEvent::Token { piece, .. } if !self.warmup => {
                print!("{piece}");
                let _ = std::io::stdout().flush();
            }
            EngineEvent::Done { .. } if !self.warmup => println!(),
            _ => {}
        }
    }
}

/// Runs `generate` without energy tracing.
pub fn run(
    args: &GenerateArgs,
    engine_cfg: EngineConfig,
    defaults: &GenerateOptions,
) -> anyhow::Result<RunReport> {
    let req = args.request(defaults)?;
    let cancel = CancellationToken::new();
    install_ctrlc(cancel.clone());
    let engine = Engine::start(engine_cfg, cancel.child_token())?;
    let observer: Box<dyn EventObserver> = if args.json {
        Box::new(crate::infer::NoopObserver)
    } else {
        Box::new(StdoutStream::default())
    };
    let report = engine.generate_blocking(req, observer, cancel.clone())?;
    cancel.cancel();
    Ok(report)
}

/// Ctrl-C cancels generation between tokens (the report then says `canceled`).
fn install_ctrlc(cancel: CancellationToken) {
    std::thread::Builder::new()
        .name("edgewatt-sigint".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => cancel.cancel(),
                    _ = cancel.cancelled() => {}
                }
            });
        })
        .ok();
}

/// Formats the metrics table printed after the text.
pub fn metrics_table(r: &RunReport) -> String {
    let t = &r.timings;
    let mut s = String::new();
    let mut row = |k: &str, v: String| s.push_str(&format!("  {k:<22} {v}\n"));
    row(
        "model",
        format!(
            "{} ({} {} {}, {:.1} MiB)",
            r.model.name,
            r.model.arch.as_deref().unwrap_or("?"),
            r.model.params.as_deref().unwrap_or("?"),
            r.model.quant.as_deref().unwrap_or("?"),
            r.model.size_bytes as f64 / (1 << 20) as f64
        ),
    );
    row("finish reason", r.finish_reason.as_str().to_string());
    row(
        "tokens",
        format!(
            "{} prompt, {} generated",
            r.tokens.prompt, r.tokens.generated
        ),
    );
    row(
        "load",
        if t.load_cached {
            "0 ms (cached)".to_string()
        } else {
            format!("{:.1} ms", t.load_ms)
        },
    );
    row(
        "prefill",
        format!("{:.1} ms ({:.1} t/s)", t.prefill_ms, t.prefill_tps),
    );
    row("time to first token", format!("{:.1} ms", t.ttft_ms));
    row(
        "decode",
        format!("{:.1} ms ({:.1} t/s)", t.decode_ms, t.decode_tps),
    );
    row(
        "token latency",
        format!(
            "p50 {:.2} / p90 {:.2} / p99 {:.2} / max {:.2} ms",
            t.token_latency_ms.p50,
            t.token_latency_ms.p90,
            t.token_latency_ms.p99,
            t.token_latency_ms.max
        ),
    );
    row("total", format!("{:.1} ms", t.total_ms));
    if let Some(st) = &r.repetition_stats {
        row(
            "repetitions",
            format!(
                "{}: prefill {:.1} ± {:.1} t/s, decode {:.1} ± {:.1} t/s",
                st.decode_tps.n,
                st.prefill_tps.mean,
                st.prefill_tps.sd,
                st.decode_tps.mean,
                st.decode_tps.sd
            ),
        );
    }
    let m = &r.memory;
    row(
        "memory",
        format!(
            "model {:.1} MiB, KV {:.1} MiB, peak RSS {:.1} MiB, MemAvailable {:.0} MiB",
            m.model_bytes as f64 / 1048576.0,
            m.kv_bytes as f64 / 1048576.0,
            m.rss_peak_bytes as f64 / 1048576.0,
            m.mem_available_bytes as f64 / 1048576.0
        ),
    );
    row(
        "settings",
        format!(
            "n_ctx {}, threads {}/{}, batch {}, temp {}, seed {}",
            r.params.n_ctx,
            r.params.threads.unwrap_or(0),
            r.params.threads_batch.unwrap_or(0),
            r.params.batch,
            r.params.temperature,
            r.params.seed.unwrap_or(0)
        ),
    );
    s
}
