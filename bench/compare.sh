#!/usr/bin/env bash
# `make bench`: llama.cpp's own llama-bench against `edgewatt bench`, pp512 and tg128,
# same model, same threads, run alternately so both sides see the same machine noise.
#
#   bench/compare.sh [MODEL.gguf] [THREADS] [ROUNDS]
#     MODEL    default models/SmolLM2-135M-Instruct.Q4_1.gguf
#     THREADS  default $(nproc)            (also env THREADS)
#     ROUNDS   default 5 measured rounds   (also env ROUNDS)
#   env: EDGEWATT_BIN (default target/release/edgewatt), EW_WARMUP (edgewatt warm-up
#        runs per invocation, default 1: llama-bench warms up inside every invocation
#        too, see below), LLAMA_BENCH_ONLY=1 (skip edgewatt), PP (512), TG (128).
#
# Plan: one discarded warm-up invocation of each side, then ROUNDS rounds; each round
# runs `llama-bench -p PP -n TG -r 1` (two tests, model loaded once) and
# `edgewatt bench --pp PP --tg TG --repeat 1` once, the order flipping every round.
# Each side's ROUNDS per-round figures give mean ± sd (sample sd); ratio = edgewatt /
# llama-bench means; pass when ratio >= 0.98 (issue 2's target). Raw JSON and the table
# (summary.md) go to .bench/results/<UTC time>/. On a shared machine the figures are only
# as good as its quiet: the load average before/after is printed, with a warning when
# other work was running (OpenMP threads = cores degrade badly under contention).
#
# What llama-bench does per invocation (b11312 tools/llama-bench/llama-bench.cpp):
#   defaults: n_batch 2048, n_ubatch 512, type_k/type_v f16, flash_attn auto (resolves
#   to enabled on CPU), load_mode auto (= mmap where the device supports it), repack
#   (use_extra_bufts) on, poll 50, cpu_mask 0x0, n_ctx = n_prompt + n_gen (512 for
#   pp512, 128 for tg128), its own threadpool attached with -t threads.
#   warm-up (before the measured reps): pp -> one full pp run; tg -> a 1-token gen run.
#   pp: tokens[0] = BOS if the vocab adds one, the rest rand() % n_vocab, decoded in
#       chunks of n_batch (so one 512-token batch), logits for the last token only;
#       timed up to llama_synchronize.
#   tg: first token BOS (or random), then rand() % n_vocab, one token per decode,
#       logits on, llama_synchronize after each; no sampling; KV cleared before each rep.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODEL="${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
THREADS="${2:-${THREADS:-$(nproc)}}"
ROUNDS="${3:-${ROUNDS:-5}}"
PP="${PP:-512}"
TG="${TG:-128}"
EW_WARMUP="${EW_WARMUP:-1}"
EDGEWATT_BIN="${EDGEWATT_BIN:-$ROOT/target/release/edgewatt}"
TARGET=0.98

if [[ ! -f "$MODEL" ]]; then
    echo "model not found: $MODEL (run \`make model\`)" >&2
    exit 1
fi
MODEL_ABS="$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")"
MODEL_DIR="$(dirname "$MODEL_ABS")"
MODEL_NAME="$(basename "$MODEL_ABS" .gguf)"

bash "$ROOT/bench/build-llama-bench.sh"
LLAMA_BENCH="$(bash "$ROOT/bench/build-llama-bench.sh" --print)"

# edgewatt half: only when the binary has the `bench` subcommand.
EW=1
if [[ "${LLAMA_BENCH_ONLY:-0}" == 1 ]]; then
    EW=0
elif [[ ! -x "$EDGEWATT_BIN" ]] || ! "$EDGEWATT_BIN" bench --help 2>/dev/null | grep -q -- '--pp'; then
    echo "warning: $EDGEWATT_BIN has no working \`bench\` subcommand; running the llama-bench half only" >&2
    EW=0
fi

OUT="$ROOT/.bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

run_lb() { # $1 = output file
    "$LLAMA_BENCH" -m "$MODEL_ABS" -p "$PP" -n "$TG" -r 1 -t "$THREADS" -o json \
        >"$1" 2>>"$OUT/llama-bench.stderr"
}
run_ew() { # $1 = output file
    EDGEWATT__MODELS__DIR="$MODEL_DIR" "$EDGEWATT_BIN" bench --model "$MODEL_NAME" \
        --pp "$PP" --tg "$TG" --threads "$THREADS" --repeat 1 --warmup "$EW_WARMUP" --json \
        >"$1" 2>>"$OUT/edgewatt.stderr"
}

