#!/usr/bin/env bash
# Build llama.cpp's own `llama-bench` from the llama.cpp version closest to the one
# llama-cpp-sys-2 vendors, so `make bench` can compare edgewatt against it.
#
# The crate's vendored llama.cpp ships without the tools' sources (tools/llama-bench
# has only its README), so the tree comes from the llama-cpp-python sdist on PyPI,
# which vendors the full llama.cpp tree (vendor/llama.cpp, tools/llama-bench included).
#
#   bench/build-llama-bench.sh            # download + build (skipped when already built)
#   bench/build-llama-bench.sh --print    # print the path of the llama-bench binary
#   bench/build-llama-bench.sh --print-perplexity  # the path of llama-perplexity (same build)
#   bench/build-llama-bench.sh --ids      # print both build ids only
#
# Env: EDGEWATT_BENCH_DIR (default <repo>/.bench, git-ignored), JOBS (default nproc),
#      NICE (default 10: a background build must not starve other builds).
#
# Which sdist, and why (checked 2026-11-23):
#   llama-cpp-sys-2 =0.1.160 (crates.io 2026-10-15, llama-cpp-rs commit 0dd5814c) vendors
#   llama.cpp 0.6.0 (CMakeLists LLAMA_VERSION 0.6.0, ggml 0.26.0, LLAMA_SESSION_VERSION 11,
#   LLAMA_STATE_SEQ_VERSION 4, src/models/clef.cpp): the v0.6.0 release (= b11429-d81235049,
#   2026-10-05) or a commit after it and before the next release. The crates.io package has
#   no .git, so the exact commit is not recorded in it.
#   llama-cpp-python 0.3.36 is the newest release on PyPI; its CHANGELOG pins
#   ggml-org/llama.cpp@0c1e57098 (= b11312, 2026-10-01): llama.cpp 0.5.0, ggml 0.25.3,
#   session version 10. Every sdist is older than the crate, so the newest is the closest:
#   include/llama.h differs only in the two state-version macros; ggml/include only in
#   ggml-backend.h (new *_alloc_buffer_n / *_get_alloc_size_n helpers) and a comment in
#   ggml-alloc.h; src/ + ggml/src/ + common/ differ in ~210 files (~11.9k diff lines),
#   mostly new model architectures and GPU backends. Older sdists are strictly further away.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${EDGEWATT_BENCH_DIR:-$ROOT/.bench}"
JOBS="${JOBS:-$(nproc)}"
NICE="${NICE:-10}"

SDIST_VERSION="0.3.36"
SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# llama.cpp in that sdist (its CHANGELOG.md: "update llama.cpp to ggml-org/llama.cpp@0c1e57098").
LLAMA_BENCH_COMMIT="0c1e57098bba43ac29e6e3b677cdceebdd22334f"
LLAMA_BENCH_BUILD=11312

# The crate's llama.cpp. The crates.io package carries no .git, so llama-cpp-sys-2's own
# build-info is generated without git (build 0, commit "unknown"); print what its source
# says (version from Cargo.lock, versions from its CMake files) plus what we determined.
CRATE_LLAMA_KNOWN="0.1.160|llama.cpp v0.6.0 = b11429-d81235049 or a later 0.6.0 commit (exact commit not recorded in the package)"

crate_ids() {
    local v src vcs lv gv sv
    v="$(awk '/^name = "llama-cpp-sys-2"/{getline; gsub(/[^0-9.]/, ""); print; exit}' "$ROOT/Cargo.lock" 2>/dev/null || true)"
    src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"llama-cpp-sys-2-$v" 2>/dev/null | head -1 || true)"
    if [[ -z "$v" || -z "$src" ]]; then
        echo "edgewatt:    llama-cpp-sys-2 ${v:-?} (source not found; run cargo fetch)"
        return
    fi
    vcs="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["git"]["sha1"])' "$src/.cargo_vcs_info.json" 2>/dev/null || echo '?')"
    lv="$(sed -n 's/^set(LLAMA_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\))/\2/p' "$src/llama.cpp/CMakeLists.txt" | paste -sd.)"
    gv="$(sed -n 's/^set(GGML_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\))/\2/p' "$src/llama.cpp/ggml/CMakeLists.txt" | paste -sd.)"
    sv="$(sed -n 's/^#define LLAMA_SESSION_VERSION \([0-9]*\)/\1/p' "$src/llama.cpp/include/llama.h")"
    echo "edgewatt:    llama-cpp-sys-2 $v (utilityai/llama-cpp-rs@${vcs:0:12}), vendored llama.cpp $lv, ggml $gv, LLAMA_SESSION_VERSION $sv"
    if [[ "$v" == "${CRATE_LLAMA_KNOWN%%|*}" ]]; then
        echo "             = ${CRATE_LLAMA_KNOWN#*|}"
    fi
}

