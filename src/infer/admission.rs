//! Memory admission: before loading, estimate what a job needs and compare it with
//! the kernel's `MemAvailable` and the configured budget, so a too-large job is
//! refused with both numbers instead of pushing the board into swap or the OOM killer.

use serde::Serialize;

/// Bytes per KV element: llama.cpp's default cache type is F16.
const KV_ELEM_BYTES: u64 = 2;
/// Fixed allowance for ggml graph/scratch structures and our own buffers.
const OVERHEAD_BYTES: u64 = 32 << 20;

/// What a job is estimated to need, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    /// Model weights not already resident (0 when the model is cached).
    pub model_bytes: u64,
    /// KV cache for the requested context.
    pub kv_bytes: u64,
    /// Compute buffers (logits + activations for one micro-batch) and overhead.
    pub compute_bytes: u64,
}

impl MemoryEstimate {
    pub fn total_bytes(&self) -> u64 {
        self.model_bytes + self.kv_bytes + self.compute_bytes
    }
}

/// Model shape needed for the estimate (from GGUF metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    pub n_layer: u64,
    pub n_embd: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub n_vocab: u64,
}

/// KV cache bytes: K and V, per layer, per position, `n_embd_gqa` elements each
/// (`n_embd / n_head * n_head_kv`), F16.
pub fn kv_cache_bytes(shape: &ModelShape, n_ctx: u64) -> u64 {
    let head_dim = shape.n_embd.checked_div(shape.n_head).unwrap_or(0);
    let n_embd_gqa = head_dim * shape.n_head_kv;
    2 * shape.n_layer * n_ctx * n_embd_gqa * KV_ELEM_BYTES
}

/// Compute buffer bytes: F32 logits for a micro-batch plus activations (a few
/// `n_embd`-wide F32 rows per token of the micro-batch), and a fixed overhead.
pub fn compute_bytes(shape: &ModelShape, n_ubatch: u64) -> u64 {
    n_ubatch * (shape.n_vocab + 8 * shape.n_embd) * 4 + OVERHEAD_BYTES
}

/// Refusal: the job needs more than is available or allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "job needs an estimated {need_mib} MiB (model {model_mib} MiB + KV cache {kv_mib} MiB + compute {compute_mib} MiB) \
     but only {allowed_mib} MiB may be used (MemAvailable {available_mib} MiB, memory budget {budget_mib} MiB{cached})",
    need_mib = mib(estimate.total_bytes()),
    model_mib = mib(estimate.model_bytes),
    kv_mib = mib(estimate.kv_bytes),
    compute_mib = mib(estimate.compute_bytes),
    allowed_mib = mib(*available_bytes.min(budget_left_bytes)),
    available_mib = mib(*available_bytes),
    budget_mib = mib(*budget_bytes),
    cached = if *cached_bytes > 0 { format!(", {} MiB of it held by cached models", mib(*cached_bytes)) } else { String::new() }
)]
pub struct AdmissionRefused {
    pub estimate: MemoryEstimate,
    /// `MemAvailable` from /proc/meminfo.
    pub available_bytes: u64,
    /// The configured budget for models + KV + compute.
    pub budget_bytes: u64,
    /// Budget left after the models kept in the cache.
    pub budget_left_bytes: u64,
    /// Bytes held by cached models (could be evicted).
    pub cached_bytes: u64,
}

fn mib(b: u64) -> u64 {
    b.div_ceil(1 << 20)
}

/// The admission rule (pure): the job's estimate must fit both in `MemAvailable`
/// and in the budget left after models the cache keeps.
pub fn admit(
    estimate: MemoryEstimate,
    available_bytes: u64,
    budget_bytes: u64,
    cached_bytes: u64,
) -> Result<(), AdmissionRefused> {
    let budget_left_bytes = budget_bytes.saturating_sub(cached_bytes);
    let need = estimate.total_bytes();
    if need > available_bytes || need > budget_left_bytes {
        return Err(AdmissionRefused {
            estimate,
            available_bytes,
            budget_bytes,
            budget_left_bytes,
            cached_bytes,
        });
    }
    Ok(())
}

/// Reads `MemAvailable` (bytes) from a meminfo text.
pub fn parse_mem_available(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemAvailable:")?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// `MemAvailable` of this machine, bytes (0 if unreadable, which refuses every job
/// loudly rather than admitting blindly).
pub fn mem_available_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_mem_available(&s))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M: 30 layers, 576 embd, 9 heads, 3 KV heads, 49152 vocab.
    const SMOL: ModelShape = ModelShape {
        n_layer: 30,
        n_embd: 576,
        n_head: 9,
        n_head_kv: 3,
        n_vocab: 49152,
    };

    #[test]
    fn kv_cache_matches_llama_cpp_for_smollm2() {
        // llama.cpp logs "KV self size = 45.00 MiB" for n_ctx 2048 (K 22.5 + V 22.5).
        assert_eq!(kv_cache_bytes(&SMOL, 2048), 45 * 1024 * 1024);
    }

    #[test]
    fn parses_meminfo() {
        let t = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(t), Some(2048 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn refusal_names_both_numbers() {
        let est = MemoryEstimate {
            model_bytes: 100 << 20,
            kv_bytes: 45 << 20,
            compute_bytes: 130 << 20,
        };
        let e = admit(est, 8 << 30, 64 << 20, 0).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("275 MiB"), "{msg}");
        assert!(msg.contains("MemAvailable 8192 MiB"), "{msg}");
        assert!(msg.contains("memory budget 64 MiB"), "{msg}");
        assert!(admit(est, 8 << 30, 1 << 30, 0).is_ok());
        assert!(admit(est, 100 << 20, 1 << 30, 0).is_err());
        assert!(admit(est, 8 << 30, 1 << 30, 900 << 20).is_err());
    }
}
