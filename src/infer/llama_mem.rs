//! What llama-cpp-2's safe API does not tell: which devices a loaded model uses and
//! how many bytes each buffer type holds (weights, KV cache, compute). The only
//! `unsafe` for offload lives here; each block says why it is sound.
//!
//! - GPU devices: ggml's device registry through the safe
//!   `list_llama_ggml_backend_devices` (no unsafe here).
//! - The model's devices and the memory breakdown: llama.cpp has them only as C++
//!   (`llama_model_get_device`, `llama_get_memory_breakdown` in llama-ext.h);
//!   csrc/llama_memory.cpp gives them C entry points, compiled by build.rs.
//! - Buffer type and device names: ggml's C API (llama-cpp-sys-2).

use std::ffi::{c_char, CStr};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::{list_llama_ggml_backend_devices, LlamaBackendDeviceType};
use llama_cpp_sys_2 as sys;

use super::offload::{BufferMemory, GpuDevice, GpuKind};

/// Mirrors `struct edgewatt_buft_bytes` in csrc/llama_memory.cpp.
#[repr(C)]
#[derive(Clone, Copy)]
struct BuftBytes {
    buft: sys::ggml_backend_buffer_type_t,
    model_bytes: usize,
    context_bytes: usize,
    compute_bytes: usize,
}

extern "C" {
    fn edgewatt_model_n_devices(model: *const sys::llama_model) -> i32;
    fn edgewatt_model_device(model: *const sys::llama_model, i: i32) -> sys::ggml_backend_dev_t;
    fn edgewatt_memory_breakdown(
        ctx: *const sys::llama_context,
        out: *mut BuftBytes,
        cap: usize,
    ) -> usize;
}

/// Most buffer types one context has (CPU, CPU_REPACK, each GPU, its host buffer…).
const MAX_BUFFER_TYPES: usize = 32;

/// The non-CPU devices ggml's registry holds: empty on a CPU build.
pub fn gpu_devices() -> Vec<GpuDevice> {
    list_llama_ggml_backend_devices()
        .into_iter()
        .filter_map(|d| {
            let kind = match d.device_type {
                LlamaBackendDeviceType::Gpu => GpuKind::Gpu,
                LlamaBackendDeviceType::IntegratedGpu => GpuKind::IntegratedGpu,
                LlamaBackendDeviceType::Accelerator => GpuKind::Accelerator,
                LlamaBackendDeviceType::Cpu | LlamaBackendDeviceType::Unknown => return None,
            };
            Some(GpuDevice {
                name: d.name,
                description: d.description,
                backend: d.backend,
                kind,
                memory_free_bytes: d.memory_free as u64,
                memory_total_bytes: d.memory_total as u64,
            })
        })
        .collect()
}

fn model_ptr(model: &LlamaModel) -> *const sys::llama_model {
    // SAFETY: in llama-cpp-2 0.1.160 (pinned with `=`), `LlamaModel` is
    // `#[repr(transparent)]` over `Ptr<llama_model>`, which is `#[repr(transparent)]`
    // over `NonNull<llama_model>` (src/model.rs, src/ptr.rs): a `&LlamaModel` points
    // at the model pointer itself, valid for as long as the borrow.
    const _: () = assert!(std::mem::size_of::<LlamaModel>() == std::mem::size_of::<usize>());
    unsafe { *(model as *const LlamaModel as *const *const sys::llama_model) }
}

/// The raw context pointer. `LlamaContext` keeps it private and is not transparent,
/// but its `Debug` prints exactly that pointer (`LlamaContext { context: 0x… }`), so
/// it is read from there; any other shape gives `None` (no breakdown, no guess).
fn context_ptr(ctx: &LlamaContext) -> Option<*const sys::llama_context> {
    let text = format!("{ctx:?}");
    let hex = text
        .strip_prefix("LlamaContext { context: 0x")?
        .strip_suffix(" }")?;
    let addr = usize::from_str_radix(hex, 16).ok().filter(|a| *a != 0)?;
    Some(addr as *const sys::llama_context)
}

fn c_text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: ggml returns NUL-terminated names owned by the (process-lifetime)
    // device / buffer type objects.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A device the loaded model uses for offload, by name, description and backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDevice {
    pub name: String,
    pub description: String,
    pub backend: String,
}

/// The devices llama.cpp chose for this model at load (empty: CPU only).
pub fn model_devices(model: &LlamaModel) -> Vec<ModelDevice> {
    let m = model_ptr(model);
    // SAFETY: `m` is a live model (borrowed); the shim only reads its device list.
    let n = unsafe { edgewatt_model_n_devices(m) }.max(0);
    (0..n)
        .filter_map(|i| {
            // SAFETY: 0 <= i < n; a null return (out of range) is skipped.
            let dev = unsafe { edgewatt_model_device(m, i) };
            if dev.is_null() {
                return None;
            }
            // SAFETY: `dev` is a registered ggml device (static lifetime).
            let (name, description, backend) = unsafe {
                (
                    c_text(sys::ggml_backend_dev_name(dev)),
                    c_text(sys::ggml_backend_dev_description(dev)),
                    c_text(sys::ggml_backend_reg_name(
                        sys::ggml_backend_dev_backend_reg(dev),
                    )),
                )
            };
            Some(ModelDevice {
                name,
                description,
                backend,
            })
        })
        .collect()
}

/// Bytes per buffer type for a context and its model, as llama.cpp accounts them
/// (what `llama_memory_breakdown_print` prints). Empty if the context pointer
/// cannot be read.
pub fn memory_breakdown(ctx: &LlamaContext) -> Vec<BufferMemory> {
    let Some(c) = context_ptr(ctx) else {
        tracing::warn!("cannot read the llama.cpp context pointer; no memory breakdown");
        return Vec::new();
    };
    let mut out = [BuftBytes {
        buft: std::ptr::null_mut(),
        model_bytes: 0,
        context_bytes: 0,
        compute_bytes: 0,
    }; MAX_BUFFER_TYPES];
    // SAFETY: `c` is the live context borrowed as `ctx`; the shim writes at most
    // `MAX_BUFFER_TYPES` entries into `out` and returns the total count.
    let n = unsafe { edgewatt_memory_breakdown(c, out.as_mut_ptr(), MAX_BUFFER_TYPES) };
    out[..n.min(MAX_BUFFER_TYPES)]
        .iter()
        .filter(|b| !b.buft.is_null())
        .map(|b| {
            // SAFETY: buffer types are ggml objects that live as long as their backend
            // (the process); their device may be null for plain host buffers.
            let (buffer, host, device) = unsafe {
                let dev = sys::ggml_backend_buft_get_device(b.buft);
                (
                    c_text(sys::ggml_backend_buft_name(b.buft)),
                    sys::ggml_backend_buft_is_host(b.buft),
                    if dev.is_null() {
                        "CPU".to_string()
                    } else {
                        c_text(sys::ggml_backend_dev_name(dev))
                    },
                )
            };
            BufferMemory {
                buffer,
                device,
                host,
                weights_bytes: b.model_bytes as u64,
                kv_bytes: b.context_bytes as u64,
                compute_bytes: b.compute_bytes as u64,
            }
        })
        .collect()
}
