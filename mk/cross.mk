# Cross-compilation (issue 6). Included from the top-level Makefile.
#
#   make aarch64          Raspberry Pi 5 (cortex-a76) with Debian's gcc-aarch64-linux-gnu
#   make aarch64-orin     Jetson Orin CPU build (cortex-a78ae), same toolchain
#   make armv7            32-bit Pi OS (cortex-a72) with gcc-arm-linux-gnueabihf
#   make cross-aarch64    the same as `aarch64` inside cross's container (Docker/Podman)
#   make jetson           native build ON the Orin with CUDA (sm_87)
#   make check-aarch64    build aarch64, check its glibc needs, run it under qemu-aarch64
#   make cross-deps       install the toolchains (Debian, as root)
#
# Why the wrapper compilers (cross/mcpu-cc): llama-cpp-sys-2 passes rustc's
# `-C target-cpu=cortex-a76` (from .cargo/config.toml) to gcc as `-march=cortex-a76`,
# which aarch64 gcc rejects, and ggml adds `-march=armv8-a` to every non-native aarch64
# build, which would lose the dotprod kernels. The wrapper drops both and passes
# `-mcpu=$(EDGEWATT_MCPU)` instead.
#
# Why a separate target directory: a cross build also locks the host layout
# (target/release, for build scripts), so sharing target/ would block every host
# build for as long as llama.cpp takes to compile for aarch64.

CARGO            ?= cargo
CROSS            ?= cross
CROSS_PROFILE    ?= dist
CROSS_TARGET_DIR ?= target/cross
AARCH64          := aarch64-unknown-linux-gnu
ARMV7            := armv7-unknown-linux-gnueabihf
AARCH64_BIN      := $(CROSS_TARGET_DIR)/$(AARCH64)/$(CROSS_PROFILE)/edgewatt
ORIN_TARGET_DIR  ?= target/cross-orin
ORIN_BIN         := $(ORIN_TARGET_DIR)/$(AARCH64)/$(CROSS_PROFILE)/edgewatt
ARMV7_BIN        := $(CROSS_TARGET_DIR)/$(ARMV7)/$(CROSS_PROFILE)/edgewatt
GLIBC_MAX        ?= 2.35
GLIBCXX_MAX      ?= 3.4.30
QEMU_AARCH64     ?= qemu-aarch64
AARCH64_SYSROOT  ?= /usr/aarch64-linux-gnu
CHECK_MODEL      ?= SmolLM2-135M-Instruct.Q4_1
CHECK_PROMPT     ?= The capital of France is

# Environment for a cargo build against Debian's aarch64 cross toolchain.
AARCH64_ENV = CARGO_TARGET_DIR=$(CROSS_TARGET_DIR) \
	CC_aarch64_unknown_linux_gnu=$(CURDIR)/cross/mcpu-cc \
	CXX_aarch64_unknown_linux_gnu=$(CURDIR)/cross/mcpu-c++ \
	AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
	EDGEWATT_REAL_CC=aarch64-linux-gnu-gcc EDGEWATT_REAL_CXX=aarch64-linux-gnu-g++ \
	BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu=--sysroot=$(AARCH64_SYSROOT) \
	PKG_CONFIG_ALLOW_CROSS=1

ARMV7_ENV = CARGO_TARGET_DIR=$(CROSS_TARGET_DIR) \
	CC_armv7_unknown_linux_gnueabihf=$(CURDIR)/cross/mcpu-cc \
	CXX_armv7_unknown_linux_gnueabihf=$(CURDIR)/cross/mcpu-c++ \
	AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar \
	EDGEWATT_REAL_CC=arm-linux-gnueabihf-gcc EDGEWATT_REAL_CXX=arm-linux-gnueabihf-g++ \
	EDGEWATT_MCPU=cortex-a72 "EDGEWATT_EXTRA_CFLAGS=-mfpu=neon-fp-armv8 -mfloat-abi=hard" \
	BINDGEN_EXTRA_CLANG_ARGS_armv7_unknown_linux_gnueabihf=--sysroot=/usr/arm-linux-gnueabihf \
	PKG_CONFIG_ALLOW_CROSS=1

.PHONY: cross-deps aarch64 aarch64-orin armv7 cross-aarch64 cross-armv7 jetson check-aarch64

## cross-deps: rustup targets + Debian cross toolchains, qemu-user, libclang (as root)
cross-deps:
	rustup target add $(AARCH64) $(ARMV7)
	apt-get install -y --no-install-recommends gcc-aarch64-linux-gnu g++-aarch64-linux-gnu \
		binutils-aarch64-linux-gnu gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf \
		qemu-user clang libclang-dev cmake

