#!/usr/bin/env bash
# Overhead of `study run --local`: its wall time against the sum of its runs'
# timings.total_ms plus the wait before each run: the settle gate's settle_ms (plan
# [cooldown]) and, unless the gate settled (its settle_s hold then covers it), the
# idle window (power.idle_window_ms; the example's settle_s 1 s >= 0.5 s).
# Target: <= 2 % extra. Usage: study-overhead.sh BIN [PLAN]   (make study-demo's config)
set -euo pipefail
bin="$(realpath "$1")"; plan="${2:-studies/example.toml}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cfg="$root/target/study-demo/edgewatt.toml"
[ -f "$cfg" ] || { echo "run 'make study-demo' once first (it writes $cfg)"; exit 1; }
db="$(mktemp -d)/bench.study.db"
idle_ms="$(sed -n 's/^idle_window_ms = \([0-9]*\)/\1/p' "$cfg")"
start="$(date +%s.%N)"
"$bin" study run --config "$cfg" --local --json --db "$db" "$plan" > "$db.jsonl"
end="$(date +%s.%N)"
python3 - "$db.jsonl" "$start" "$end" "${idle_ms:-0}" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
wall = float(sys.argv[3]) - float(sys.argv[2])
runs = sum(l["total_ms"] for l in lines) / 1e3
idle_s = float(sys.argv[4]) / 1e3
gate = sum(l.get("settle_ms", 0.0) for l in lines) / 1e3
settle = gate + sum(0.0 if l.get("settled") else idle_s for l in lines)
calls = sum(l["wall_ms"] for l in lines) / 1e3
print(f"runs {len(lines)}  wall {wall:.2f} s  sum(total_ms) {runs:.2f} s  waits {settle:.2f} s (gate {gate:.2f} s)  "
      f"sum(per-run wall) {calls:.2f} s")
print(f"overhead vs runs + waits: {100 * (wall / (runs + settle) - 1):.1f} %  "
      f"(process start, engine start and model loads included)")
PY
