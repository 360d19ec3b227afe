// C entry points for two llama.cpp functions that exist only as C++ (llama-ext.h,
// "staging" API of llama.cpp pinned by llama-cpp-sys-2 0.1.160): the loaded model's
// device list and the context's memory per buffer type (weights, KV cache, compute).
// Rust cannot call C++ (mangled names, std::map); this file can.
//
// The declarations below repeat llama-ext.h exactly (same names, same types), so the
// calls bind to the definitions in libllama.a; no llama.cpp header is needed at build
// time. If llama.cpp changes them, linking fails rather than misreading memory.
#include <cstddef>
#include <cstdint>
#include <map>

struct llama_context;
struct llama_model;
struct ggml_backend_buffer_type;
struct ggml_backend_device;
typedef struct ggml_backend_buffer_type * ggml_backend_buffer_type_t;
typedef struct ggml_backend_device * ggml_backend_dev_t;

struct llama_memory_breakdown_data {
    size_t model   = 0;
    size_t context = 0;
    size_t compute = 0;

    size_t total() const { return model + context + compute; }
};

using llama_memory_breakdown = std::map<ggml_backend_buffer_type_t, llama_memory_breakdown_data>;

int32_t llama_model_n_devices(const struct llama_model * model);
ggml_backend_dev_t llama_model_get_device(const struct llama_model * model, int i);
llama_memory_breakdown llama_get_memory_breakdown(const struct llama_context * ctx);

extern "C" {

// One buffer type's bytes, as llama.cpp accounts them.
struct edgewatt_buft_bytes {
    ggml_backend_buffer_type_t buft;
    size_t model_bytes;
    size_t context_bytes;
    size_t compute_bytes;
};

int32_t edgewatt_model_n_devices(const struct llama_model * model) {
    return llama_model_n_devices(model);
}

ggml_backend_dev_t edgewatt_model_device(const struct llama_model * model, int32_t i) {
    return llama_model_get_device(model, i);
}

// Writes up to `cap` entries to `out`; returns how many buffer types there are.
size_t edgewatt_memory_breakdown(const struct llama_context * ctx, struct edgewatt_buft_bytes * out, size_t cap) {
    llama_memory_breakdown mb;
    try {
        mb = llama_get_memory_breakdown(ctx);
    } catch (...) {
        return 0;
    }
    size_t i = 0;
    for (const auto & [buft, d] : mb) {
        if (i < cap) {
            out[i] = edgewatt_buft_bytes{buft, d.model, d.context, d.compute};
        }
        i++;
    }
    return i;
}

}  // extern "C"
