#!/usr/bin/env bash
# Run a cross build's C++ tests under qemu-user, then (given a bundle) edgesdk-run on it: the bundle's
# golden samples against their reference outputs, and each IMAGE.
#
#   tools/cross/test-qemu.sh aarch64|armv7 [BUNDLE [IMAGE...]]
# Builds first (tools/cross/build-runtime.sh, cached) unless EDGESDK_CROSS_BUILD names a build dir.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -ge 1 ] || die "usage: test-qemu.sh aarch64|armv7 [BUNDLE [IMAGE...]]"
cross_target "$1"
shift
BUILD="${EDGESDK_CROSS_BUILD:-}"
[ -n "$BUILD" ] || BUILD="$("$CROSS/build-runtime.sh" "$ARCH" | tail -1)"
command -v "$QEMU" >/dev/null || ensure_packages qemu-user

t0=$(date +%s)
ctest --test-dir "$BUILD" --output-on-failure
echo "ctest under $QEMU: $(elapsed "$t0")" >&2

if [ $# -ge 1 ]; then
  BUNDLE="$1"
  shift
  t0=$(date +%s)
  run_qemu "$BUILD/install/bin/edgesdk-run" "$BUNDLE" --check
  for image in "$@"; do
    run_qemu "$BUILD/install/bin/edgesdk-run" "$BUNDLE" "$image" --repeat 3
  done
  echo "edgesdk-run under $QEMU: $(elapsed "$t0")" >&2
fi
