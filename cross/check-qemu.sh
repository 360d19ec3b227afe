#!/bin/sh
# check-qemu.sh BINARY MODEL_NAME PROMPT
#
# Runs the aarch64 binary under qemu-user (Debian's qemu-user, with the cross
# toolchain's libraries as its sysroot) and asks it for 8 tokens from the real model:
# proof that the cross-compiled llama.cpp, OpenMP and the binary's own code work.
# QEMU's default "max" CPU has the dotprod/fp16 extensions the cortex-a76 build uses.
set -eu
bin="${1:?usage: check-qemu.sh BINARY MODEL_NAME PROMPT}"
model="${2:?model name (file stem in the model directory)}"
prompt="${3:-The capital of France is}"
qemu="${QEMU_AARCH64:-qemu-aarch64}"
sysroot="${AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}"
models="${MODELS_DIR:-$(pwd)/models}"

command -v "$qemu" >/dev/null || { echo "check-qemu: '$qemu' not found (apt-get install qemu-user)" >&2; exit 2; }
[ -f "$models/$model.gguf" ] || { echo "check-qemu: no model '$models/$model.gguf' (make model)" >&2; exit 2; }

out=$(mktemp)
trap 'rm -f "$out"' EXIT
# The model directory comes from the environment layer, whatever /etc/edgewatt says.
EDGEWATT__MODELS__DIR="$models" "$qemu" -L "$sysroot" "$bin" --version
start=$(date +%s)
EDGEWATT__MODELS__DIR="$models" timeout "${QEMU_TIMEOUT_S:-900}" \
  "$qemu" -L "$sysroot" "$bin" generate --model "$model" --prompt "$prompt" \
  --max-tokens 8 --threads 2 --json > "$out"
secs=$(( $(date +%s) - start ))

# tokens.generated > 0 and a non-empty text, from the result JSON.
python3 - "$out" "$secs" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
generated = r["tokens"]["generated"]
text = r["text"]
if generated < 1 or not text.strip():
    sys.exit(f"check-qemu: no tokens: generated={generated} text={text!r}")
print(f"check-qemu: ok: {generated} tokens under qemu-aarch64 in {sys.argv[2]} s: {text!r}")
PY
