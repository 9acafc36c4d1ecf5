#!/usr/bin/env bash
# Build (once, cached under ~/.cache/edgesdk/ncnn) the static ncnn library for a board and print its
# install prefix. First build about 4-10 min on 2 cores; later calls return at once.
#
#   tools/cross/build-ncnn.sh aarch64|armv7
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -eq 1 ] || die "usage: build-ncnn.sh aarch64|armv7"
cross_target "$1"
ensure_cross
exec "$ROOT/tools/build_ncnn.sh" --arch "$ARCH" --toolchain "$TOOLCHAIN"