echo "model $MODEL_ABS, threads $THREADS, $ROUNDS rounds of pp$PP + tg$TG, raw results in $OUT" >&2
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "load average before: $LOAD_START (nproc $(nproc))" >&2
echo "warm-up round (discarded)" >&2
run_lb "$OUT/warmup-llama-bench.json"
if [[ $EW == 1 ]]; then run_ew "$OUT/warmup-edgewatt.json"; fi
for ((i = 1; i <= ROUNDS; i++)); do
    echo "round $i/$ROUNDS (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    if [[ $EW == 1 && $((i % 2)) == 0 ]]; then
        run_ew "$OUT/round$i-edgewatt.json"
        run_lb "$OUT/round$i-llama-bench.json"
    else
        run_lb "$OUT/round$i-llama-bench.json"
        if [[ $EW == 1 ]]; then run_ew "$OUT/round$i-edgewatt.json"; fi
    fi
done

LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" "$ROUNDS" "$PP" "$TG" "$THREADS" "$TARGET" "$EW" "$LOAD_START" "$LOAD_END" "$(nproc)" <<'EOF' | tee "$OUT/summary.md"
import json, statistics, sys
out, rounds, pp, tg, threads, target, ew = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6]), sys.argv[7] == "1"
load_start, load_end, ncpu = sys.argv[8], sys.argv[9], int(sys.argv[10])

def lb(i):
    tests = json.load(open(f"{out}/round{i}-llama-bench.json"))
    r = {}
    for t in tests:
        if t["n_prompt"] > 0 and t["n_gen"] == 0:
            r["pp"] = t["samples_ts"][0]
        elif t["n_gen"] > 0 and t["n_prompt"] == 0:
            r["tg"] = t["samples_ts"][0]
    return r, tests[0]

def ewr(i):
    j = json.load(open(f"{out}/round{i}-edgewatt.json"))
    return {k: j[k]["tps"][0] for k in ("pp", "tg") if j.get(k)}, j

def ms(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

lbv = {"pp": [], "tg": []}
ewv = {"pp": [], "tg": []}
lb_meta = ew_meta = None
for i in range(1, rounds + 1):
    r, lb_meta = lb(i)
    for k in r:
        lbv[k].append(r[k])
    if ew:
        r, ew_meta = ewr(i)
        for k in r:
            ewv[k].append(r[k])

m = lb_meta
print(f"llama-bench build: b{m.get('build_number')}-{m.get('build_commit')} "
      f"(flash_attn {m.get('flash_attn')}, n_batch {m.get('n_batch')}, n_ubatch {m.get('n_ubatch')}, "
      f"type_k/v {m.get('type_k')}/{m.get('type_v')}, cpu: {m.get('cpu_info')}, backends {m.get('backends')})")
if ew_meta is not None:
    print(f"edgewatt build:    {json.dumps(ew_meta.get('build'), sort_keys=True)}")
print(f"threads {threads}, {rounds} alternating rounds, t/s = mean ± sd over rounds")
print(f"load average before {load_start}, after {load_end} ({ncpu} CPUs)")
if float(load_start.split()[0]) > 0.5 or float(load_end.split()[0]) > int(threads) + 0.5:
    print("WARNING: other work was running on this machine; with OpenMP threads = cores the figures are unreliable")
print()
print("| test | llama-bench t/s | edgewatt t/s | ratio | target (≥ 0.98) | pass/fail |")
print("|---|---|---|---|---|---|")
for k, n in (("pp", pp), ("tg", tg)):
    lm, ls = ms(lbv[k])
    if ew and ewv[k]:
        em, es = ms(ewv[k])
        ratio = em / lm
        res = "pass" if ratio >= target else "fail"
        print(f"| {k}{n} | {lm:.2f} ± {ls:.2f} | {em:.2f} ± {es:.2f} | {ratio:.3f} | ≥ {target:.2f} | {res} |")
    else:
        print(f"| {k}{n} | {lm:.2f} ± {ls:.2f} | n/a | n/a | ≥ {target:.2f} | n/a |")
print()
def rounds_line(name, xs):
    if xs:
        print(f"per round {name}: " + ", ".join(f"{x:.1f}" for x in xs) + f"  (median {statistics.median(xs):.1f})")
rounds_line("llama-bench pp", lbv["pp"])
rounds_line("llama-bench tg", lbv["tg"])
if ew:
    rounds_line("edgewatt    pp", ewv["pp"])
    rounds_line("edgewatt    tg", ewv["tg"])
    meds = [f"{k}{n} {statistics.median(ewv[k]) / statistics.median(lbv[k]):.3f}"
            for k, n in (("pp", pp), ("tg", tg)) if ewv[k] and lbv[k]]
    print("median ratio (robust to one disturbed round): " + ", ".join(meds))
EOF
bash "$ROOT/bench/build-llama-bench.sh" --ids
