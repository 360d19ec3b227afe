//! GPU offload: what a job asked for, what llama.cpp did with it, and the pure rules
//! in between (layers used, where the memory goes for admission).
//!
//! llama.cpp counts a model's layers as its repeating blocks plus the output layer
//! (`n_layer + 1`, "offloaded 31/31 layers" for SmolLM2's 30 blocks) and offloads the
//! output layer first; `n_gpu_layers` above that count means all of them. The facts in
//! [`OffloadReport`] come from the loaded model and context (llama_mem), not the request.

use serde::{Deserialize, Serialize};

use super::admission::MemoryEstimate;

/// Kind of accelerator, from ggml's device registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuKind {
    /// A discrete GPU with its own memory.
    Gpu,
    /// An integrated GPU sharing the system RAM (Jetson Orin, APUs).
    IntegratedGpu,
    /// Another accelerator ggml can offload to.
    Accelerator,
}

/// A non-CPU device the build's ggml backends see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// ggml's device name (`CUDA0`).
    pub name: String,
    /// Its description (`Orin`, `NVIDIA H200`).
    pub description: String,
    /// The backend that registered it (`CUDA`).
    pub backend: String,
    pub kind: GpuKind,
    pub memory_free_bytes: u64,
    pub memory_total_bytes: u64,
}

impl GpuDevice {
    /// `CUDA0: Orin`.
    pub fn label(&self) -> String {
        format!("{}: {}", self.name, self.description)
    }

    /// True when its allocations come out of the system RAM (`MemAvailable`).
    pub fn unified_memory(&self) -> bool {
        self.kind == GpuKind::IntegratedGpu
    }
}

/// Bytes llama.cpp holds in one buffer type, by purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferMemory {
    /// Buffer type (`CPU`, `CPU_REPACK`, `CUDA0`, `CUDA_Host`).
    pub buffer: String,
    /// The device it belongs to (`CPU`, `CUDA0`).
    pub device: String,
    /// True when the buffer is in host memory (CPU or pinned host buffers).
    pub host: bool,
    pub weights_bytes: u64,
    pub kv_bytes: u64,
    pub compute_bytes: u64,
}

impl BufferMemory {
    pub fn total_bytes(&self) -> u64 {
        self.weights_bytes + self.kv_bytes + self.compute_bytes
    }
}

/// What llama.cpp did with a job's `n_gpu_layers` (the result's `offload {…}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OffloadReport {
    /// `n_gpu_layers` as the job sent it.
    pub requested_layers: u32,
    /// Layers on the GPU (repeating blocks + output layer), from the loaded model.
    pub layers: u32,
    /// The model's layers in llama.cpp's count: blocks + 1 (the output layer).
    pub layers_total: u32,
    /// Backend of the device(s) the model was loaded onto (`CUDA`); none on the CPU.
    pub backend: Option<String>,
    /// `CUDA0: Orin` for each device the model uses besides the CPU.
    pub devices: Vec<String>,
    /// True when the GPU shares the system RAM (its bytes count against MemAvailable).
    pub unified_memory: bool,
    /// Bytes on GPU memory (non-host buffers): weights + KV cache + compute.
    pub gpu_bytes: u64,
    /// Bytes in host memory (CPU and pinned host buffers).
    pub host_bytes: u64,
    /// Per buffer type, as llama.cpp accounts them.
    pub buffers: Vec<BufferMemory>,
}

/// llama.cpp's rule (llama-model.cpp, `load_tensors`): with no GPU device nothing is
/// offloaded; otherwise `min(n_gpu_layers, n_layer + 1)`.
pub fn layers_used(requested: u32, n_layer: u32, n_gpu_devices: usize) -> u32 {
    if n_gpu_devices == 0 {
        0
    } else {
        requested.min(n_layer + 1)
    }
}

/// Sums the buffers into (gpu_bytes, host_bytes).
pub fn split_bytes(buffers: &[BufferMemory]) -> (u64, u64) {
    buffers.iter().fold((0, 0), |(gpu, host), b| {
        if b.host {
            (gpu, host + b.total_bytes())
        } else {
            (gpu + b.total_bytes(), host)
        }
    })
}

