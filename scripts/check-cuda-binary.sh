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
syms=$(nm -C --defined-only "$bin" 2>/dev/null | grep -c 'ggml_backend_cuda_' || true)
fatbin=$(readelf -SW "$bin" | awk '$2 == ".nv_fatbin" { print strtonum("0x" $6) }')
echo "check-cuda: $bin ($(du -h "$bin" | cut -f1))"
echo "  needs: $needed"
check "ggml_backend_cuda_reg defined" "nm --defined-only '$bin' | grep -qw ggml_backend_cuda_reg"
check "ggml_backend_cuda_init defined ($syms ggml_backend_cuda_* symbols)" "nm --defined-only '$bin' | grep -qw ggml_backend_cuda_init"
check "device code embedded (.nv_fatbin ${fatbin:-0} bytes)" "[ '${fatbin:-0}' -gt 1000000 ]"
check "links the CUDA driver (libcuda.so.1)" "grep -q 'libcuda.so.1' <<<'$needed'"
check "links cuBLAS (libcublas, libcublasLt)" "grep -q 'libcublas.so' <<<'$needed' && grep -q 'libcublasLt.so' <<<'$needed'"
check "CUDA runtime linked statically (cudaGetDeviceCount defined)" "nm --defined-only '$bin' | grep -q ' cudaGetDeviceCount'"
if [ -n "$arch" ]; then
  # Each embedded cubin is an ELF whose e_flags carry the SM; the fatbin text names it too.
  check "device code for sm_$arch" "grep -aq 'sm_$arch' '$bin'"
fi
[ "$fail" -eq 0 ] && echo "check-cuda: ok" || { echo "check-cuda: FAILED" >&2; exit 1; }
