#!/bin/sh
# check-glibc.sh BINARY [MAX_GLIBC] [MAX_GLIBCXX]
#
# Fails when BINARY needs a versioned glibc (or libstdc++) symbol newer than the
# oldest system it must run on: Raspberry Pi OS bookworm has glibc 2.36, JetPack 6
# (Ubuntu 22.04) 2.35 with libstdc++ from gcc 12 (GLIBCXX_3.4.30). Uses `objdump -T`
# (the dynamic symbol table), with the target's objdump when the binary is foreign.
set -eu
bin="${1:?usage: check-glibc.sh BINARY [MAX_GLIBC] [MAX_GLIBCXX]}"
max="${2:-2.35}"
max_cxx="${3:-3.4.30}"
[ -f "$bin" ] || { echo "check-glibc: no such file '$bin'" >&2; exit 2; }

machine=$(LC_ALL=C readelf -h "$bin" | sed -n 's/^ *Machine: *//p')
case "$machine" in
  AArch64) objdump="${OBJDUMP:-aarch64-linux-gnu-objdump}" ;;
  ARM) objdump="${OBJDUMP:-arm-linux-gnueabihf-objdump}" ;;
  *) objdump="${OBJDUMP:-objdump}" ;;
esac
command -v "$objdump" >/dev/null || objdump=objdump

# Undefined (*UND*) entries only: what the binary needs, not what it defines.
syms=$("$objdump" -T "$bin" | grep '\*UND\*' || true)
# "newer(a, b)": true when version a sorts after b.
newer() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n1)" = "$1" ]; }

status=0
highest=$(printf '%s\n' "$syms" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
for v in $(printf '%s\n' "$syms" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV); do
  if newer "$v" "$max"; then
    echo "check-glibc: '$bin' needs GLIBC_$v (allowed: up to $max):" >&2
    printf '%s\n' "$syms" | grep "GLIBC_$v " >&2 || true
    status=1
  fi
done
highest_cxx=$(printf '%s\n' "$syms" | grep -o 'GLIBCXX_[0-9][0-9.]*' | sed 's/GLIBCXX_//' | sort -uV | tail -n1)
for v in $(printf '%s\n' "$syms" | grep -o 'GLIBCXX_[0-9][0-9.]*' | sed 's/GLIBCXX_//' | sort -uV); do
  if newer "$v" "$max_cxx"; then
    echo "check-glibc: '$bin' needs GLIBCXX_$v (allowed: up to $max_cxx):" >&2
    printf '%s\n' "$syms" | grep "GLIBCXX_$v " >&2 || true
    status=1
  fi
done
if [ "$status" -eq 0 ]; then
  echo "check-glibc: ok: '$bin' ($machine) needs at most GLIBC_${highest:-none} (<= $max), GLIBCXX_${highest_cxx:-none} (<= $max_cxx)"
fi
exit "$status"
