#!/usr/bin/env bash
# `make bench-quality`: edgewatt's perplexity against llama.cpp's own llama-perplexity
# (built from the same llama.cpp tree as `make bench`'s llama-bench), on the built-in
# `licenses` text at n_ctx 512, for SmolLM2 Q4_1 and Gemma 3 Q4_K_M, the two tools
# alternating (order flipping every round) so both see the same machine noise.
#
#   bench/quality.sh [ROUNDS]
#   env: THREADS (default nproc), N_CTX (512), CHUNKS (default all: every whole chunk),
#        MODELS (default "SmolLM2-135M-Instruct.Q4_1 gemma-3-270m-q4_k_m"),
#        EDGEWATT_BIN (default target/release/edgewatt).
#
# Targets (issue 12): |PPL_edgewatt / PPL_llama − 1| ≤ 0.5 %, tokens/s ratio ≥ 0.98.
# tokens/s: chunks × n_ctx over the eval wall time of each — llama-perplexity's from its
# log timestamps ("calculating perplexity" → "Final estimate"), edgewatt's
# `tokens_evaluated_per_s` (its eval phase); both include decoding and the log-softmax
# of every scored row, neither includes load or tokenization.
# llama-perplexity runs with its defaults (n_batch 2048 → 4 chunks per batch of
# 512-token ubatches, flash_attn auto); edgewatt decodes one chunk per batch.
# The text file given to llama-perplexity is the built-in text written out (the regular
# files of /usr/share/common-licenses, byte-wise sorted, concatenated); its sha256 is
# checked against the one edgewatt reports.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS="${1:-${ROUNDS:-2}}"
THREADS="${THREADS:-$(nproc)}"
N_CTX="${N_CTX:-512}"
CHUNKS="${CHUNKS:-}"
MODELS="${MODELS:-SmolLM2-135M-Instruct.Q4_1 gemma-3-270m-q4_k_m}"
EDGEWATT_BIN="${EDGEWATT_BIN:-$ROOT/target/release/edgewatt}"

bash "$ROOT/bench/build-llama-bench.sh"
PPL_BIN="$(bash "$ROOT/bench/build-llama-bench.sh" --print-perplexity)"
OUT="$ROOT/.bench/results/quality-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
TEXT="$OUT/licenses.txt"
python3 - "$TEXT" <<'PY'
import os, sys
d = b"/usr/share/common-licenses"
names = sorted(n for n in os.listdir(d) if os.path.isfile(os.path.join(d, n)) and not os.path.islink(os.path.join(d, n)))
with open(sys.argv[1], "wb") as out:
    for n in names:
        with open(os.path.join(d, n), "rb") as f:
            out.write(f.read())
PY
TEXT_SHA="$(sha256sum "$TEXT" | cut -d' ' -f1)"
echo "text: licenses ($(wc -w < "$TEXT") words, sha256 $TEXT_SHA), n_ctx $N_CTX, threads $THREADS, rounds $ROUNDS${CHUNKS:+, chunks $CHUNKS}"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

run_llama() { # model-name round
    local log="$OUT/llama-$1-$2.log"
    "$PPL_BIN" -m "models/$1.gguf" -f "$TEXT" -c "$N_CTX" -t "$THREADS" ${CHUNKS:+--chunks "$CHUNKS"} >"$log" 2>&1 || {
        tail -20 "$log" >&2; exit 1; }
    local ppl tps
    ppl="$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\) +\/- \([0-9.]*\).*/\1 \2/p' "$log")"
    # Eval wall time: its log's timestamps (MM.SS.mmm.uuu since start) from
    # "calculating perplexity over N chunks" to "Final estimate".
    tps="$(python3 - "$log" "$N_CTX" <<'PY'
import re, sys
t = lambda s: (lambda m, s_, ms, us: int(m) * 60 + int(s_) + int(ms) / 1e3 + int(us) / 1e6)(*s.split("."))
log, n_ctx = open(sys.argv[1], errors="replace").read(), int(sys.argv[2])
a = re.search(r"^(\d+\.\d+\.\d+\.\d+) I perplexity: calculating perplexity over (\d+) chunks", log, re.M)
b = re.search(r"^(\d+\.\d+\.\d+\.\d+) I Final estimate", log, re.M)
print(int(a.group(2)) * n_ctx / (t(b.group(1)) - t(a.group(1))))
PY
)"
    echo "$ppl $tps" > "$OUT/llama-$1-$2.txt"
}
run_edgewatt() { # model-name round
    local js="$OUT/edgewatt-$1-$2.json"
    "$EDGEWATT_BIN" quality -m "$1" --text licenses --n-ctx "$N_CTX" -t "$THREADS" ${CHUNKS:+--max-chunks "$CHUNKS"} --json >"$js" 2>"$OUT/edgewatt-$1-$2.log" || {
        tail -20 "$OUT/edgewatt-$1-$2.log" >&2; exit 1; }
    python3 - "$js" "$TEXT_SHA" > "$OUT/edgewatt-$1-$2.txt" <<'PY'
import json, sys
q = json.load(open(sys.argv[1]))["quality"]
if q["text_sha256"] != sys.argv[2]:
    sys.exit(f"text sha256 differs: edgewatt {q['text_sha256']} vs file {sys.argv[2]}")
print(q["ppl"], q["ppl_stderr"], q["tokens_evaluated_per_s"], q["chunks"])
PY
}

for m in $MODELS; do
    [[ -f "models/$m.gguf" ]] || { echo "model not found: models/$m.gguf (run \`make models\`)" >&2; exit 1; }
    for r in $(seq 1 "$ROUNDS"); do
        if (( r % 2 )); then run_llama "$m" "$r"; run_edgewatt "$m" "$r"
        else run_edgewatt "$m" "$r"; run_llama "$m" "$r"; fi
        echo "  $m round $r: llama $(cat "$OUT/llama-$m-$r.txt") | edgewatt $(cat "$OUT/edgewatt-$m-$r.txt")"
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$OUT" "$ROUNDS" $MODELS <<'PY' | tee "$OUT/summary.md"
import sys, statistics as st
out, rounds, models = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| model | chunks | llama-perplexity PPL | edgewatt PPL | ΔPPL | llama t/s | edgewatt t/s | ratio | pass |")
print("|---|---|---|---|---|---|---|---|---|")
ok = True
for m in models:
    L = [list(map(float, open(f"{out}/llama-{m}-{r}.txt").read().split())) for r in range(1, rounds + 1)]
    E = [list(map(float, open(f"{out}/edgewatt-{m}-{r}.txt").read().split())) for r in range(1, rounds + 1)]
    lp, lse = L[0][0], L[0][1]
    ep, ese = E[0][0], E[0][1]
    lt = st.mean(x[2] for x in L); et = st.mean(x[2] for x in E)
    d = (ep / lp - 1) * 100
    ratio = et / lt
    p = abs(d) <= 0.5 and ratio >= 0.98
    ok &= p
    print(f"| {m} | {int(E[0][3])} | {lp:.4f} ± {lse:.5f} | {ep:.4f} ± {ese:.5f} | {d:+.3f} % | {lt:.1f} | {et:.1f} | {ratio:.3f} | {'yes' if p else 'NO'} |")
print()
print("targets: |ΔPPL| ≤ 0.5 %, edgewatt/llama tokens/s ≥ 0.98" + ("" if ok else " — NOT MET (see rows)"))
PY
echo "raw logs and JSON: $OUT"
