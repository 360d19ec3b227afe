//! `edgewatt models`: the model directory with GGUF metadata.

use std::path::Path;

use crate::infer::registry;

/// Lists models as a table or JSON.
pub fn run(dir: &Path, json: bool) -> anyhow::Result<()> {
    let models = registry::list(dir)
        .map_err(|e| anyhow::anyhow!("cannot read model directory '{}': {e}", dir.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&models)?);
        return Ok(());
    }
    if models.is_empty() {
        println!(
            "no .gguf models in '{}' (run `make model` in a checkout)",
            dir.display()
        );
        return Ok(());
    }
    println!(
        "{:<36} {:<8} {:<7} {:<8} {:>9} {:>5} {:>8}  chat  provenance",
        "NAME", "ARCH", "PARAMS", "QUANT", "SIZE MiB", "BPW", "CTX"
    );
    for m in models {
        if let Some(e) = &m.error {
            println!("{:<36} unusable: {e}", m.name);
            continue;
        }
        println!(
            "{:<36} {:<8} {:<7} {:<8} {:>9.1} {:>5} {:>8}  {:<4}  {}",
            m.name,
            m.arch.as_deref().unwrap_or("-"),
            m.params.as_deref().unwrap_or("-"),
            m.quant.as_deref().unwrap_or("-"),
            m.size_bytes as f64 / 1048576.0,
            m.bits_per_weight
                .map(|b| format!("{b:.2}"))
                .unwrap_or("-".into()),
            m.trained_ctx.map(|c| c.to_string()).unwrap_or("-".into()),
            if m.chat_template { "yes" } else { "no" },
            provenance(&m)
        );
    }
    Ok(())
}

/// Where a model came from, as the listing shows it.
pub fn provenance(m: &registry::ModelInfo) -> String {
    match (&m.requantized_from, &m.quantized_from) {
        (Some(r), _) => format!("REQUANTIZED from {r}"),
        (None, Some(q)) => format!("quantized from {q}"),
        (None, None) => "-".into(),
    }
}