/// The part of a job's memory estimate that lands on the GPU when `layers` of
/// `layers_total` are offloaded: that share of the weights and of the KV cache
/// (llama.cpp keeps each offloaded layer's KV beside it), and the compute buffers
/// once anything is offloaded. The rest stays in host memory.
pub fn gpu_share_bytes(estimate: &MemoryEstimate, layers: u32, layers_total: u32) -> u64 {
    if layers == 0 || layers_total == 0 {
        return 0;
    }
    let share = |b: u64| (b as u128 * layers as u128 / layers_total as u128) as u64;
    share(estimate.model_bytes) + share(estimate.kv_bytes) + estimate.compute_bytes
}

/// Refusal: the GPU part of a job does not fit the device's free memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "job needs an estimated {need_mib} MiB on {device} ({layers} of {layers_total} layers offloaded) \
     but the device has {free_mib} MiB free of {total_mib} MiB; lower 'n_gpu_layers' or 'n_ctx'",
    need_mib = mib(*need_bytes),
    free_mib = mib(*free_bytes),
    total_mib = mib(*total_bytes)
)]
pub struct GpuAdmissionRefused {
    pub device: String,
    pub need_bytes: u64,
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub layers: u32,
    pub layers_total: u32,
}

fn mib(b: u64) -> u64 {
    b.div_ceil(1 << 20)
}

/// The device rule for a discrete GPU: its share must fit the device's free memory.
/// (An integrated GPU's allocations are system RAM: the MemAvailable rule covers them.)
pub fn admit_gpu(
    estimate: &MemoryEstimate,
    layers: u32,
    layers_total: u32,
    device: &GpuDevice,
) -> Result<u64, GpuAdmissionRefused> {
    let need_bytes = gpu_share_bytes(estimate, layers, layers_total);
    if !device.unified_memory() && need_bytes > device.memory_free_bytes {
        return Err(GpuAdmissionRefused {
            device: device.label(),
            need_bytes,
            free_bytes: device.memory_free_bytes,
            total_bytes: device.memory_total_bytes,
            layers,
            layers_total,
        });
    }
    Ok(need_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(kind: GpuKind, free_mib: u64) -> GpuDevice {
        GpuDevice {
            name: "CUDA0".into(),
            description: "Orin".into(),
            backend: "CUDA".into(),
            kind,
            memory_free_bytes: free_mib << 20,
            memory_total_bytes: 8 << 30,
        }
    }

    #[test]
    fn layers_follow_llama_cpp() {
        // SmolLM2: 30 blocks, 31 layers in llama.cpp's count.
        assert_eq!(layers_used(99, 30, 1), 31);
        assert_eq!(layers_used(31, 30, 1), 31);
        assert_eq!(layers_used(10, 30, 1), 10);
        assert_eq!(layers_used(99, 30, 0), 0);
        assert_eq!(layers_used(0, 30, 1), 0);
    }

    #[test]
    fn splits_host_and_gpu_bytes() {
        let b = vec![
            BufferMemory {
                buffer: "CUDA0".into(),
                device: "CUDA0".into(),
                host: false,
                weights_bytes: 100,
                kv_bytes: 40,
                compute_bytes: 10,
            },
            BufferMemory {
                buffer: "CUDA_Host".into(),
                device: "CUDA0".into(),
                host: true,
                weights_bytes: 5,
                kv_bytes: 0,
                compute_bytes: 2,
            },
        ];
        assert_eq!(split_bytes(&b), (150, 7));
    }

    #[test]
    fn gpu_share_is_proportional_to_layers() {
        let e = MemoryEstimate {
            model_bytes: 3100,
            kv_bytes: 310,
            compute_bytes: 50,
        };
        assert_eq!(gpu_share_bytes(&e, 0, 31), 0);
        assert_eq!(gpu_share_bytes(&e, 31, 31), 3100 + 310 + 50);
        assert_eq!(gpu_share_bytes(&e, 10, 31), 1000 + 100 + 50);
    }

    #[test]
    fn discrete_gpu_refusal_names_both_numbers() {
        let e = MemoryEstimate {
            model_bytes: 900 << 20,
            kv_bytes: 100 << 20,
            compute_bytes: 24 << 20,
        };
        let err = admit_gpu(&e, 31, 31, &dev(GpuKind::Gpu, 512)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("1024 MiB on CUDA0: Orin"), "{msg}");
        assert!(msg.contains("512 MiB free of 8192 MiB"), "{msg}");
        assert_eq!(
            admit_gpu(&e, 31, 31, &dev(GpuKind::Gpu, 2048)),
            Ok(1024 << 20)
        );
        // Unified memory: the device rule does not apply (MemAvailable covers it).
        assert!(admit_gpu(&e, 31, 31, &dev(GpuKind::IntegratedGpu, 0)).is_ok());
    }
}
