//! Records how the binary was built (target, rustflags) for `edgewatt info`/`--version`,
//! and compiles the small C++ shim in csrc/.
fn main() {
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS")
        .unwrap_or_default()
        .replace('\x1f', " ");
    let target_cpu = flags
        .split_whitespace()
        .find_map(|f| f.strip_prefix("target-cpu="))
        .unwrap_or("baseline")
        .to_string();
    println!("cargo:rustc-env=EDGEWATT_TARGET_CPU={target_cpu}");
    println!(
        "cargo:rustc-env=EDGEWATT_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    println!("cargo:rerun-if-changed=build.rs");

    // C entry points for llama.cpp's C++-only memory/device queries (src/infer/llama_mem.rs).
    println!("cargo:rerun-if-changed=csrc/llama_memory.cpp");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .warnings(true)
        .file("csrc/llama_memory.cpp")
        .compile("edgewatt_llama_memory");
}
