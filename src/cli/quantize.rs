//! `edgewatt quantize MODEL --type Q4_0[,Q8_0,…]`: new quantizations of a model,
//! written beside it in the model directory.

use std::io::IsTerminal;
use std::path::Path;

use crate::infer::quantize::{self, QuantizeRequest};

/// Options for `edgewatt quantize`.
#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// Source model name (file stem of a .gguf in the model directory).
    pub model: String,
    /// Target types, comma-separated (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K_M, Q6_K, F16, …).
    #[arg(long = "type", short = 't', value_delimiter = ',', required = true)]
    pub types: Vec<String>,
    /// Output model name (default MODEL.TYPE); only with one type.
    #[arg(long)]
    pub out: Option<String>,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
    /// Allow requantizing an already quantized model (recorded in the output).
    #[arg(long)]
    pub allow_requantize: bool,
    /// Print one JSON array of outcomes.
    #[arg(long)]
    pub json: bool,
}

/// Runs each requested quantization in turn; stops at the first failure.
pub fn run(args: &QuantizeArgs, dir: &Path) -> anyhow::Result<()> {
    if args.out.is_some() && args.types.len() > 1 {
        let e = quantize::QuantizeError::OutWithSeveralTypes(args.types.len());
        anyhow::bail!("{e} [{}]", e.code());
    }
    // Every type is checked before the first one runs.
    for t in &args.types {
        quantize::parse_type(t).map_err(|e| anyhow::anyhow!("{e} [{}]", e.code()))?;
    }
    let tty = std::io::stderr().is_terminal();
    let mut outcomes = Vec::new();
    for t in &args.types {
        let req = QuantizeRequest {
            model: args.model.clone(),
            to: t.clone(),
            out: args.out.clone(),
            threads: args.threads,
            force: args.force,
            allow_requantize: args.allow_requantize,
        };
        eprintln!("quantize: {} → {}", args.model, t.to_uppercase());
        let progress = |written: u64, expect: u64| {
            let pct = (written as f64 / expect.max(1) as f64 * 100.0).min(99.0);
            if tty {
                eprint!(
                    "\r  written {:>7.1} MiB (~{pct:>3.0}%)",
                    written as f64 / 1048576.0
                );
            }
        };
        let o = quantize::quantize(dir, &req, &progress)
            .map_err(|e| anyhow::anyhow!("{e} [{}]", e.code()))?;
        if tty {
            eprintln!();
        }
        eprintln!(
            "  wrote {} ({}, {:.1} MiB, {:.2} bits/weight) in {:.1} s{}",
            o.path.display(),
            o.quant,
            o.size_bytes as f64 / 1048576.0,
            o.bits_per_weight.unwrap_or(0.0),
            o.elapsed_s,
            o.requantized_from
                .as_deref()
                .map(|r| format!("; REQUANTIZED from {r}"))
                .unwrap_or_default()
        );
        outcomes.push(o);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    }
    Ok(())
}
