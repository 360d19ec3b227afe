//! `edgewatt info` (and the long `--version`): what this binary was built for.

use serde::Serialize;

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
    pub gpu_offload: bool,
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
    BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        target: env!("EDGEWATT_TARGET"),
        target_cpu: env!("EDGEWATT_TARGET_CPU"),
        rust_features: rust_features(),
        ggml_system_info: sys.trim().to_string(),
        llama_cpp_crate: "llama-cpp-2 0.1.160",
        gpu_offload: cfg!(feature = "cuda"),
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
        println!(
            "gpu offload  {}",
            if b.gpu_offload {
                "cuda"
            } else {
                "none (CPU build)"
            }
        );
    }
    Ok(())
}
