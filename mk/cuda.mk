# The CUDA build proven on a machine without a GPU (issue 15). Included from the Makefile.
#
#   make cuda-toolkit   lay out a CUDA 13 toolkit root from NVIDIA's PyPI wheels
#   make check-cuda     compile edgewatt --features cuda for the Orin (sm_87) with it and
#                       check the binary carries the CUDA backend (cudart, cuBLAS, ggml-cuda)
#   make cuda-gpu-check build the sm_90 binary + random-weights model that
#                       scripts/gpu-check.sh runs on a lent NVIDIA machine
#
# Its own target dir: a CUDA build of llama.cpp takes long and must not lock or
# replace the CPU build in target/. Cold, on 2 cores, it does not fit CI's budget next to
# the CPU and aarch64 builds, so it is a target to run before a release, not a CI step.
#
# The toolkit (scripts/cuda-toolkit.sh) lacks two pieces a system toolkit has: static
# cuBLAS (llama-cpp-sys-2 links it statically on Linux; empty archives stand in and
# cuBLAS is linked shared below) and the driver stub libcuda.so (generated from cuda.h).
# RUSTFLAGS replaces .cargo/config.toml's `native`: x86-64-v3 runs on any AVX2 machine.

CUDA_ROOT        ?= $(HOME)/.cache/edgewatt/cuda-13.0
CUDA_TARGET_DIR  ?= target/cuda
CUDA_ARCH        ?= 87
CUDA_JOBS        ?= 2
CUDA_CPU         ?= x86-64-v3
CUDA_BIN          = $(CUDA_TARGET_DIR)/release/edgewatt
# find_cuda_helper (llama-cpp-sys-2's link search) reads CUDA_LIBRARY_PATH on Linux;
# CUDA_PATH is only what makes its build script rerun.
CUDA_PATH_ENV    ?= $(CUDA_ROOT)

CUDA_ENV = CARGO_TARGET_DIR=$(CUDA_TARGET_DIR) PATH="$(CUDA_ROOT)/bin:$$PATH" \
	CUDA_PATH=$(CUDA_PATH_ENV) CUDA_LIBRARY_PATH=$(CUDA_ROOT) CUDAToolkit_ROOT=$(CUDA_ROOT) \
	CMAKE_CUDA_COMPILER=$(CUDA_ROOT)/bin/nvcc CMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCH) \
	CMAKE_BUILD_PARALLEL_LEVEL=$(CUDA_JOBS) CARGO_BUILD_JOBS=$(CUDA_JOBS) \
	RUSTFLAGS="-C target-cpu=$(CUDA_CPU) -C link-arg=-L$(CUDA_ROOT)/lib64 -C link-arg=-L$(CUDA_ROOT)/lib64/stubs -C link-arg=-lcublas -C link-arg=-lcublasLt"

.PHONY: cuda-toolkit check-cuda cuda-gpu-check

## cuda-toolkit: CUDA 13 toolkit root from PyPI wheels ($(CUDA_ROOT))
cuda-toolkit:
	scripts/cuda-toolkit.sh $(CUDA_ROOT)

## check-cuda: edgewatt --features cuda for sm_$(CUDA_ARCH), linked against the CUDA backend
check-cuda: cuda-toolkit
	@t0=$$(date +%s); \
	$(CUDA_ENV) nice -n 19 $(CARGO) build --locked --release --features cuda --bin edgewatt \
	  && echo "check-cuda: build took $$(( $$(date +%s) - t0 )) s"
	scripts/check-cuda-binary.sh $(CUDA_BIN) $(CUDA_ARCH)

## cuda-gpu-check: gpu-check/ for scripts/gpu-check.sh (sm_90 binary, xz; random-weights model)
# Its own target dir again (a different CUDA_ARCH rebuilds ggml-cuda). Carry gpu-check/
# to the lent machine with the working tree and run scripts/gpu-check.sh there.
GPU_CHECK_ARCH ?= 90
cuda-gpu-check: cuda-toolkit
	$(MAKE) --no-print-directory check-cuda CUDA_ARCH=$(GPU_CHECK_ARCH) CUDA_TARGET_DIR=$(CUDA_TARGET_DIR)-sm$(GPU_CHECK_ARCH)
	mkdir -p gpu-check/models
	xz -T2 -9 -c $(CUDA_TARGET_DIR)-sm$(GPU_CHECK_ARCH)/release/edgewatt > gpu-check/edgewatt.xz
	python3 scripts/tiny-llama-gguf.py gpu-check/models/tiny-llama-random.gguf
	@du -sh gpu-check; [ $$(du -sm gpu-check | cut -f1) -le 64 ] || { echo "gpu-check/ is over 64 MiB" >&2; exit 1; }
