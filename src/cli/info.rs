//! `edgewatt info` (and the long `--version`): what this binary was built for.

use serde::Serialize;

use crate::infer::GpuDevice;

/// Build facts.
#[derive(Debug, Serialize)]
pub struct BuildInfo {
    pub version: &'static str,
    pub target: &'static str,
    /// `-C target-cpu` the crate (and so ggml) was compiled with.
    pub target_cpu: &'static str,
    /// CPU features enabled at compile time in the Rust code.
    pub rust_features: Vec<&'static str>,
    /// ggml's own report of the CPU features it was compiled with.
    pub ggml_system_info: String,
    pub llama_cpp_crate: &'static str,
    /// Compiled with a GPU feature (`cuda`).
    pub gpu_offload: bool,
    /// GPU backends ggml's registry holds at run time (`CUDA`); empty on a CPU build.
    pub gpu_backends: Vec<String>,
    /// Their devices, with free/total memory now.
    pub gpu_devices: Vec<GpuDevice>,
}

fn rust_features() -> Vec<&'static str> {
    let mut v = Vec::new();
    macro_rules! feat {
        ($($f:tt),*) => {$( if cfg!(target_feature = $f) { v.push($f); } )*};
    }
    feat!(
        "sse3",
        "ssse3",
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512vnni",
        "neon",
        "dotprod",
        "i8mm",
        "fp16",
        "sve"
    );
    v
}

/// Collects the build facts.
pub fn build_info() -> BuildInfo {
    // SAFETY: llama_print_system_info returns a pointer to a static, NUL-terminated buffer.
    let sys = unsafe {
        let p = llama_cpp_sys_2::llama_print_system_info();
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    let gpu_devices = crate::infer::gpu_devices();
    let mut gpu_backends: Vec<String> = gpu_devices.iter().map(|d| d.backend.clone()).collect();
    gpu_backends.dedup();
    BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        target: env!("EDGEWATT_TARGET"),
        target_cpu: env!("EDGEWATT_TARGET_CPU"),
        rust_features: rust_features(),
        ggml_system_info: sys.trim().to_string(),
        llama_cpp_crate: "llama-cpp-2 0.1.160",
        gpu_offload: cfg!(feature = "cuda"),
        gpu_backends,
        gpu_devices,
    }
}

/// The text for `--version`.
pub fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{}\ntarget: {} (target-cpu={})\nllama.cpp: {} (ggml CPU features: see `edgewatt info`)",
            env!("CARGO_PKG_VERSION"),
            env!("EDGEWATT_TARGET"),
            env!("EDGEWATT_TARGET_CPU"),
            "llama-cpp-2 0.1.160"
        )
    })
}

/// The `gpu` line: the backends ggml sees, or why there are none.
pub fn gpu_line(b: &BuildInfo) -> String {
    match (b.gpu_backends.is_empty(), b.gpu_offload) {
        (false, _) => format!(
            "{} ({} device{})",
            b.gpu_backends.join(", "),
            b.gpu_devices.len(),
            if b.gpu_devices.len() == 1 { "" } else { "s" }
        ),
        (true, false) => "no GPU backend (CPU build)".to_string(),
        (true, true) => "no GPU backend: built with cuda but ggml found no CUDA device \
                         (driver missing or no GPU)"
            .to_string(),
    }
}

/// `CUDA0: Orin (CUDA, integrated: shares RAM, 6812/7620 MiB free)`.
pub fn device_line(d: &GpuDevice) -> String {
    format!(
        "{} ({}, {}, {}/{} MiB free)",
        d.label(),
        d.backend,
        if d.unified_memory() {
            "integrated: shares RAM"
        } else {
            "discrete"
        },
        d.memory_free_bytes >> 20,
        d.memory_total_bytes >> 20
    )
}

/// Prints build info as text or JSON.
pub fn run(json: bool) -> anyhow::Result<()> {
    let b = build_info();
    if json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        println!("edgewatt {}", b.version);
        println!("target       {}", b.target);
        println!("target-cpu   {}", b.target_cpu);
        println!("rust features {}", b.rust_features.join(" "));
        println!("ggml         {}", b.ggml_system_info);
        println!("llama.cpp    {}", b.llama_cpp_crate);
        println!("gpu          {}", gpu_line(&b));
        for d in &b.gpu_devices {
            println!("  {}", device_line(d));
        }
    }
    Ok(())
}
