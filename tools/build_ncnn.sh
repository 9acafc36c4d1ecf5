#!/usr/bin/env bash
# Build the ncnn C++ library from the ncnn sdist on PyPI into a cache prefix, once per
# version x arch x options. Prints the install prefix (use -Dncnn_DIR=<prefix>/lib/cmake/ncnn).
#
#   tools/build_ncnn.sh                                   # host build
#   tools/build_ncnn.sh --arch aarch64 --toolchain tools/cross/aarch64-linux-gnu.cmake
#
# The sdist is found through PyPI's simple index and checked against the sha256 the index gives;
# no package metadata is built (the sdist's setup.py stamps today's date into its version).
set -euo pipefail

NCNN_VERSION="${NCNN_VERSION:-1.0.20261020}"
ARCH="$(uname -m)"
TOOLCHAIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH="$2"; shift 2 ;;
    --toolchain) TOOLCHAIN="$(realpath "$2")"; shift 2 ;;
    --version) NCNN_VERSION="$2"; shift 2 ;;
    *) echo "build_ncnn.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# Static, position-independent (it is linked into the Python extension), no Vulkan/tools/examples.
# x86: ncnn's SSE2 baseline plus the AVX/FMA/F16C/AVX2 and AVX-512 (+VNNI) kernels, picked at run
# time by CPUID, so they add build time but no hardware requirement. Without the AVX-512 kernels
# ncnn ran EfficientNet-Lite0 1.2-1.3x slower than the PyPI ncnn wheel on an AVX-512 CPU; VNNI
# is what makes its int8 kernels worth using on x86.
OPTS=(
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_POSITION_INDEPENDENT_CODE=ON
  -DNCNN_SHARED_LIB=OFF -DNCNN_VULKAN=OFF -DNCNN_BUILD_TOOLS=OFF -DNCNN_BUILD_EXAMPLES=OFF
  -DNCNN_BUILD_BENCHMARK=OFF -DNCNN_BUILD_TESTS=OFF -DNCNN_PYTHON=OFF -DNCNN_OPENMP=ON
  -DNCNN_INT8=ON -DNCNN_BF16=ON
)
case "$ARCH" in
  x86_64) OPTS+=(-DNCNN_AVX512=ON -DNCNN_AVX512VNNI=ON -DNCNN_AVX512BF16=OFF -DNCNN_AVX512FP16=OFF
                 -DNCNN_AVXVNNI=ON -DNCNN_AVXVNNIINT8=OFF -DNCNN_AVXVNNIINT16=OFF -DNCNN_AVXNECONVERT=OFF
                 -DNCNN_XOP=OFF -DNCNN_AVX=ON -DNCNN_FMA=ON -DNCNN_F16C=ON -DNCNN_AVX2=ON) ;;
  aarch64) OPTS+=(-DNCNN_ARM82=ON -DNCNN_ARM82DOT=ON -DNCNN_ARM82FP16FML=OFF -DNCNN_ARM84BF16=OFF
                  -DNCNN_ARM84I8MM=OFF -DNCNN_ARM86SVE=OFF) ;;
  armv7*) ARCH=armv7; OPTS+=(-DNCNN_VFPV4=ON) ;;
esac
[ -n "$TOOLCHAIN" ] && OPTS+=(-DCMAKE_TOOLCHAIN_FILE="$TOOLCHAIN")

# A cross build's key also covers the toolchain file's contents: its flags (armv7's -mfpu) shape the build.
KEY_INPUT=("${OPTS[@]}" "$(basename "${TOOLCHAIN:-native}")")
[ -n "$TOOLCHAIN" ] && KEY_INPUT+=("$(sha256sum <"$TOOLCHAIN")")
KEY="$(printf '%s\n' "${KEY_INPUT[@]}" | sha256sum | cut -c1-12)"
CACHE="${EDGESDK_CACHE:-$HOME/.cache/edgesdk}"
PREFIX="$CACHE/ncnn/$NCNN_VERSION-$ARCH-$KEY"
if [ -f "$PREFIX/.complete" ]; then
  echo "$PREFIX"
  exit 0
fi

WORK="$(mktemp -d "$CACHE/ncnn-build.XXXXXX" 2>/dev/null || { mkdir -p "$CACHE"; mktemp -d "$CACHE/ncnn-build.XXXXXX"; })"
trap 'rm -rf "$WORK"' EXIT
SRC_TGZ="$CACHE/ncnn/src/ncnn-$NCNN_VERSION.tar.gz"
if [ ! -f "$SRC_TGZ" ]; then
  mkdir -p "$(dirname "$SRC_TGZ")"
  python3 - "$NCNN_VERSION" "$WORK/sdist.tar.gz" <<'PY'
import hashlib, re, sys, urllib.request
version, dest = sys.argv[1], sys.argv[2]
index = urllib.request.urlopen("https://pypi.org/simple/ncnn/", timeout=120).read().decode()
m = re.search(r'href="([^"]*/ncnn-%s\.tar\.gz)#sha256=([0-9a-f]{64})"' % re.escape(version), index)
if not m:
    sys.exit(f"build_ncnn.sh: no sdist of ncnn {version} in PyPI's index")
data = urllib.request.urlopen(m.group(1), timeout=600).read()
if hashlib.sha256(data).hexdigest() != m.group(2):
    sys.exit("build_ncnn.sh: sha256 of the downloaded sdist does not match the index")
open(dest, "wb").write(data)
PY
  mv "$WORK/sdist.tar.gz" "$SRC_TGZ"
fi
tar -xzf "$SRC_TGZ" -C "$WORK"
SRC="$(find "$WORK" -mindepth 1 -maxdepth 1 -type d -name 'ncnn-*' | head -1)"
# The sdist's top CMakeLists builds the python module by default; our options turn it off.
cmake -S "$SRC" -B "$WORK/build" -G Ninja "${OPTS[@]}" -DCMAKE_INSTALL_PREFIX="$WORK/install" >"$WORK/configure.log" 2>&1 \
  || { tail -30 "$WORK/configure.log" >&2; exit 1; }
cmake --build "$WORK/build" -j"$(nproc)" >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; exit 1; }
cmake --install "$WORK/build" >/dev/null
rm -rf "$PREFIX"
mkdir -p "$(dirname "$PREFIX")"
mv "$WORK/install" "$PREFIX"
touch "$PREFIX/.complete"
echo "$PREFIX"
