#!/usr/bin/env bash
# The study demo: studies/example.toml run locally (the engine in-process, a simulated
# INA219 whose power follows this machine's CPU load), then its report.
# Usage: study-demo.sh BIN [PLAN]
set -euo pipefail
bin="$(realpath "$1")"; plan="${2:-studies/example.toml}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/target/study-demo"
mkdir -p "$out"
cat > "$out/edgewatt.toml" <<CONF
[device]
id = "local"

[models]
dir = "$root/models"

[store]
path = "$out/edgewatt.db"

[power]
idle_window_ms = 500

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

db="${STUDY_DB:-$out/$(basename "$plan" .toml).study.db}"
echo "study-demo: dry run"
"$bin" study plan --config "$out/edgewatt.toml" --local --db "$db" "$plan" || echo "study-demo: (the run below stores the failures of what the dry run refused)"
echo "study-demo: running (resumable: run again to continue; the database is $db)"
"$bin" study run --config "$out/edgewatt.toml" --local --db "$db" "$plan"
if "$bin" study report --help >/dev/null 2>&1; then
  "$bin" study report --config "$out/edgewatt.toml" -o "$out/report" "$db"
  echo "study-demo: report in $out/report"
else
  echo "study-demo: 'edgewatt study report' is not in this build yet; the runs are in $db"
fi
