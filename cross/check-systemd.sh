#!/bin/sh
# check-systemd.sh [BINARY [MODEL.gguf]]: the packaged service and its Jetson
# power-mode mechanism under a real systemd (PID 1 of its own PID, mount and UTS
# namespaces; root needed). What `systemd-analyze verify` cannot show, this runs:
#
#   - the files go where the package puts them (/usr/bin, /usr/lib/systemd/system,
#     /usr/libexec/edgewatt, sysusers.d, tmpfiles.d) on private overlays of /etc and
#     /usr and a private /var/lib, so the host is not touched;
#   - a fake Jetson: /etc/nvpmodel.conf, tests/fixtures/fake-nvpmodel as
#     /usr/sbin/nvpmodel (writes /var/lib/nvpmodel/status as the real one does;
#     mode 3 asks for a reboot);
#   - systemd boots; `systemctl start edgewatt` starts the hardened unit (user
#     edgewatt, NoNewPrivileges, no capabilities), which pulls in
#     edgewatt-power-mode.path;
#   - `edgewatt submit --power-mode 15w` (nvpmodel 1) through a real Mosquitto: the
#     daemon writes its request, the .path unit starts the root oneshot, its script
#     runs nvpmodel, the daemon reads the mode back, runs the job on the real model,
#     restores MAXN; `--power-mode 7w` (needs a reboot) is refused with nvpmodel's
#     words and the board stays in MAXN; six more jobs under 15w in a row (twelve
#     starts of the oneshot, past systemd's default start limit) all succeed;
#   - a fake RAPL package zone (tmpfs over /sys/class, energy_uj root 0400, a
#     fake kernel advancing it): the packaged tmpfiles rule opens it to group
#     edgewatt at boot and the jobs' energy comes from it, with no gaps;
#   - a fake cpufreq policy (tmpfs over /sys/devices/system/cpu/cpufreq, root 0644):
#     the packaged tmpfiles rule makes it root:edgewatt 0664 at boot, and
#     `--power-mode eco` (powersave, 1 GHz) is applied by the daemon itself through
#     ReadWritePaths= under ProtectKernelTunables= and restored.
#
# Exit 0: all held. 1: something did not (the journal is printed). 77: this machine
# cannot run the check (not root, no unshare/systemd/mosquitto, systemd would not boot).
set -u
bin="${1:-target/release/edgewatt}"
model="${2:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
skip() { echo "check-systemd: skipped: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (namespaces, overlays)"
for t in unshare nsenter /lib/systemd/systemd mosquitto; do
  command -v "$t" >/dev/null 2>&1 || [ -x "$t" ] || skip "no $t"
done
[ -x "$bin" ] || { echo "check-systemd: no binary '$bin' (make build)" >&2; exit 2; }
[ -f "$model" ] || { echo "check-systemd: no model '$model' (make model)" >&2; exit 2; }
repo=$(pwd)
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
model=$(cd "$(dirname "$model")" && pwd)/$(basename "$model")
# Not under /tmp: the namespace mounts its own /tmp.
w=$(mktemp -d /var/tmp/edgewatt-check-systemd.XXXXXX)
pid1=""
broker=""
ns=""
cleanup() {
  # PID 1 of the namespace takes everything in it along; `ns` if it never started.
  [ -n "$pid1" ] && kill -9 "$pid1" 2>/dev/null
  [ -n "$ns" ] && kill -9 "$ns" 2>/dev/null
  [ -n "$broker" ] && kill "$broker" 2>/dev/null
  sleep 1
  rm -rf "$w"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
status=0
fail() { echo "check-systemd: FAIL: $*" >&2; status=1; }

port=$(( 20000 + $$ % 20000 ))
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" > "$w/mosquitto.conf"
mosquitto -c "$w/mosquitto.conf" > "$w/mosquitto.log" 2>&1 &
broker=$!

# Runs inside the namespaces: private mounts, the installed files, then systemd.
cat > "$w/boot.sh" <<EOF
#!/bin/sh
set -e
mount --make-rprivate /
for d in etc usr; do
  mkdir -p "$w/\$d-up" "$w/\$d-work"
  mount -t overlay overlay -o "lowerdir=/\$d,upperdir=$w/\$d-up,workdir=$w/\$d-work" "/\$d"
done
# /var/log (journald) and /var/tmp (PrivateTmp=) private too; $w stays reachable
# here through the overlays already mounted, and from the host as it is.
for d in /var/lib /var/log /var/tmp /run /tmp; do mount -t tmpfs tmpfs "\$d"; done
# A fake cpufreq policy (root:root 0644, as the kernel makes it); the packaged
# tmpfiles rule, applied by systemd-tmpfiles-setup at boot, must open it to edgewatt.
mkdir -p /sys/devices/system/cpu/cpufreq
mount -t tmpfs tmpfs /sys/devices/system/cpu/cpufreq
p=/sys/devices/system/cpu/cpufreq/policy0
mkdir "\$p"
echo "0 1" > "\$p/related_cpus"
echo "performance powersave schedutil" > "\$p/scaling_available_governors"
echo schedutil > "\$p/scaling_governor"
for f in cpuinfo_min_freq scaling_min_freq scaling_cur_freq; do echo 600000 > "\$p/\$f"; done
for f in cpuinfo_max_freq scaling_max_freq; do echo 2400000 > "\$p/\$f"; done
chmod 0644 "\$p"/*
# A fake RAPL package zone (energy_uj root 0400, as kernels since 5.10 make it), its
# counter advanced by a fake kernel: 2 W. The packaged tmpfiles rule must open it.
# (sysfs takes no new directory: a tmpfs over /sys/class, which nothing else here reads)
mount -t tmpfs tmpfs /sys/class
mkdir /sys/class/powercap
z=/sys/class/powercap/intel-rapl:0
mkdir "\$z"
echo package-0 > "\$z/name"
echo 262143328850 > "\$z/max_energy_range_uj"
echo 1000000 > "\$z/energy_uj"
chmod 0444 "\$z/name" "\$z/max_energy_range_uj"
chmod 0400 "\$z/energy_uj"
( e=1000000; while :; do e=\$((e + 20000)); echo \$e > "\$z/energy_uj"; sleep 0.01; done ) &
install -Dm755 "$bin" /usr/bin/edgewatt
install -Dm644 "$repo/systemd/edgewatt.service" /usr/lib/systemd/system/edgewatt.service
install -Dm644 "$repo/systemd/edgewatt-power-mode.path" /usr/lib/systemd/system/edgewatt-power-mode.path
install -Dm644 "$repo/systemd/edgewatt-power-mode.service" /usr/lib/systemd/system/edgewatt-power-mode.service
install -Dm755 "$repo/systemd/edgewatt-power-mode" /usr/libexec/edgewatt/power-mode
install -Dm644 "$repo/systemd/edgewatt.sysusers" /usr/lib/sysusers.d/edgewatt.conf
install -Dm644 "$repo/systemd/edgewatt-cpufreq.tmpfiles" /usr/lib/tmpfiles.d/edgewatt-cpufreq.conf
install -Dm644 "$repo/systemd/edgewatt-rapl.tmpfiles" /usr/lib/tmpfiles.d/edgewatt-rapl.conf
install -Dm644 "$model" /usr/share/edgewatt-check/models/\$(basename "$model")
systemd-sysusers /usr/lib/sysusers.d/edgewatt.conf
printf '%s\n' '< POWER_MODEL ID=0 NAME=MAXN >' '< POWER_MODEL ID=1 NAME=15W >' \
  '< POWER_MODEL ID=3 NAME=7W >' '< PM_CONFIG DEFAULT=0 >' > /etc/nvpmodel.conf
mkdir -p /var/lib/nvpmodel
echo 'pmode:0000 fmode:quiet' > /var/lib/nvpmodel/status
sed 's#@DIR@#/var/lib/nvpmodel#' "$repo/tests/fixtures/fake-nvpmodel" > /usr/sbin/nvpmodel
chmod 755 /usr/sbin/nvpmodel
mkdir -p /etc/edgewatt
cat > /etc/edgewatt/edgewatt.toml <<'CFG'
[device]
id = "systemd-check"
[mqtt]
url = "mqtt://127.0.0.1:$port"
[models]
dir = "/usr/share/edgewatt-check/models"
[power_modes.15w]
nvpmodel = 1
[power_modes.7w]
nvpmodel = 3
[[power.sensors]]
kind = "rapl"
rate_hz = 10.0
[power_modes.eco]
governor = "powersave"
max_freq_khz = 1000000
CFG
exec env container=edgewatt-check /lib/systemd/systemd --system --unit=basic.target \
  --log-target=journal-or-kmsg >/dev/null 2>&1
EOF
chmod +x "$w/boot.sh"
unshare --pid --fork --mount --uts --mount-proc "$w/boot.sh" > "$w/boot.log" 2>&1 &
ns=$!
in_ns() { nsenter -t "$pid1" -m -p -u "$@"; }
i=0
while [ $i -lt 300 ]; do
  pid1=$(pgrep -P "$ns" 2>/dev/null | head -n 1)
  if [ -n "$pid1" ] && [ "$(cat /proc/"$pid1"/comm 2>/dev/null)" = systemd ]; then
    st=$(in_ns systemctl is-system-running 2>/dev/null) || true
    case "$st" in running|degraded) break ;; esac
  fi
  i=$((i + 1)); sleep 0.2
done
case "${st:-}" in
  running|degraded) ;;
  *) cat "$w/boot.log" >&2; skip "systemd did not boot in a namespace here (state '${st:-none}')" ;;
esac

if ! in_ns timeout 120 systemctl start edgewatt.service; then
  fail "systemctl start edgewatt failed"
  in_ns journalctl --no-pager -u edgewatt | tail -n 30 >&2
  exit 1
fi
[ "$(in_ns systemctl is-active edgewatt-power-mode.path)" = active ] \
  || fail "edgewatt.service did not pull in edgewatt-power-mode.path"
main=$(in_ns systemctl show -p MainPID --value edgewatt.service)
user=$(in_ns ps -o user= -p "$main" 2>/dev/null | tr -d ' ')
nnp=$(in_ns sh -c "grep NoNewPrivs /proc/$main/status" | awk '{print $2}')
[ "$user" = edgewatt ] && [ "$nnp" = 1 ] || fail "daemon runs as '$user' with NoNewPrivs '$nnp' (want edgewatt, 1)"

pol=/sys/devices/system/cpu/cpufreq/policy0
perms=$(in_ns stat -c '%a %U:%G' "$pol/scaling_governor" "$pol/scaling_max_freq" "$pol/scaling_min_freq" | sort -u)
[ "$perms" = "664 root:edgewatt" ] || fail "after boot the cpufreq files are '$perms', want '664 root:edgewatt' (tmpfiles rule)"

perms=$(in_ns stat -c '%a %U:%G' /sys/class/powercap/intel-rapl:0/energy_uj)
[ "$perms" = "440 root:edgewatt" ] || fail "after boot energy_uj is '$perms', want '440 root:edgewatt' (tmpfiles rule)"

submit() {
  "$bin" submit --broker "mqtt://127.0.0.1:$port" --device systemd-check \
    --model "$(basename "$model" .gguf)" --prompt "The capital of France is" -n 4 \
    --no-stream --json --timeout-s 60 "$@"
}
out=$(submit --power-mode 15w 2>"$w/submit.err")
printf "%s\n" "$out" > "$w/15w.json"
python3 - "$w/15w.json" <<'PY' || fail "15w: $(cat "$w/15w.json") $(cat "$w/submit.err")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["state"] == "succeeded", r.get("error")
assert r["power_mode"]["name"] == "15w", r["power_mode"]
assert r["power_mode"]["nvpmodel"] == {"id": 1, "name": "15W"}, r["power_mode"]
assert r["tokens"]["generated"] >= 1
rails = {x["name"]: x for x in r["energy"]["rails"]}
assert "package-0" in rails, r["energy"]
assert r["energy"]["samples"] >= 1 and r["energy"]["gaps"] == 0, r["energy"]
assert 0 < rails["package-0"]["energy_j"]["total"], rails
pk = rails["package-0"]
print(f"check-systemd: 15w job energy from the fake RAPL zone (20 mJ per ~10 ms tick): avg {pk['avg_w']:.2f} W, "
      f"{pk['energy_j']['total']:.3f} J, {r['energy']['samples']} samples, {r['energy']['gaps']} gaps")
PY
[ "$(in_ns cat /var/lib/nvpmodel/status)" = "pmode:0000 fmode:quiet" ] || fail "MAXN not restored after 15w"

out=$(submit --power-mode 7w 2>"$w/submit.err")
printf "%s\n" "$out" > "$w/7w.json"
python3 - "$w/7w.json" <<'PY' || fail "7w: $(cat "$w/7w.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["state"] == "rejected", r
assert r["error"]["code"] == "power_mode_failed", r["error"]
assert "takes effect only after a reboot" in r["error"]["message"], r["error"]
assert "Reboot required" in r["error"]["message"], r["error"]
PY
[ "$(in_ns cat /var/lib/nvpmodel/status)" = "pmode:0000 fmode:quiet" ] || fail "7w changed the mode"

# cpufreq under the hardened unit: ProtectKernelTunables= makes /sys read-only for
# the daemon, ReadWritePaths= gives the cpufreq files back.
out=$(submit --power-mode eco 2>"$w/submit.err")
printf "%s\n" "$out" > "$w/eco.json"
python3 - "$w/eco.json" <<'PY' || fail "eco: $(cat "$w/eco.json") $(cat "$w/submit.err")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["state"] == "succeeded", r.get("error")
p = r["power_mode"]["cpufreq"][0]
assert (p["policy"], p["cpus"], p["governor"], p["max_khz"]) == (0, [0, 1], "powersave", 1000000), p
PY
[ "$(in_ns cat $pol/scaling_governor) $(in_ns cat $pol/scaling_max_freq)" = "schedutil 2400000" ] \
  || fail "eco not restored: $(in_ns cat $pol/scaling_governor) $(in_ns cat $pol/scaling_max_freq)"

# Two oneshot starts per job: past the default limit (5 in 10 s) in a few seconds.
# Alternated with jobs naming no mode, to measure what the mode costs a job
# (request, oneshot, nvpmodel, read-back, and the same again to restore).
n=0
plain_ms=0
mode_ms=0
while [ $n -lt 6 ]; do
  t0=$(date +%s%N)
  out=$(submit --id "plain-$n" 2>"$w/submit.err")
  t1=$(date +%s%N)
  printf "%s\n" "$out" | grep -q '"state": "succeeded"' || fail "plain job $n: $out $(cat "$w/submit.err")"
  out=$(submit --power-mode 15w --id "burst-$n" 2>"$w/submit.err")
  t2=$(date +%s%N)
  printf "%s\n" "$out" | grep -q '"state": "succeeded"' || fail "burst job $n: $out $(cat "$w/submit.err")"
  plain_ms=$((plain_ms + (t1 - t0) / 1000000))
  mode_ms=$((mode_ms + (t2 - t1) / 1000000))
  n=$((n + 1))
done
[ "$(in_ns systemctl is-active edgewatt-power-mode.path)" = active ] || fail "the .path unit stopped watching"
calls=$(in_ns cat /var/lib/nvpmodel/calls | tr '\n' ' ')
want="-m 1 -m 0 -m 3 -m 1 -m 0 -m 1 -m 0 -m 1 -m 0 -m 1 -m 0 -m 1 -m 0 -m 1 -m 0 "
[ "$calls" = "$want" ] || fail "nvpmodel calls '$calls', want '$want'"
answers=$(in_ns journalctl -u edgewatt-power-mode.service -o cat --no-pager | grep -c 'edgewatt-power-mode: request')
[ "$answers" -eq 15 ] || fail "the oneshot answered $answers requests, want 15"

if [ "$status" -ne 0 ]; then
  in_ns journalctl --no-pager -u edgewatt -u edgewatt-power-mode.path -u edgewatt-power-mode.service | tail -n 60 >&2
else
  echo "check-systemd: ok: systemd $(in_ns systemctl --version | head -n 1 | cut -d' ' -f2): edgewatt.service (user edgewatt, NoNewPrivs) pulled in edgewatt-power-mode.path; 15w applied through the request file + root oneshot, job run, MAXN restored; 7w refused with nvpmodel's reboot prompt; 6 more 15w jobs (12 oneshot starts) all applied; the tmpfiles rule opened cpufreq to edgewatt and eco (powersave, 1 GHz) was applied and restored under ProtectKernelTunables=; energy from RAPL through the tmpfiles rule"
  in_ns journalctl -u edgewatt-power-mode.service -o cat --no-pager | grep 'edgewatt-power-mode: request' | head -n 4
  echo "check-systemd: submit round trip, mean of 6 alternated: no mode $((plain_ms / 6)) ms, under 15w $((mode_ms / 6)) ms (apply + restore through systemd: +$(((mode_ms - plain_ms) / 6)) ms per job)"
fi
exit "$status"
