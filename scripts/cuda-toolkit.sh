#!/usr/bin/env bash
# Lays out a CUDA toolkit root from NVIDIA's wheels on PyPI, for `make check-cuda`
# (compile the CUDA backend where no GPU and no system toolkit is).
#
#   scripts/cuda-toolkit.sh [ROOT]      default ROOT: $HOME/.cache/edgewatt/cuda-13.0
#
# Why CUDA 13 and not 12 (JetPack 6 is 12.6): the cu12 nvcc wheels carry only ptxas and
# libnvvm (they exist for JAX/Triton), not the nvcc driver, cicc, fatbinary or nvlink.
# The cu13 wheels are a full compiler: nvcc (+ fatbinary, nvlink, cudafe++), nvvm
# (cicc, libdevice), crt headers, cudart, cccl, cublas, culibos. CUDA 13 still targets
# sm_87 (Orin) and sm_90 (H100/H200), so the same ggml-cuda sources compile; the
# binary for the Orin itself is built natively against JetPack with `make jetson`.
#
# What the wheels lack, and what stands in for it here:
#   - lib64/stubs/libcuda.so: the driver API is provided at run time by the GPU
#     driver; a toolkit ships a link stub for it. This script writes one with the
#     same soname (libcuda.so.1), one empty function per `cu*` entry point in cuda.h.
#   - libcublas_static.a / libcublasLt_static.a: llama-cpp-sys-2 links cuBLAS
#     statically on Linux; the wheels ship only the shared libraries. Empty archives
#     satisfy its link lines and `make check-cuda` adds -lcublas -lcublasLt
#     (shared, DT_NEEDED libcublas.so.13) instead.
#
# Result: ROOT/bin/nvcc, ROOT/include, ROOT/lib64 -> lib (libcudart*, libcublas*
# symlinks, stubs/libcuda.so), ROOT/nvvm. Usable as CUDAToolkit_ROOT / CUDA_PATH.
set -euo pipefail

ROOT=${1:-${EDGEWATT_CUDA_ROOT:-$HOME/.cache/edgewatt/cuda-13.0}}
WHEELS=${EDGEWATT_CUDA_WHEELS:-$HOME/.cache/edgewatt/cuda-wheels}
# Pinned: one 13.0 release of each component.
PKGS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-culibos==13.0.85
  nvidia-cublas==13.0.2.14
)

if [ -x "$ROOT/bin/nvcc" ] && [ -e "$ROOT/lib64/stubs/libcuda.so" ] && [ -e "$ROOT/.complete" ]; then
  echo "cuda-toolkit: $ROOT is ready ($("$ROOT/bin/nvcc" --version | tail -1))"
  exit 0
fi

command -v unzip >/dev/null || { echo "cuda-toolkit: unzip not found (apt-get install unzip)" >&2; exit 1; }
PIP=${PIP:-$(command -v pip3 || command -v pip || true)}
[ -n "$PIP" ] || { echo "cuda-toolkit: pip not found (apt-get install python3-pip)" >&2; exit 1; }

mkdir -p "$WHEELS"
echo "cuda-toolkit: downloading ${#PKGS[@]} wheels into $WHEELS"
"$PIP" download --quiet --no-deps \
  -d "$WHEELS" "${PKGS[@]}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for p in "${PKGS[@]}"; do
  name=${p%%==*}; ver=${p##*==}
  whl=$(ls "$WHEELS"/"${name//-/_}"-"$ver"-*.whl | head -1)
  unzip -q -o "$whl" 'nvidia/cu13/*' -d "$tmp"
done
rm -rf "$ROOT"
mkdir -p "$(dirname "$ROOT")"
mv "$tmp/nvidia/cu13" "$ROOT"
rm -rf "$ROOT/.metadata"

cd "$ROOT"
chmod +x bin/* nvvm/bin/* 2>/dev/null || true
ln -sfn lib lib64
# Unversioned names, as a toolkit has them (the linker and FindCUDAToolkit look for these).
for so in lib/libcudart.so.13 lib/libcublas.so.13 lib/libcublasLt.so.13 lib/libnvblas.so.13; do
  [ -e "$so" ] && ln -sfn "$(basename "$so")" "${so%.13}"
done
# nvvm/lib64/libnvvm.so, where nvcc's cicc looks for it.
mkdir -p nvvm/lib64
ln -sfn ../../lib/libnvvm.so.4 nvvm/lib64/libnvvm.so.4
ln -sfn libnvvm.so.4 nvvm/lib64/libnvvm.so

# Empty static cuBLAS archives (see the header).
for a in libcublas_static.a libcublasLt_static.a; do
  ar rcs "lib/$a"
done

# Driver API link stub: every cu* function cuda.h declares (after its _v2 macros).
mkdir -p lib/stubs
gcc -E -P -x c -I include include/cuda.h 2>/dev/null \
  | grep -oE '\bCUresult[[:space:]]+(CUDAAPI[[:space:]]+)?cu[A-Za-z0-9_]+[[:space:]]*\(' \
  | grep -oE 'cu[A-Za-z0-9_]+[[:space:]]*\($' | tr -d ' (' | sort -u \
  | awk 'BEGIN { print "/* link stub: the GPU driver provides these at run time */" }
         { print "int " $1 "(void) { return 999; }" }' > lib/stubs/cuda_stub.c
n=$(grep -c '^int cu' lib/stubs/cuda_stub.c)
[ "$n" -gt 200 ] || { echo "cuda-toolkit: only $n driver functions found in cuda.h" >&2; exit 1; }
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o lib/stubs/libcuda.so lib/stubs/cuda_stub.c
rm lib/stubs/cuda_stub.c

bin/nvcc --version | tail -2
bin/nvcc --list-gpu-arch | tr '\n' ' ' | grep -q compute_87 \
  || { echo "cuda-toolkit: this nvcc cannot target sm_87" >&2; exit 1; }
touch .complete
echo "cuda-toolkit: ready at $ROOT ($n driver stub functions; sm_87 and sm_90 supported)"
