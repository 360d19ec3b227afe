#!/bin/sh
# cross pre-build hook (Cross.toml): runs as root inside the cross image, once, when
# cross builds its derived image. Invoked as `./pre-build.sh $CROSS_TARGET`.
#  - libclang + clang: bindgen (llama-cpp-sys-2) generates the llama.h bindings;
#  - cmake >= 3.14: llama.cpp's build (Ubuntu 20.04 has 3.16; older images get pip's);
#  - the -mcpu compiler wrappers (see cross/mcpu-cc in the repository: this is the
#    same script; the image has no access to the checkout at build time).
set -eu
target="${1:-aarch64-unknown-linux-gnu}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install --assume-yes --no-install-recommends libclang-dev clang cmake python3-pip
if ! cmake --version | awk 'NR==1 { split($3, v, "."); exit !(v[1] > 3 || (v[1] == 3 && v[2] >= 14)) }'; then
  python3 -m pip install 'cmake>=3.14,<4'
fi
case "$target" in
  aarch64-*) cc=aarch64-linux-gnu-gcc cxx=aarch64-linux-gnu-g++ ;;
  armv7-*) cc=arm-linux-gnueabihf-gcc cxx=arm-linux-gnueabihf-g++ ;;
  *) exit 0 ;;
esac
cat > /usr/local/bin/mcpu-cc <<WRAP
#!/bin/sh
case "\$(basename "\$0")" in
  *++*) real="\${EDGEWATT_REAL_CXX:-$cxx}" ;;
  *)    real="\${EDGEWATT_REAL_CC:-$cc}" ;;
esac
for arg do
  shift
  case "\$arg" in
    -march=*) ;;
    *) set -- "\$@" "\$arg" ;;
  esac
done
exec "\$real" "\$@" -mcpu="\${EDGEWATT_MCPU:-cortex-a76}" \${EDGEWATT_EXTRA_CFLAGS}
WRAP
chmod 0755 /usr/local/bin/mcpu-cc
ln -sf mcpu-cc /usr/local/bin/mcpu-c++
