#!/usr/bin/env bash
# Two boards in parallel against one: the same study configurations run over MQTT on
# one daemon, then on two daemons (one real Mosquitto), threads = 1 so two daemons fit
# two cores. Prints runs/min of each arm and the ratio (target >= 1.8x). The arms
# alternate ROUNDS times (default 4, in the order AB BA AB BA); models are preloaded, so load time is out.
# Usage: study-parallel.sh BIN [ROUNDS] [REPS]
set -euo pipefail
bin="$(realpath "$1")"; rounds="${2:-4}"; reps="${3:-4}"
root="$(cd "$(dirname "$0")/.." && pwd)"
model="${MODEL:-SmolLM2-135M-Instruct.Q4_1}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n' "$port" > "$work/mosquitto.conf"
/usr/sbin/mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 & pids+=("$!")
url="mqtt://127.0.0.1:$port"
for b in board-1 board-2; do
  mkdir -p "$work/$b"
  cat > "$work/$b/edgewatt.toml" <<CONF
[device]
id = "$b"
[mqtt]
url = "$url"
[models]
dir = "$root/models"
keep_alive_s = -1
preload = ["$model"]
[store]
path = "$work/$b/edgewatt.db"
CONF
  "$bin" --config "$work/$b/edgewatt.toml" daemon > "$work/$b/daemon.log" 2>&1 & pids+=("$!")
done
printf '[mqtt]\nurl = "%s"\n' "$url" > "$work/cli.toml"
plan() { # plan NAME DEVICES: a new name each round, so new job ids (a daemon answers a
         # job id it already ran from its store, without running it again)
  cat > "$work/$1.toml" <<PLAN
[study]
name = "$1"
seed = 1
repetitions = { min = $reps, max = $reps }
[axes]
device = [$2]
model = ["$model"]
threads = [1]
prompt_tokens = [32, 64]
gen_tokens = [32]
n_ctx = [256]
PLAN
}
plan probe '"board-1", "board-2"'
# Both boards online (the dry run refuses a device no online board answers for).
for i in $(seq 1 120); do
  "$bin" --config "$work/cli.toml" study plan --db "$work/probe.db" "$work/probe.toml" > /dev/null 2>&1 && break
  [ "$i" = 120 ] && { echo "boards not online; logs in $work"; exit 1; }
  sleep 1
done
echo "| round | arm | boards | runs | wall s | runs/min | mean run total_ms | boards busy |"
echo "|---|---|---|---|---|---|---|---|"
results="$work/results.txt"; : > "$results"
for r in $(seq 1 "$rounds"); do
  plan "one-$r" '"board-1"'
  plan "two-$r" '"board-1", "board-2"'
  order="one two"; [ $((r % 2)) = 0 ] && order="two one"   # ABBA: drift spreads over both arms
  for arm in $order; do
    db="$work/$arm-$r.study.db"
    t0="$(date +%s.%N)"
    "$bin" --config "$work/cli.toml" study run --json --db "$db" "$work/$arm-$r.toml" > "$db.jsonl"
    t1="$(date +%s.%N)"
    n="$(grep -c '"state":"succeeded"' "$db.jsonl" || true)"
    python3 - "$r" "$arm" "$n" "$t0" "$t1" "$results" "$db.jsonl" <<'PY'
import json, sys
r, arm, n, t0, t1, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
runs = [json.loads(l) for l in open(sys.argv[7]) if l.strip()]
wall = t1 - t0
rate = 60 * n / wall
boards = 1 if arm == "one" else 2
own = sum(x["total_ms"] for x in runs) / 1e3
# busy: the share of the boards' wall time spent inside a run (its own total_ms);
# the rest is dispatch, result transfer and storing.
print(f"| {r} | {arm} | {boards} | {n} | {wall:.2f} | {rate:.1f} | {1e3 * own / max(len(runs), 1):.0f} | {100 * own / (boards * wall):.0f} % |")
open(out, "a").write(f"{arm} {rate} {own / wall}\n")
PY
  done
done
python3 - "$results" <<'PY'
import sys, statistics
rates = {"one": [], "two": []}
busy = {"one": [], "two": []}
for line in open(sys.argv[1]):
    arm, rate, b = line.split()
    rates[arm].append(float(rate))
    busy[arm].append(float(b))
one, two = statistics.mean(rates["one"]), statistics.mean(rates["two"])
print(f"\nmean runs/min: one board {one:.1f}, two boards {two:.1f}; ratio {two / one:.2f}x (target >= 1.8x)")
# Run-seconds per wall second: how much of the boards' time the study kept busy. Its
# ratio is the throughput ratio the dispatch would give if a run took as long on two
# boards as on one (boards that do not share cores); below it, the runs themselves
# slowed down (shared cores).
b1, b2 = statistics.mean(busy["one"]), statistics.mean(busy["two"])
print(f"run-seconds per second: one board {b1:.2f}, two boards {b2:.2f}; ratio {b2 / b1:.2f}x")
PY
