#!/bin/sh
# check-unit.sh [BINARY]: systemd-analyze verify on systemd/edgewatt.service, alone and
# with the Jetson drop-in. ExecStart is pointed at BINARY (default the release build)
# so verify also checks the command exists. Any output is a failure: verify only
# warns (exit 0) about unknown keys.
set -eu
bin="${1:-target/release/edgewatt}"
command -v systemd-analyze >/dev/null || { echo "check-unit: systemd-analyze not found (apt-get install systemd)" >&2; exit 2; }
[ -x "$bin" ] || { echo "check-unit: no binary '$bin' (make build)" >&2; exit 2; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed "s#^ExecStart=/usr/bin/edgewatt #ExecStart=$bin #" systemd/edgewatt.service > "$dir/edgewatt.service"

status=0
check() {
  out=$(SYSTEMD_UNIT_PATH="$1:" systemd-analyze verify --man=no "$1/edgewatt.service" 2>&1) || status=1
  if [ -n "$out" ]; then printf '%s\n' "$out" >&2; status=1; fi
}
check "$dir"
mkdir "$dir/edgewatt.service.d"
cp systemd/jetson-video.conf "$dir/edgewatt.service.d/jetson.conf"
check "$dir"
[ "$status" -eq 0 ] && echo "check-unit: ok: edgewatt.service (and + jetson drop-in) pass systemd-analyze verify"
exit "$status"