SRC="$BENCH_DIR/llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp"
BUILD="$BENCH_DIR/build-llama-bench-$SDIST_VERSION"
BIN="$BUILD/bin/llama-bench"
# llama-perplexity from the same tree and build (make bench-quality compares edgewatt's
# perplexity / KL divergence with it).
PPL_BIN="$BUILD/bin/llama-perplexity"

print_ids() {
    echo "llama-bench: llama-cpp-python $SDIST_VERSION sdist, llama.cpp b$LLAMA_BENCH_BUILD-${LLAMA_BENCH_COMMIT:0:9} (llama.cpp 0.5.0, ggml 0.25.3, LLAMA_SESSION_VERSION 10)"
    crate_ids
}

case "${1:-}" in
    --print) echo "$BIN"; exit 0 ;;
    --print-perplexity) echo "$PPL_BIN"; exit 0 ;;
    --ids) print_ids; exit 0 ;;
esac

if [[ -x "$BIN" && -x "$PPL_BIN" ]]; then
    echo "llama-bench and llama-perplexity already built: $BIN" >&2
    print_ids >&2
    exit 0
fi

mkdir -p "$BENCH_DIR"
TARBALL="$BENCH_DIR/llama_cpp_python-$SDIST_VERSION.tar.gz"
if [[ ! -f "$TARBALL" ]]; then
    echo "downloading llama-cpp-python==$SDIST_VERSION sdist into $BENCH_DIR" >&2
    python3 -m pip download --quiet --no-deps --no-binary :all: \
        "llama-cpp-python==$SDIST_VERSION" -d "$BENCH_DIR"
fi
echo "$SDIST_SHA256  $TARBALL" | sha256sum -c --quiet - || {
    echo "sha256 mismatch for $TARBALL" >&2
    exit 1
}
if [[ ! -f "$SRC/tools/llama-bench/llama-bench.cpp" ]]; then
    tar -xzf "$TARBALL" -C "$BENCH_DIR"
fi
# The sdist's vendor/llama.cpp/.git is a dangling submodule pointer; move it aside so
# cmake's build-info does not ask the enclosing repository (edgewatt's) for a commit.
[[ -f "$SRC/.git" ]] && mv "$SRC/.git" "$SRC/.git.submodule"

# Mirror llama-cpp-sys-2 0.1.160 build.rs for a `-C target-cpu=native` x86-64/aarch64 build
# with the `openmp` feature (what edgewatt's Cargo.toml + .cargo/config.toml select):
#   GGML_NATIVE=ON, GGML_OPENMP=ON, BUILD_SHARED_LIBS=OFF, Release, LLAMA_CURL=OFF,
#   no tests/examples/server/app. Only the tools are switched on, and only
#   the llama-bench and llama-perplexity targets are built.
echo "configuring llama-bench (b$LLAMA_BENCH_BUILD) in $BUILD" >&2
nice -n "$NICE" cmake -S "$SRC" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=ON \
    -DGGML_OPENMP=ON \
    -DGGML_BLAS=OFF \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_COMMON=ON \
    -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_BUILD_NUMBER="$LLAMA_BENCH_BUILD" \
    -DLLAMA_BUILD_COMMIT="${LLAMA_BENCH_COMMIT:0:9}" \
    >"$BENCH_DIR/cmake-configure.log" 2>&1 || {
    tail -40 "$BENCH_DIR/cmake-configure.log" >&2
    exit 1
}
echo "building llama-bench + llama-perplexity with $JOBS jobs at nice $NICE (several minutes on 2 cores)" >&2
nice -n "$NICE" cmake --build "$BUILD" --target llama-bench llama-perplexity -j "$JOBS" \
    >"$BENCH_DIR/cmake-build.log" 2>&1 || {
    tail -40 "$BENCH_DIR/cmake-build.log" >&2
    exit 1
}
echo "built $BIN and $PPL_BIN" >&2
print_ids >&2
