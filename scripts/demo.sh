#!/usr/bin/env bash
# The demo: a real job through the real path. Starts Mosquitto on a free loopback
# port and the daemon with a simulated INA219 (its power follows this machine's CPU
# load), submits one job with `edgewatt submit`, prints the result, stops both.
# Usage: demo.sh BIN MODEL_NAME
set -euo pipefail
bin="$(realpath "$1")"; model="$2"
root="$(pwd)"
work="$(mktemp -d /tmp/edgewatt-demo.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mosq="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
CONF
"$mosq" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)

cat > "$work/edgewatt.toml" <<CONF
[device]
id = "demo"

[mqtt]
url = "mqtt://127.0.0.1:$port"

[models]
dir = "$root/models"

[store]
path = "$work/edgewatt.db"

# A simulated INA219 on the 5 V input: 2.5 W idle, up to 7 W at 100 % CPU.
# Every figure it produces is labelled simulated.
[[power.sensors]]
kind = "sim"
chip = "ina219"
shunt_ohms = 0.1
max_current_a = 3.2
adc_bits = 12
rails = ["5V_IN"]
total = true
load = [{ source = "cpu", idle_w = 2.5, max_w = 7.0, bus_v = 5.1 }]
CONF

echo "demo: Mosquitto on 127.0.0.1:$port; starting the daemon (simulated INA219)"
"$bin" daemon --config "$work/edgewatt.toml" >"$work/daemon.log" 2>&1 &
pids+=($!)

# Let the sampler gather an idle baseline before the job (power.idle_window_ms, 2 s).
sleep 3
echo "demo: edgewatt submit -m $model"
"$bin" submit --config "$work/edgewatt.toml" --device demo --timeout-s 300 \
  --model "$model" --max-tokens 64 \
  --prompt "Explain in two sentences why measuring energy per token matters on edge devices." \
  || { echo "demo: submit failed; daemon log:"; tail -50 "$work/daemon.log"; exit 1; }
echo
echo "demo: stored jobs"
"$bin" report --config "$work/edgewatt.toml" || true
