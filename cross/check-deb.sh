#!/bin/sh
# check-deb.sh PACKAGE.deb: lists the package (dpkg-deb -c) and checks every path in
# it: each expected file is there with its mode, nothing else is, /etc/edgewatt/
# edgewatt.toml is a conffile, the maintainer scripts create the user and enable the
# unit, and the binary's architecture matches the package's (and its glibc needs
# are within check-glibc.sh's limit).
set -eu
deb="${1:?usage: check-deb.sh PACKAGE.deb}"
[ -f "$deb" ] || { echo "check-deb: no package '$deb' (make deb)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
fail() { echo "check-deb: $deb: $*" >&2; status=1; }
status=0

# "mode path" for every regular file, e.g. "-rwxr-xr-x ./usr/bin/edgewatt".
listing=$(dpkg-deb -c "$deb")
files=$(printf '%s\n' "$listing" | awk '$1 ~ /^-/ { print $1, $6 }' | sort)
expected=$(sort <<'LIST'
-rwxr-xr-x ./usr/bin/edgewatt
-rw-r--r-- ./etc/edgewatt/edgewatt.toml
-rw-r--r-- ./usr/lib/systemd/system/edgewatt.service
-rw-r--r-- ./usr/lib/sysusers.d/edgewatt.conf
-rw-r--r-- ./usr/lib/modules-load.d/edgewatt.conf
-rw-r--r-- ./usr/lib/udev/rules.d/99-edgewatt-i2c.rules
-rw-r--r-- ./usr/share/doc/edgewatt/copyright
-rw-r--r-- ./usr/share/doc/edgewatt/service.md
-rw-r--r-- ./usr/share/doc/edgewatt/config.md
-rw-r--r-- ./usr/share/doc/edgewatt/examples/jetson-video.conf
-rw-r--r-- ./usr/lib/tmpfiles.d/edgewatt-rapl.conf
-rw-r--r-- ./usr/share/doc/edgewatt/examples/pi5-pmic.conf
-rw-r--r-- ./usr/lib/tmpfiles.d/edgewatt-cpufreq.conf
-rw-r--r-- ./usr/lib/systemd/system/edgewatt-power-mode.path
-rw-r--r-- ./usr/lib/systemd/system/edgewatt-power-mode.service
-rwxr-xr-x ./usr/libexec/edgewatt/power-mode
LIST
)
missing=$(printf '%s\n' "$expected" | while read -r line; do
  printf '%s\n' "$files" | grep -qxF -- "$line" || echo "$line"; done)
extra=$(printf '%s\n' "$files" | while read -r line; do
  printf '%s\n' "$expected" | grep -qxF -- "$line" || echo "$line"; done)
[ -z "$missing" ] || fail "missing or wrong mode: $(echo $missing)"
[ -z "$extra" ] || fail "unexpected: $(echo $extra)"
# Nothing but directories and the files above (no links, devices, absolute paths).
others=$(printf '%s\n' "$listing" | awk '$1 !~ /^[-d]/ || $6 !~ /^\.\//' )
[ -z "$others" ] || fail "unexpected entries: $others"
printf '%s\n' "$listing" | awk '{ print $2 }' | grep -vqxE '0/0|root/root' && fail "files not owned by root:root"

ctl=$(mktemp -d)
trap 'rm -rf "$ctl"' EXIT
dpkg-deb -e "$deb" "$ctl/DEBIAN"
grep -qx '/etc/edgewatt/edgewatt.toml' "$ctl/DEBIAN/conffiles" || fail "/etc/edgewatt/edgewatt.toml is not a conffile"
grep -q 'systemd-sysusers' "$ctl/DEBIAN/postinst" || fail "postinst does not run systemd-sysusers"
grep -q 'deb-systemd-helper enable edgewatt.service' "$ctl/DEBIAN/postinst" || fail "postinst does not enable edgewatt.service"
grep -q 'deb-systemd-invoke stop edgewatt.service' "$ctl/DEBIAN/prerm" || fail "prerm does not stop edgewatt.service"

# The files are the repository's.
dpkg-deb -x "$deb" "$ctl/root"
for pair in "config/edgewatt.toml etc/edgewatt/edgewatt.toml" \
            "systemd/edgewatt.service usr/lib/systemd/system/edgewatt.service" \
            "systemd/edgewatt.sysusers usr/lib/sysusers.d/edgewatt.conf" \
            "udev/99-edgewatt-i2c.rules usr/lib/udev/rules.d/99-edgewatt-i2c.rules" \
            "systemd/edgewatt-power-mode.path usr/lib/systemd/system/edgewatt-power-mode.path" \
            "systemd/edgewatt-power-mode.service usr/lib/systemd/system/edgewatt-power-mode.service" \
            "systemd/edgewatt-power-mode usr/libexec/edgewatt/power-mode"; do
  set -- $pair
  if [ -f "$1" ]; then cmp -s "$1" "$ctl/root/$2" || fail "$2 differs from $1"; fi
done

arch=$(dpkg-deb -f "$deb" Architecture)
machine=$(LC_ALL=C readelf -h "$ctl/root/usr/bin/edgewatt" | sed -n 's/^ *Machine: *//p')
case "$arch:$machine" in
  amd64:*X86-64*|arm64:AArch64|armhf:ARM) ;;
  *) fail "Architecture '$arch' but the binary is '$machine'" ;;
esac
"$here/check-glibc.sh" "$ctl/root/usr/bin/edgewatt" "${GLIBC_MAX:-2.35}" "${GLIBCXX_MAX:-3.4.30}" >/dev/null \
  || fail "the binary needs a newer glibc/libstdc++ than allowed"

if [ "$status" -eq 0 ]; then
  echo "check-deb: ok: $deb ($arch): $(printf '%s\n' "$files" | wc -l) files, all expected"
  printf '%s\n' "$listing"
fi
exit "$status"
