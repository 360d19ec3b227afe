#!/usr/bin/env bash
# GPU offload proof on a lent NVIDIA machine (issue 15): x86-64, NVIDIA GPU + driver,
# nvcc/CMake, but no Rust toolchain and no network. Everything comes with the working
# tree, prepared here by `make cuda-gpu-check` into gpu-check/ (≤ 64 MiB):
#   gpu-check/edgewatt.xz                   edgewatt --features cuda for sm_90, xz-compressed
#   gpu-check/models/tiny-llama-random.gguf llama-architecture, RANDOM WEIGHTS (a few MB):
#                                           proves offload and speed, says nothing of quality
#
# Runs the same bench job (pp512 / tg128, 3 measured reps after a warm-up) with
# n_gpu_layers 0 and 99 and prints: layers offloaded, device memory, prefill and
# decode t/s, and the GPU/CPU ratio. Acceptance (exit 0): all layers offloaded at 99,
# device memory > 0, prefill faster on the GPU than on the CPU.
#
#   scripts/gpu-check.sh              (results also land in $OUT when it is set)
# Budget: well under 10 minutes (xz -d a few s, two bench runs of seconds each).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${GPU_CHECK_DIR:-gpu-check}
OUT=${OUT:-$(mktemp -d)}
MODEL=tiny-llama-random
THREADS=${THREADS:-$(nproc)}
mkdir -p "$OUT"
say() { echo "gpu-check: $*"; }
die() { echo "gpu-check: $*" >&2; exit 1; }

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used \
  --format=csv | tee "$OUT/nvidia-smi.csv" || say "nvidia-smi not found (continuing)"

# The binary: compressed to travel; unpacked outside the tree.
BIN=$OUT/edgewatt
if [ -f "$DIR/edgewatt.xz" ]; then
  xz -dc "$DIR/edgewatt.xz" > "$BIN"
elif [ -f "$DIR/edgewatt" ]; then
  cp "$DIR/edgewatt" "$BIN"
else
  die "no $DIR/edgewatt.xz: run 'make cuda-gpu-check' on the build machine first"
fi
chmod +x "$BIN"

# cuBLAS is linked shared (the PyPI toolkit has no static cuBLAS): find the machine's copy.
if ldd "$BIN" | grep -q 'not found'; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda-13*/targets/x86_64-linux/lib \
           /usr/lib/x86_64-linux-gnu /opt/nvidia/*/lib64 "$DIR/lib"; do
    [ -e "$d/libcublas.so.13" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
  if ldd "$BIN" | grep 'not found'; then
    die "the binary needs the libraries above (CUDA 13 cuBLAS, driver >= 580); none found on this machine"
  fi
fi
ldd "$BIN" | grep -E 'cublas|libcuda' | tee "$OUT/ldd.txt"

say "build and devices"
"$BIN" info | tee "$OUT/info.txt"
grep -q '^gpu  *CUDA' "$OUT/info.txt" || die "edgewatt sees no CUDA device (see $OUT/info.txt)"

[ -f "$DIR/models/$MODEL.gguf" ] || die "no $DIR/models/$MODEL.gguf (make cuda-gpu-check writes it)"
export EDGEWATT__MODELS__DIR="$PWD/$DIR/models"

for ngl in 0 99; do
  say "bench n_gpu_layers=$ngl (RANDOM-WEIGHTS model)"
  timeout 240 "$BIN" bench -m "$MODEL" --pp 512 --tg 128 -r 3 --warmup 1 -t "$THREADS" \
    --n-gpu-layers "$ngl" --json > "$OUT/bench-ngl$ngl.json" 2> "$OUT/bench-ngl$ngl.log" \
    || { tail -20 "$OUT/bench-ngl$ngl.log" >&2; die "bench with n_gpu_layers=$ngl failed"; }
done

python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
r = {n: json.load(open(f"{out}/bench-ngl{n}.json")) for n in (0, 99)}
def row(n):
    b = r[n]; o = b["offload"] or {}
    return (n, f"{o.get('layers', 0)}/{o.get('layers_total', 0)}", ", ".join(o.get("devices", [])) or "CPU",
            o.get("gpu_bytes", 0) / 2**20, o.get("host_bytes", 0) / 2**20,
            b["pp"]["mean_tps"], b["tg"]["mean_tps"])
rows = [row(0), row(99)]
print("\n| n_gpu_layers | offloaded | device | GPU MiB | host MiB | pp512 t/s | tg128 t/s |")
print("|---|---|---|---|---|---|---|")
for x in rows:
    print("| %d | %s | %s | %.1f | %.1f | %.1f | %.1f |" % x)
pp_ratio = rows[1][5] / rows[0][5] if rows[0][5] else 0
tg_ratio = rows[1][6] / rows[0][6] if rows[0][6] else 0
print(f"\nratio GPU/CPU: prefill {pp_ratio:.2f}x, decode {tg_ratio:.2f}x  (random-weights model)")
o = r[99]["offload"]
fails = []
if o["layers"] != o["layers_total"]:
    fails.append(f"only {o['layers']} of {o['layers_total']} layers offloaded")
if o["gpu_bytes"] <= 0:
    fails.append("no device memory reported")
if pp_ratio <= 1.0:
    fails.append("prefill not faster on the GPU")
print("gpu-check:", "ok" if not fails else "FAILED: " + "; ".join(fails))
sys.exit(1 if fails else 0)
EOF
