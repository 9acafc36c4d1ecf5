#!/usr/bin/env bash
# Try a cross-built wheel under qemu-user with a real Python of the target: Debian's own python3.X
# for arm64/armhf and the libraries it needs, unpacked (not installed) into a cached root, plus numpy
# and ncnn wheels for the target from PyPI. Imports edgesdk, checks the native preprocessing against
# the numpy reference, and with a bundle and a frame (.npy, HxWx3 uint8 BGR) runs edgesdk.load on it.
#
#   tools/cross/test-wheel.sh WHEEL [BUNDLE FRAME.npy]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -eq 1 ] || [ $# -eq 3 ] || die "usage: test-wheel.sh WHEEL [BUNDLE FRAME.npy]"
WHEEL="$(realpath "$1")"
case "$(basename "$WHEEL")" in
  *linux_aarch64.whl) cross_target aarch64; PLATS=(manylinux2014_aarch64 manylinux_2_28_aarch64) ;;
  *linux_armv7l.whl) cross_target armv7; PLATS=(manylinux2014_armv7l manylinux_2_28_armv7l linux_armv7l) ;;
  *) die "$WHEEL: not an aarch64 or armv7l wheel" ;;
esac
PYTAG="$(basename "$WHEEL" | cut -d- -f3)"   # cp311
PYVER="${PYTAG:2:1}.${PYTAG:3}"
command -v "$QEMU" >/dev/null || ensure_packages qemu-user

# Debian's interpreter and the shared libraries it, numpy and edgesdk's module load.
CACHE="${EDGESDK_CACHE:-$HOME/.cache/edgesdk}"
PYROOT="$CACHE/sysroot/python$PYVER-$DEBARCH-run"
if [ ! -f "$PYROOT/.complete" ]; then
  dpkg --print-foreign-architectures | grep -qx "$DEBARCH" \
    || die "Debian has no $DEBARCH package lists here; run: sudo dpkg --add-architecture $DEBARCH && sudo apt-get update"
  DL="$(mktemp -d)"
  trap 'rm -rf "$DL"' EXIT
  (cd "$DL" && apt-get download -qq "python$PYVER-minimal:$DEBARCH" "libpython$PYVER-minimal:$DEBARCH" \
     "libpython$PYVER-stdlib:$DEBARCH" "libc6:$DEBARCH" "zlib1g:$DEBARCH" "libexpat1:$DEBARCH" "libffi8:$DEBARCH" \
     "libstdc++6:$DEBARCH" "libgcc-s1:$DEBARCH" "libgomp1:$DEBARCH" 2>/dev/null) \
    || die "cannot download Debian's python$PYVER for $DEBARCH"
  rm -rf "$PYROOT" && mkdir -p "$PYROOT"
  for deb in "$DL"/*.deb; do dpkg -x "$deb" "$PYROOT"; done
  touch "$PYROOT/.complete"
fi

# numpy and ncnn for the target through pip's own platform selection; then the wheel under test.
SITE="$(mktemp -d)"
trap 'rm -rf "$SITE" ${DL:+"$DL"}' EXIT
PLATFLAGS=()
for p in "${PLATS[@]}"; do PLATFLAGS+=(--platform "$p"); done
python3 -m pip download -q --only-binary=:all: "${PLATFLAGS[@]}" --python-version "$PYVER" --implementation cp \
  --no-deps -d "$CACHE/wheels-$ARCH-cp${PYVER/./}" numpy ncnn
for w in "$CACHE/wheels-$ARCH-cp${PYVER/./}"/*.whl "$WHEEL"; do python3 -m zipfile -e "$w" "$SITE"; done

cat >"$SITE/check_wheel.py" <<'PY'
import sys
import numpy as np
import edgesdk
from edgesdk import _native
from edgesdk.device.preprocess import preprocess, preprocess_reference

info = _native.build_info()
print("python", sys.version.split()[0], "arch", info["arch"], "kernels", info["kernels"], "engines", info["engines"])
spec = edgesdk.PreprocessSpec(size=(224, 224), resize="letterbox", pad=114, color="rgb", mean=(127,) * 3, std=(128,) * 3)
frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
print("preprocess max_abs vs numpy reference", float(np.abs(preprocess(frame, spec) - preprocess_reference(frame, spec)).max()))
if len(sys.argv) == 3:
    with edgesdk.load(sys.argv[1], threads=2) as model:
        top = model(np.load(sys.argv[2]))["topk"][0]
        print("top1", top["index"], top["label"], round(top["score"], 4))
PY
t0=$(date +%s)
PYTHONPATH="$SITE" PYTHONNOUSERSITE=1 "$QEMU" -L "$PYROOT" "$PYROOT/usr/bin/python$PYVER" "$SITE/check_wheel.py" "${@:2}"
echo "wheel under $QEMU: $(elapsed "$t0")" >&2