# Fails early, with the fix, when the Rust standard library for a target is missing.
need_target = @! command -v rustup >/dev/null || rustup target list --installed | grep -qx $(1) \
	|| { echo "the Rust target $(1) is not installed: rustup target add $(1) (or make cross-deps)" >&2; exit 1; }

## aarch64: Raspberry Pi 5 binary ($(AARCH64_BIN))
aarch64:
	$(call need_target,$(AARCH64))
	$(AARCH64_ENV) EDGEWATT_MCPU=cortex-a76 \
		$(CARGO) build --locked --profile $(CROSS_PROFILE) --target $(AARCH64) --bin edgewatt
	@echo "built $(AARCH64_BIN)"

## aarch64-orin: Jetson Orin CPU-only binary, tuned for cortex-a78ae ($(ORIN_BIN))
# RUSTFLAGS replaces .cargo/config.toml's rustflags for the target (cortex-a76); its
# own target dir keeps the two profiles from rebuilding each other.
aarch64-orin:
	$(call need_target,$(AARCH64))
	$(AARCH64_ENV) CARGO_TARGET_DIR=$(ORIN_TARGET_DIR) EDGEWATT_MCPU=cortex-a78ae \
		RUSTFLAGS="-C target-cpu=cortex-a78ae" \
		$(CARGO) build --locked --profile $(CROSS_PROFILE) --target $(AARCH64) --bin edgewatt
	@echo "built $(ORIN_BIN)"

## armv7: 32-bit Raspberry Pi OS binary ($(ARMV7_BIN))
armv7:
	$(call need_target,$(ARMV7))
	$(ARMV7_ENV) $(CARGO) build --locked --profile $(CROSS_PROFILE) --target $(ARMV7) --bin edgewatt
	@echo "built $(ARMV7_BIN)"

## cross-aarch64: aarch64 in cross's container (Cross.toml; needs Docker or Podman)
cross-aarch64:
	@command -v $(CROSS) >/dev/null || { echo "cross not found: cargo install cross --locked" >&2; exit 1; }
	EDGEWATT_MCPU=cortex-a76 $(CROSS) build --locked --profile $(CROSS_PROFILE) --target $(AARCH64) --target-dir $(CROSS_TARGET_DIR) --bin edgewatt

cross-armv7:
	$(call need_target,$(ARMV7))
	@command -v $(CROSS) >/dev/null || { echo "cross not found: cargo install cross --locked" >&2; exit 1; }
	$(CROSS) build --locked --profile $(CROSS_PROFILE) --target $(ARMV7) --target-dir $(CROSS_TARGET_DIR) --bin edgewatt

## jetson: native CUDA build on the Jetson Orin itself (cross-compiling CUDA for Jetson does not work)
# target-cpu=native replaces the cortex-a76 default; the linker is the native one.
# JetPack 6 (L4T r36, Ubuntu 22.04): `sudo apt install nvidia-jetpack` (or cuda-toolkit-12-6)
# puts CUDA 12.6 in /usr/local/cuda; also cmake >= 3.18, clang/libclang-dev for bindgen,
# rustup. The same CUDA flags as `make check-cuda` (mk/cuda.mk): GGML_CUDA via the cuda
# feature, CMAKE_CUDA_ARCHITECTURES=87, CUDAToolkit_ROOT. Check: `edgewatt info` lists
# `CUDA0: Orin (CUDA, integrated: shares RAM, ...)`.
jetson:
	@[ "$$(uname -m)" = aarch64 ] || { echo "make jetson runs on the Orin itself (this is $$(uname -m)); use make aarch64-orin to cross-compile a CPU build" >&2; exit 1; }
	@command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "nvcc not found: install JetPack's cuda-toolkit and add /usr/local/cuda/bin to PATH" >&2; exit 1; }
	PATH="$$PATH:/usr/local/cuda/bin" CMAKE_CUDA_ARCHITECTURES=87 CUDAToolkit_ROOT=/usr/local/cuda \
		RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=cc \
		$(CARGO) build --locked --profile $(CROSS_PROFILE) --features cuda --bin edgewatt
	@echo "built target/$(CROSS_PROFILE)/edgewatt (CUDA sm_87)"

## check-aarch64: glibc <= $(GLIBC_MAX) and a real generation under qemu-aarch64
check-aarch64: aarch64
	cross/check-glibc.sh $(AARCH64_BIN) $(GLIBC_MAX) $(GLIBCXX_MAX)
	cross/check-qemu.sh $(AARCH64_BIN) "$(CHECK_MODEL)" "$(CHECK_PROMPT)"
