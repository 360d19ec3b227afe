#!/usr/bin/env bash
# Checks that an edgewatt binary carries llama.cpp's CUDA backend (no GPU needed):
#   - ggml-cuda is linked in (its registration and init symbols are defined),
#   - device code is embedded (.nv_fatbin section),
#   - it needs the CUDA driver (libcuda.so.1) and cuBLAS at run time.
#   scripts/check-cuda-binary.sh BIN [ARCH]
set -euo pipefail
bin=${1:?usage: check-cuda-binary.sh BIN [ARCH]}
arch=${2:-}
[ -x "$bin" ] || { echo "check-cuda: '$bin' not found or not executable" >&2; exit 1; }
fail=0
check() { if eval "$2"; then echo "  ok   $1"; else echo "  FAIL $1" >&2; fail=1; fi; }
needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
symfile=$(mktemp)
trap 'rm -f "$symfile"' EXIT
nm --defined-only "$bin" > "$symfile" 2>/dev/null || true
syms=$(grep -c 'ggml_backend_cuda_' "$symfile" || true)
fatbin_hex=$(readelf -SW "$bin" | sed 's/^ *\[ *[0-9]*\] *//' | awk '$1 == ".nv_fatbin" { print $5 }')
fatbin=$(( 16#${fatbin_hex:-0} ))
echo "check-cuda: $bin ($(du -h "$bin" | cut -f1))"
echo "  needs: $needed"
check "ggml_backend_cuda_reg defined" "grep -qw ggml_backend_cuda_reg '$symfile'"
check "ggml_backend_cuda_init defined ($syms ggml_backend_cuda_* symbols)" "grep -qw ggml_backend_cuda_init '$symfile'"
check "device code embedded (.nv_fatbin ${fatbin:-0} bytes)" "[ '${fatbin:-0}' -gt 1000000 ]"
check "links the CUDA driver (libcuda.so.1)" "grep -q 'libcuda.so.1' <<<'$needed'"
check "links cuBLAS (libcublas; it brings libcublasLt)" "grep -q 'libcublas.so' <<<'$needed'"
check "CUDA runtime linked statically (cudaGetDeviceCount defined)" "grep -qw cudaGetDeviceCount '$symfile'"
if [ -n "$arch" ]; then
  # Each embedded cubin is an ELF whose e_flags carry the SM; the fatbin text names it too.
  check "device code for sm_$arch" "grep -aq 'sm_$arch' '$bin'"
fi
[ "$fail" -eq 0 ] && echo "check-cuda: ok" || { echo "check-cuda: FAILED" >&2; exit 1; }
