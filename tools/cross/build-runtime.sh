#!/usr/bin/env bash
# Cross-build the native runtime for a board: the C++ library (edgesdk_core + the ncnn engine, static),
# edgesdk-run, and the C++ tests, into build/cross-<arch>; installed under build/cross-<arch>/install
# (bin/edgesdk-run, lib/, include/edgesdk/). Prints the build directory.
#
#   tools/cross/build-runtime.sh aarch64|armv7 [BUILD_DIR]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: build-runtime.sh aarch64|armv7 [BUILD_DIR]"
cross_target "$1"
BUILD="$(realpath -m "${2:-$ROOT/build/cross-$ARCH}")"
ensure_cross

t0=$(date +%s)
NCNN="$("$CROSS/build-ncnn.sh" "$ARCH" | tail -1)"
echo "ncnn for $ARCH: $NCNN ($(elapsed "$t0"))" >&2

t0=$(date +%s)
# OpenVINO stays off: the build machine's openvino package is x86. ctest runs the tests under qemu
# through the toolchain's CMAKE_CROSSCOMPILING_EMULATOR.
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$TOOLCHAIN" -DCMAKE_BUILD_TYPE=Release \
  -DEDGESDK_PYTHON=OFF -DEDGESDK_TESTS=ON -DEDGESDK_RUN=ON -DEDGESDK_WITH_NCNN=ON -DEDGESDK_WITH_OPENVINO=OFF \
  -Dncnn_DIR="$NCNN/lib/cmake/ncnn" -DCMAKE_INSTALL_PREFIX="$BUILD/install" >"$BUILD.configure.log" 2>&1 \
  || { tail -30 "$BUILD.configure.log" >&2; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" >"$BUILD.build.log" 2>&1 || { grep -E "error|Error" -A3 "$BUILD.build.log" | head -40 >&2; exit 1; }
cmake --install "$BUILD" --strip >/dev/null
echo "runtime for $ARCH: $BUILD ($(elapsed "$t0"))" >&2
echo "$BUILD"
