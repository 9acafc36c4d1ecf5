#!/usr/bin/env bash
# Cross-build a wheel of edgesdk for a board: the Python package with its native module (preprocessing
# kernels + the ncnn engine, ncnn linked in statically) compiled for the target, for this machine's
# Python minor version, against the target's Python headers from Debian's multiarch package
# libpython3.X-dev:<arm64|armhf> (downloaded and unpacked under the cache, not installed). Prints the
# wheel's path.
#
#   tools/cross/build-wheel.sh [aarch64|armv7] [OUT_DIR]       (default aarch64, dist/)
#   PYTHON=python3.11 tools/cross/build-wheel.sh               (the Python whose version to target)
#
# On the board: pip install edgesdk-*.whl "ncnn" (the ncnn Python wheel runs bundles from edgesdk.load).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cross_target "${1:-aarch64}"
OUT="$(realpath -m "${2:-$ROOT/dist}")"
PY="${PYTHON:-python3}"
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
ensure_cross

# The target's Python headers: Debian's package for that architecture, unpacked into a cache sysroot.
CACHE="${EDGESDK_CACHE:-$HOME/.cache/edgesdk}"
SYSROOT="$CACHE/sysroot/python$PYVER-$DEBARCH"
if [ ! -f "$SYSROOT/.complete" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx "$DEBARCH"; then
    [ "$(id -u)" = 0 ] || die "Debian has no $DEBARCH package lists here; run: sudo dpkg --add-architecture $DEBARCH && sudo apt-get update"
    dpkg --add-architecture "$DEBARCH"
    apt-get update -qq >/dev/null
  fi
  DL="$(mktemp -d)"
  trap 'rm -rf "$DL"' EXIT
  (cd "$DL" && apt-get download -qq "libpython$PYVER-dev:$DEBARCH" 2>/dev/null) \
    || die "no libpython$PYVER-dev:$DEBARCH in Debian's package lists (this Debian ships another Python; set PYTHON= to it)"
  rm -rf "$SYSROOT" && mkdir -p "$SYSROOT"
  dpkg -x "$DL"/libpython"$PYVER"-dev_*.deb "$SYSROOT"
  touch "$SYSROOT/.complete"
fi
[ -f "$SYSROOT/usr/include/$TRIPLE/python$PYVER/pyconfig.h" ] || die "$SYSROOT lacks the $TRIPLE pyconfig.h"

t0=$(date +%s)
NCNN="$("$CROSS/build-ncnn.sh" "$ARCH" | tail -1)"
echo "ncnn for $ARCH: $NCNN ($(elapsed "$t0"))" >&2

# scikit-build-core takes the wheel's platform from _PYTHON_HOST_PLATFORM and the module's suffix from
# SETUPTOOLS_EXT_SUFFIX; pybind11 would ask the build machine's interpreter, so it is told the suffix.
# Debian's pyconfig.h wrapper includes <TRIPLE/pythonX.Y/pyconfig.h>, found through CPLUS_INCLUDE_PATH.
case "$ARCH" in aarch64) PLAT=linux-aarch64 ;; armv7) PLAT=linux-armv7l ;; esac
export _PYTHON_HOST_PLATFORM="$PLAT"
export SETUPTOOLS_EXT_SUFFIX=".cpython-${PYVER/./}-$TRIPLE.so"
export CPLUS_INCLUDE_PATH="$SYSROOT/usr/include${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}"
t0=$(date +%s)
mkdir -p "$OUT"
LOG="$OUT/build-wheel-$ARCH.log"
"$PY" -m pip wheel "$ROOT" --no-deps --no-build-isolation -w "$OUT" \
  -C cmake.python-hints=false \
  -C cmake.define.CMAKE_TOOLCHAIN_FILE="$TOOLCHAIN" \
  -C cmake.define.Python_INCLUDE_DIR="$SYSROOT/usr/include/python$PYVER" \
  -C cmake.define.PYTHON_MODULE_EXTENSION="$SETUPTOOLS_EXT_SUFFIX" \
  -C cmake.define.EDGESDK_WITH_NCNN=ON -C cmake.define.ncnn_DIR="$NCNN/lib/cmake/ncnn" \
  -C cmake.define.EDGESDK_WITH_OPENVINO=OFF >"$LOG" 2>&1 || { tail -40 "$LOG" >&2; exit 1; }
WHEEL="$(ls -t "$OUT"/edgesdk-*-"${PLAT//[-.]/_}".whl | head -1)"
echo "wheel for $ARCH: $WHEEL ($(elapsed "$t0"))" >&2
echo "$WHEEL"
