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
# edgewatt.service wants the nvpmodel watcher: it is there too, as installed.
cp systemd/edgewatt-power-mode.path "$dir/"
sed "s#^ExecStart=/usr/libexec/edgewatt/power-mode#ExecStart=$(pwd)/systemd/edgewatt-power-mode#" \
  systemd/edgewatt-power-mode.service > "$dir/edgewatt-power-mode.service"

status=0
check() {
  out=$(SYSTEMD_UNIT_PATH="$1:" systemd-analyze verify --man=no "$1/edgewatt.service" 2>&1) || status=1
  if [ -n "$out" ]; then printf '%s\n' "$out" >&2; status=1; fi
}
check "$dir"
mkdir "$dir/edgewatt.service.d"
cp systemd/jetson-video.conf "$dir/edgewatt.service.d/jetson.conf"
check "$dir"
# The nvpmodel watcher and its root oneshot (ExecStart pointed at the script in this
# checkout, above, so verify also checks the command exists).
for u in edgewatt-power-mode.path edgewatt-power-mode.service; do
  out=$(SYSTEMD_UNIT_PATH="$dir:" systemd-analyze verify --man=no "$dir/$u" 2>&1) || status=1
  if [ -n "$out" ]; then printf '%s\n' "$out" >&2; status=1; fi
done
# The script is POSIX sh (dash runs it on Debian and Ubuntu).
sh -n systemd/edgewatt-power-mode || status=1
# The tmpfiles rules parse and name a group that exists (applied to an empty root
# whose /etc/group has edgewatt: the globs match nothing there, the syntax is checked).
if command -v systemd-tmpfiles >/dev/null; then
  mkdir -p "$dir/root/etc"
  printf 'root:x:0:0::/root:/bin/sh\n' > "$dir/root/etc/passwd"
  printf 'root:x:0:\nedgewatt:x:999:\n' > "$dir/root/etc/group"
  for f in systemd/edgewatt-cpufreq.tmpfiles systemd/edgewatt-rapl.tmpfiles; do
    out=$(systemd-tmpfiles --root="$dir/root" --create - < "$f" 2>&1) || status=1
    [ -z "$out" ] || { printf '%s\n' "$out" >&2; status=1; }
  done
fi
[ "$status" -eq 0 ] && echo "check-unit: ok: edgewatt.service (and + jetson drop-in), edgewatt-power-mode.path and .service pass systemd-analyze verify; the tmpfiles rules apply"
exit "$status"
