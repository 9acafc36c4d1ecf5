#!/usr/bin/env bash
# The board builds as CI runs them, each step with its wall time: ncnn and the native runtime for
# aarch64 and armv7 (cached ncnn in ~/.cache/edgesdk/ncnn: cache that directory between CI runs, keyed
# on tools/build_ncnn.sh and tools/cross/*.cmake), then tests/test_cross.py: the C++ tests under
# qemu-aarch64 and qemu-arm, edgesdk-run on a real EfficientNet-Lite0 bundle against the x86 run, and
# the aarch64 wheel under qemu. Needs the package installed for development (make setup).
#
# Measured on a 2-core x86 machine shared with other builds (load average ~8): ncnn 10.0 min (aarch64)
# and 9.5 min (armv7) from a cold cache, runtime 1.5 + 0.5 min, tests 3 min: about 25 min cold,
# about 5 min with the ncnn cache.
#
#   tools/cross/ci.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
T0=$(date +%s)
for arch in aarch64 armv7; do
  t=$(date +%s)
  "$CROSS/build-ncnn.sh" "$arch" >/dev/null
  echo "ci: ncnn for $arch: $(elapsed "$t")"
  t=$(date +%s)
  "$CROSS/build-runtime.sh" "$arch" >/dev/null
  echo "ci: runtime for $arch: $(elapsed "$t")"
done
t=$(date +%s)
cd "$ROOT"
"${PYTHON:-python3}" -m pytest -q -p no:cacheprovider tests/test_cross.py
echo "ci: tests under qemu: $(elapsed "$t")"
echo "ci: total $(elapsed "$T0")"
