//! What a run reports about its model and the process: model facts from the header and
//! llama.cpp, the shape admission uses, peak RSS, threads, and the `offload {…}` record.

use std::path::Path;

use llama_cpp_2::model::LlamaModel;

use super::super::admission::ModelShape;
use super::super::gguf::GgufInfo;
use super::super::llama_mem;
use super::super::metrics::ModelFacts;
use super::super::offload::{self, OffloadReport};

/// Model facts from the header and llama.cpp.
pub(super) fn model_facts(
    name: &str,
    path: &Path,
    info: &GgufInfo,
    model: Option<&LlamaModel>,
) -> ModelFacts {
    let n_params = model.map(|m| m.n_params()).unwrap_or(0);
    ModelFacts {
        name: name.to_string(),
        file: path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        arch: info.arch().map(str::to_string),
        params: info
            .size_label()
            .map(str::to_string)
            .or_else(|| (n_params > 0).then(|| format!("{:.0}M", n_params as f64 / 1e6))),
        n_params,
        quant: info.quant().map(str::to_string),
        size_bytes: info.file_bytes,
        trained_ctx: info.context_length(),
        requantized_from: info.requantized_from().map(str::to_string),
    }
}

pub(super) fn shape(info: &GgufInfo) -> ModelShape {
    ModelShape {
        n_layer: info.block_count().unwrap_or(0),
        n_embd: info.embedding_length().unwrap_or(0),
        n_head: info.head_count().unwrap_or(1),
        n_head_kv: info.head_count_kv().unwrap_or(1),
        n_vocab: info.vocab_size().unwrap_or(32000),
    }
}

/// Resets the kernel's peak-RSS counter (VmHWM) so the next reading is this job's peak.
pub(super) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// VmHWM of this process, bytes.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let kb: u64 = l
                    .strip_prefix("VmHWM:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some(kb * 1024)
            })
        })
        .unwrap_or(0)
}

pub(super) fn default_threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// The result's `offload {…}` from the loaded model and its context: the devices
/// llama.cpp chose at load, the layers its rule put there, and the bytes per buffer
/// (of `ctx`, when there is one).
pub(super) fn offload_report(
    model: &LlamaModel,
    ctx: Option<&llama_cpp_2::context::LlamaContext>,
    requested: u32,
    loaded_with: u32,
) -> OffloadReport {
    let devices = llama_mem::model_devices(model);
    let n_layer = model.n_layer();
    let layers = offload::layers_used(loaded_with, n_layer, devices.len());
    let buffers = ctx.map(llama_mem::memory_breakdown).unwrap_or_default();
    let (gpu_bytes, host_bytes) = offload::split_bytes(&buffers);
    let registry = llama_mem::gpu_devices();
    let used = if layers > 0 { devices.as_slice() } else { &[] };
    OffloadReport {
        requested_layers: requested,
        layers,
        layers_total: n_layer + 1,
        backend: used.first().map(|d| d.backend.clone()),
        devices: used
            .iter()
            .map(|d| format!("{}: {}", d.name, d.description))
            .collect(),
        unified_memory: used.iter().any(|d| {
            registry
                .iter()
                .any(|g| g.name == d.name && g.unified_memory())
        }),
        gpu_bytes,
        host_bytes,
        buffers,
    }
}
