#!/usr/bin/env bash
# Create the RKNN converter's environment (rknn-toolkit2 and its pinned numpy/onnx/protobuf, apart from
# the project's own, see tools/lock-rknn.txt) and print its python. edgesdk's `rknn` backend runs its
# worker there over a subprocess and never imports rknn itself.
#
#   tools/rknn_env.sh            # or: make rknn-env
#
# Lands in $EDGESDK_CACHE/rknn/<lock hash> (default ~/.cache/edgesdk) with a `.complete` marker written
# last, so an interrupted build is redone, and a lock change builds a new one beside it; `current`
# points at the newest, which is where edgesdk looks (EDGESDK_RKNN_PYTHON overrides). ~1.5 GB; about
# 35 s from PyPI's cache, seconds when it is already there. Needs python 3.11 (the toolkit's wheel is
# cp311 x86_64): PYTHON=python3.11 picks it.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=tools/lock-rknn.txt
py="${PYTHON:-python3}"
source tools/tool_env.sh

if ! tool_env_paths rknn "$lock"; then
  ver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$ver" != 3.11 ] || [ "$(uname -m)" != x86_64 ]; then
    echo "rknn_env.sh: rknn-toolkit2 2.5.0 ships for python 3.11 on x86_64; $py is $ver on $(uname -m)" \
         "(set PYTHON=python3.11)" >&2
    exit 2
  fi
  # The toolkit imports torch, onnx and onnxruntime at import time: this is the check that the set works.
  tool_env_finish() { "$env/bin/python" -c 'from rknn.api import RKNN' >/dev/null; }
  tool_env_build "$py"
fi
ln -sfn "$key" "$root/current"
echo "$env/bin/python"
